"""The canonical cohort: persons and events as polars DataFrames, plus a provenance manifest.

Every generator produces a :class:`Cohort`; every check and exporter consumes one. The schema
and the temporal rules (:mod:`trajectories.cohort.schema`) are checked whenever a cohort is
built, read or written.
"""

from __future__ import annotations

import hashlib
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from trajectories.cohort.files import (
    EVENTS_DIR,
    EVENTS_FILE,
    PARQUET_OPTIONS,
    PERSONS_DIR,
    PERSONS_FILE,
    Manifest,
    cohort_files,
    is_partitioned,
    part_files,
    partitioned_manifest,
    prepare_output_directory,
    write_manifest,
)
from trajectories.cohort.schema import (
    PERSON_COLUMNS,
    STATE_PREFIX,
    check_columns,
    grouped_by_person,
    next_of_person,
    same_person_as_previous,
    validate_tables,
)
from trajectories.errors import CohortSchemaError


def _frame_digest(frame: pl.DataFrame, digest: Any) -> None:
    """Feed a canonical byte form of ``frame`` to ``digest``: equal contents, equal bytes,
    however the data are chunked or laid out in memory."""
    for name in frame.columns:
        column = frame.get_column(name)
        digest.update(f"{name}:{column.dtype}:{column.len()}".encode())
        digest.update(column.is_null().to_numpy().tobytes())
        if column.dtype == pl.String:
            filled = column.fill_null("")
            digest.update(filled.str.len_bytes().to_numpy().tobytes())
            array = filled.to_arrow().cast("large_string")
            array = array.combine_chunks() if hasattr(array, "combine_chunks") else array
            offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)
            begin, stop = offsets[array.offset], offsets[array.offset + len(array)]
            digest.update(memoryview(array.buffers()[2])[begin:stop])
        else:
            physical = column.to_physical().fill_null(0)
            digest.update(np.ascontiguousarray(physical.to_numpy()).tobytes())


@dataclass(frozen=True)
class Cohort:
    """Persons, their events and the manifest; validated on construction.

    ``persons`` has one row per person (see ``PERSON_COLUMNS``, plus scenario covariates);
    ``events`` has one row per event (``EVENT_COLUMNS``), sorted by time within each person.
    ``check=False`` keeps only the column checks, so that validation can report every broken
    rule of a faulty cohort instead of stopping at the first.
    """

    persons: pl.DataFrame
    events: pl.DataFrame
    manifest: Manifest = field(repr=False)
    check: InitVar[bool] = True

    def __post_init__(self, check: bool) -> None:
        if check:
            validate_tables(self.persons, self.events)
        else:
            check_columns(self.persons, self.events)

    # -- reading and writing -------------------------------------------------------------------

    @classmethod
    def read(cls, directory: str | Path, check: bool = True) -> Cohort:
        """Load a cohort directory written by :meth:`write` or the CLI; a partitioned one
        (``persons/`` and ``events/`` part files of a sharded run) is collected whole."""
        directory = Path(directory)
        if is_partitioned(directory):
            return collect_partitioned(directory, partitioned_manifest(directory), check=check)
        persons_path, events_path, manifest = cohort_files(directory)
        try:
            persons, events = pl.read_parquet(persons_path), pl.read_parquet(events_path)
        except (OSError, pl.exceptions.ComputeError) as error:
            raise CohortSchemaError(f"{directory}: unreadable Parquet: {error}") from None
        try:
            return cls(persons, events, manifest, check=check)
        except CohortSchemaError as error:
            raise CohortSchemaError(f"{directory}: {error}") from None

    def write(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the three files; a non-empty ``directory`` is refused unless ``overwrite``.

        The tables are checked first, so a cohort built with ``check=False`` is never saved
        broken.
        """
        validate_tables(self.persons, self.events)
        directory = prepare_output_directory(directory, overwrite)
        pq.write_table(self.persons.to_arrow(), directory / PERSONS_FILE, **PARQUET_OPTIONS)
        pq.write_table(self.events.to_arrow(), directory / EVENTS_FILE, **PARQUET_OPTIONS)
        write_manifest(self.manifest, directory)
        return directory

    # -- views ---------------------------------------------------------------------------------

    @property
    def n_persons(self) -> int:
        return self.persons.height

    @property
    def covariates(self) -> list[str]:
        """Person columns beyond the fixed data model (age, arm, markers...)."""
        return [c for c in self.persons.columns if c not in PERSON_COLUMNS]

    def state_spells(self, collapse_instants: bool = False) -> pl.DataFrame:
        """One row per state occupied: person_id, state, start, stop, next_state, first, exit.

        ``stop`` is the time of the next state, or ``followup_end`` for the last one;
        ``next_state`` is null when the spell ended by censoring or is absorbing; ``first``
        marks the person's first spell; ``exit`` repeats how the person's follow-up ended.
        With ``collapse_instants`` several state events at one instant count as one, the last
        of them (a path A -> B -> C at one time t becomes one move A -> C at t).
        """
        states = grouped_by_person(
            self.events.filter(pl.col("code").str.starts_with(STATE_PREFIX)).select(
                "person_id",
                pl.col("code").str.strip_prefix(STATE_PREFIX).alias("state"),
                pl.col("time").alias("start"),
            )
        )
        if collapse_instants:
            states = states.filter((next_of_person("start") != pl.col("start")).fill_null(True))
        return states.join(
            self.persons.select("person_id", "followup_end", "exit"),
            on="person_id",
            how="left",
            maintain_order="left",
        ).select(
            "person_id",
            "state",
            "start",
            pl.coalesce(next_of_person("start"), "followup_end").alias("stop"),
            next_of_person("state").alias("next_state"),
            (~same_person_as_previous()).alias("first"),
            "exit",
        )

    def fingerprint(self) -> str:
        """SHA-256 of the persons and events contents (for provenance of reference data)."""
        digest = hashlib.sha256()
        _frame_digest(self.persons, digest)
        _frame_digest(self.events, digest)
        return digest.hexdigest()


def collect_partitioned(directory: Path, manifest: Manifest, check: bool = True) -> Cohort:
    """A partitioned cohort's part files as one Cohort in memory; the manifest keeps the run's
    provenance but not the block listing, which no longer applies."""
    collected = Manifest.model_validate({
        k: v for k, v in manifest.model_dump().items()
        if k not in ("layout", "blocks", "n_blocks")
    })
    persons = pl.scan_parquet(part_files(directory, manifest, PERSONS_DIR)).collect()
    events = pl.scan_parquet(part_files(directory, manifest, EVENTS_DIR)).collect()
    try:
        return Cohort(persons, events, collected, check=check)
    except CohortSchemaError as error:
        raise CohortSchemaError(f"{directory}: {error}") from None
