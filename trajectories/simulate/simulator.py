"""MarkovSimulator: scenario in, Cohort out, block by block."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from trajectories import progress
from trajectories.cohort import (
    EVENTS_FILE,
    PARQUET_OPTIONS,
    PERSON_COLUMNS,
    PERSONS_FILE,
    Cohort,
    Manifest,
    prepare_output_directory,
    validate_tables,
    write_manifest,
)
from trajectories.errors import TrajectoriesError
from trajectories.scenario import Scenario, load_scenario
from trajectories.scenario.schema import CategoricalCovariate
from trajectories.simulate.blocks import (
    DEFAULT_BLOCK_SIZE,
    block_bounds,
    block_count,
    block_rng,
)
from trajectories.simulate.engine import run_paths
from trajectories.simulate.plan import Plan
from trajectories.simulate.population import Population, draw_population
from trajectories.simulate.processes import (
    CodeTable,
    EventArrays,
    Spells,
    drug_events,
    measurement_events,
    state_events,
    visit_events,
)

EXIT_NAMES = np.array(["death", "absorbed", "administrative_censoring", "lost_to_follow_up",
                       "censored"])


class MarkovSimulator:
    """Simulate a cohort from a scenario with the vectorised (semi-)Markov engine.

    ``block_size`` fixes how persons are grouped into independently seeded blocks; it is part
    of what defines the output (with scenario, n and seed), so keep the default unless every
    run you compare uses the same value. ``provenance``: manifest keys of every cohort made
    (a fitted model's ``reference_fingerprint``, ``n_reference`` and ``reference_split``).
    """

    generator_name = "MarkovSimulator"

    def __init__(self, scenario: Scenario | str | Path, block_size: int = DEFAULT_BLOCK_SIZE,
                 provenance: dict[str, Any] | None = None):
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if block_size < 1:
            raise TrajectoriesError(f"block_size must be a positive integer, got {block_size}")
        self.block_size = block_size
        self.provenance = dict(provenance or {})
        self.plan = Plan.compile(self.scenario)

    # -- public API ----------------------------------------------------------------------------

    def simulate(self, n: int | None = None, seed: int = 0) -> Cohort:
        """Simulate ``n`` persons (default: the sum of site sizes) into an in-memory Cohort."""
        n = self.resolve_n(n, seed)
        persons, events = [], []
        for _, block_persons, block_events in self.iter_blocks(n, seed):
            persons.append(block_persons)
            events.append(block_events)
        return Cohort(
            pl.concat(persons, how="vertical"),
            pl.concat(events, how="vertical"),
            self.manifest_for(n, seed),
        )

    def simulate_to(
        self, directory: str | Path, n: int | None = None, seed: int = 0, overwrite: bool = False
    ) -> Path:
        """Simulate straight to a cohort directory, one block in memory at a time."""
        n = self.resolve_n(n, seed)
        directory = prepare_output_directory(directory, overwrite)
        persons_writer = events_writer = None
        n_events = 0
        try:
            for _, block_persons, block_events in self.iter_blocks(n, seed):
                validate_tables(block_persons, block_events)
                p_table, e_table = block_persons.to_arrow(), block_events.to_arrow()
                if persons_writer is None:
                    persons_writer = pq.ParquetWriter(
                        directory / PERSONS_FILE, p_table.schema, **PARQUET_OPTIONS
                    )
                    events_writer = pq.ParquetWriter(
                        directory / EVENTS_FILE, e_table.schema, **PARQUET_OPTIONS
                    )
                persons_writer.write_table(p_table)
                events_writer.write_table(e_table)
                n_events += e_table.num_rows
        finally:
            for writer in (persons_writer, events_writer):
                if writer is not None:
                    writer.close()
        write_manifest(self.manifest_for(n, seed, n_events=n_events), directory)
        return directory

    def iter_blocks(
        self, n: int, seed: int, blocks: Iterable[int] | None = None
    ) -> Iterator[tuple[int, pl.DataFrame, pl.DataFrame]]:
        """Yield (block, persons, events) for ``blocks`` (default: all, in order)."""
        n = self.resolve_n(n, seed)
        total = block_count(n, self.block_size)
        chosen = range(total) if blocks is None else list(blocks)
        for block in progress.track(chosen, total=len(chosen), description="simulating blocks"):
            yield (block, *self.simulate_block(block, n, seed))

    def simulate_block(self, block: int, n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Persons and events of one block, from that block's own random stream."""
        start, stop = block_bounds(block, n, self.block_size)
        rng = block_rng(seed, block)
        population = draw_population(self.plan, start, stop, rng)
        paths = run_paths(
            self.plan, population.initial_state, population.censor_time,
            population.multipliers, rng,
        )
        spells = Spells.from_paths(paths, population.initial_state)
        codes = CodeTable()
        kinds = [[state_events(self.plan, spells, codes)]]
        visits, visit_spell = visit_events(self.plan, spells, paths.end_time, codes, rng)
        kinds.append(visits)
        kinds.append(measurement_events(self.plan, spells, visit_spell, population.size,
                                        codes, rng))
        kinds.append(drug_events(self.plan, spells, population, paths.end_time, codes, rng))
        persons = self._persons_frame(population, paths, start)
        events = self._events_frame(kinds, codes, start)
        return persons, events

    # -- assembly ------------------------------------------------------------------------------

    def _persons_frame(self, population: Population, paths, start: int) -> pl.DataFrame:
        plan, scenario = self.plan, self.scenario
        absorbed = plan.absorbing[paths.final_state]
        exit_index = np.where(
            absorbed,
            np.where(plan.death[paths.final_state], 0, 1),
            np.where(population.lost, 3, np.where(population.reason_unknown, 4, 2)),
        )
        m = population.size
        columns: dict[str, pl.Series] = {
            "person_id": pl.Series(np.arange(start + 1, start + m + 1, dtype=np.int64)),
            "site": pl.Series(plan.site_names, dtype=pl.String).gather(population.site),
            "index_date": pl.Series(population.index_day.astype("datetime64[D]")),
            "birth_date": pl.Series(population.birth_day.astype("datetime64[D]")),
            "sex": _levels(scenario.covariates["sex"], population.categorical["sex"]),
            "followup_end": pl.Series(paths.end_time, dtype=pl.Float64),
            "exit": pl.Series(EXIT_NAMES.tolist(), dtype=pl.String).gather(exit_index),
        }
        for name, spec in scenario.covariates.items():
            if name == "sex":
                continue
            if isinstance(spec, CategoricalCovariate):
                columns[name] = _levels(spec, population.categorical[name])
            else:
                columns[name] = pl.Series(population.numeric[name], dtype=pl.Float64)
        frame = pl.DataFrame(columns)
        return frame.with_columns(pl.col(c).cast(t) for c, t in PERSON_COLUMNS.items())

    @staticmethod
    def _events_frame(kinds: list[list[EventArrays]], codes: CodeTable, start: int):
        parts = [part for kind in kinds for part in kind]
        rank = [np.full(p.person.size, r, dtype=np.int8) for r, kind in enumerate(kinds)
                for p in kind]

        def column(field: str) -> np.ndarray:
            return np.concatenate([getattr(p, field) for p in parts])

        # Ties (same person and time) keep kind order (state, visit, measurement, drug), then
        # generation order: the sort is stable.
        return pl.DataFrame({
            "person_id": pl.Series(column("person") + start + 1, dtype=pl.Int64),
            "time": pl.Series(column("time"), dtype=pl.Float64),
            "end_time": pl.Series(column("end_time"), dtype=pl.Float64, nan_to_null=True),
            "code": pl.Series(codes.codes, dtype=pl.String).gather(column("code")),
            "value": pl.Series(column("value"), dtype=pl.Float64, nan_to_null=True),
            "rank": pl.Series(np.concatenate(rank)),
        }).sort("person_id", "time", "rank", maintain_order=True).drop("rank")

    # -- helpers -------------------------------------------------------------------------------

    def resolve_n(self, n: int | None, seed: int) -> int:
        """The number of persons to simulate (checked), and a check of the seed."""
        sizes = [s.size for s in self.scenario.sites]
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise TrajectoriesError(f"seed must be a non-negative integer, got {seed!r}")
        if sizes[0] is not None:
            total = sum(sizes)
            if n is not None and n != total:
                raise TrajectoriesError(
                    f"scenario {self.scenario.name!r} fixes site sizes summing to {total}; "
                    f"n={n} does not match (omit n, or give sites shares instead)"
                )
            return total
        if n is None:
            raise TrajectoriesError(
                f"scenario {self.scenario.name!r} gives site shares: say how many persons (n)"
            )
        if not isinstance(n, int | np.integer) or n < 1:
            raise TrajectoriesError(f"n must be a positive integer, got {n!r}")
        return int(n)

    def manifest_for(self, n: int, seed: int, **extra) -> Manifest:
        """The manifest of a run of ``n`` persons with ``seed`` (extra keys added as given)."""
        return Manifest.new(
            self.generator_name,
            n,
            seed=seed,
            scenario_name=self.scenario.name,
            scenario_hash=self.scenario.content_hash(),
            block_size=self.block_size,
            concepts=self.scenario.concept_map(),
            **self.provenance,
            **extra,
        )


def _levels(spec: CategoricalCovariate, index: np.ndarray) -> pl.Series:
    return pl.Series(list(spec.levels), dtype=pl.String).gather(index)
