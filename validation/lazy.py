"""Validation figures of a partitioned cohort, block by block: never the whole cohort in memory.

A block holds whole persons (a person's events never cross blocks), so each block is read alone
and reduced to additive tables: a (time, event) tally per endpoint, transition counts, sojourn
counts per (state, duration) and absorbing-state votes. Their sums over the blocks go through
the estimators of :mod:`validation.survival` and :mod:`validation.transitions`, so the figures
are those of the whole cohort in memory, to the last bit. Memory holds one block per worker
plus the tallies (one row per distinct time: about one per person when times are continuous,
far fewer when they are whole days: ``resolution`` rounds times up to a grid for that, by
default whole days above two million persons).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from trajectories.cohort import (
    STATE_PREFIX,
    Cohort,
    Manifest,
    PartitionedCohort,
    read_partitioned,
)
from trajectories.parallel import Parallel, parallel_from, run_blocks
from validation import integrity, survival, transitions
from validation.endpoints import EVENT, INDEX, Endpoint, EndpointError, endpoint_times
from validation.integrity import IntegrityResult

TALLY_SCHEMA = {"time": pl.Float64(), "event": pl.Int8(), "count": pl.Int64()}
MOVES_SCHEMA = {"from_state": pl.String(), "to_state": pl.String(), "count": pl.Int64(),
                "first_person_ids": pl.List(pl.Int64())}
SOJOURN_SCHEMA = {"state": pl.String(), "duration": pl.Float64(), "d": pl.Int64(),
                  "c": pl.Int64()}
VOTES_SCHEMA = {"state": pl.String(), "terminal": pl.Int64(), "left": pl.Int64(),
                "initial": pl.Int64()}

AUTO_RESOLUTION_PERSONS = 2_000_000
"""Above this many persons a partitioned cohort's aggregates count whole days by default
("auto" resolution): exact times would keep about a row per person in the tallies."""

SAMPLE_CAP = 200_000
"""Persons drawn from a partitioned cohort for what needs rows (Cox models, utility, state
occupation, descriptive distributions); also the cap of those descriptive comparisons."""


@dataclass(frozen=True)
class Aggregates:
    """Additive summaries of (part of) a cohort; those of disjoint parts add up (:func:`combine`).

    ``persons``: [*by, count]; ``tallies``: endpoint name -> [*by, time, event, count], the
    parts' tallies stacked (a time may repeat; the estimators add up equal times);
    ``transitions``: [*by, from_state, to_state, count, first_person_ids]; ``sojourns``:
    [*by, state, duration, d, c] for every state (absorbing ones are dropped once known);
    ``votes``: [state, terminal, left, initial] (see
    :func:`validation.transitions.absorbing_votes`).
    Optional parts: ``integrity`` (every rule of :func:`validation.integrity.check_integrity`,
    counts added up) and ``sample`` (a random subset of whole persons with all their events,
    each person kept with probability ``sample_fraction``; the cohort itself at 1).
    """

    n_persons: int
    persons: pl.DataFrame
    tallies: dict[str, pl.DataFrame]
    transitions: pl.DataFrame
    sojourns: pl.DataFrame
    votes: pl.DataFrame
    by: tuple[str, ...] = ()
    integrity: list[IntegrityResult] | None = None
    sample: Cohort | None = None
    sample_fraction: float | None = None


@dataclass(frozen=True)
class LazyFigures:
    """The validation figures of a cohort computed from its :class:`Aggregates`.

    ``kaplan_meier``: curves of the endpoints without competing events (code 1 is the event);
    ``aalen_johansen``: cumulative incidence of cause 1 for the endpoints with competing events,
    as :func:`validation.compare.compare` uses them; with ``by`` columns each curve frame stacks
    one curve per group, the group columns first. ``transitions`` and ``jump_chain`` as in
    :mod:`validation.transitions`; ``sojourns``: [state, n, completed, median] of transient
    states (median: Kaplan-Meier, censored stays counted).
    """

    n_persons: int
    kaplan_meier: dict[str, pl.DataFrame]
    aalen_johansen: dict[str, pl.DataFrame]
    transitions: pl.DataFrame
    jump_chain: pl.DataFrame
    sojourns: pl.DataFrame
    absorbing_states: set[str] = field(default_factory=set)


# -- one block ------------------------------------------------------------------------------------


def block_aggregates(
    cohort: Cohort,
    endpoints: Sequence[Endpoint],
    by: Sequence[str] = (),
    resolution: float | None = None,
    *,
    absorbing_states: Iterable[str] | None = None,
    sample_fraction: float | None = None,
    sample_seed: Sequence[int] = (0,),
) -> Aggregates:
    """The additive summaries of ``cohort`` (a block, or any set of whole persons).

    ``resolution`` (days): endpoint times and sojourn durations are rounded up to multiples of
    it before they are counted (1.0: whole days, as most real data are), which bounds the
    tallies by the number of grid points instead of the number of persons; None keeps them
    exact. ``absorbing_states``: when given, the integrity rules are checked too, with
    these absorbing states; a part that breaks one is summarised no further (its figures
    would be meaningless). ``sample_fraction``: keep each person in ``sample`` with this
    probability (seeded by ``sample_seed``; 1 keeps the cohort itself).
    """
    by = tuple(by)
    if resolution is not None and not resolution > 0:
        raise EndpointError(f"resolution must be a positive number of days, got {resolution!r}")
    missing = [c for c in by if c not in cohort.persons.columns]
    if missing:
        raise EndpointError(
            f"group column(s) {missing} are not person columns; the cohort has "
            f"{cohort.persons.columns}"
        )
    persons = cohort.persons.group_by(*by).agg(pl.len().cast(pl.Int64).alias("count")) if by \
        else pl.DataFrame({"count": [cohort.n_persons]}, schema={"count": pl.Int64})
    checked = None
    if absorbing_states is not None:
        checked = integrity.check_integrity(cohort, absorbing_states=absorbing_states)
        if integrity.failed(checked):
            return _only_counted(cohort, persons, endpoints, by, checked)
    sojourns = transitions.sojourn_times(cohort, absorbing_states=()).join(
        cohort.persons.select("person_id", *by), on="person_id", how="left")
    return Aggregates(
        n_persons=cohort.n_persons,
        persons=persons,
        tallies={endpoint.name: _tally(cohort, endpoint, by, resolution)
                 for endpoint in endpoints},
        transitions=_moves(cohort, by),
        sojourns=transitions.sojourn_counts(_rounded(sojourns, "duration", resolution),
                                            by=[*by, "state"]),
        votes=transitions.absorbing_votes(cohort),
        by=by,
        integrity=checked,
        sample=None if sample_fraction is None else _sample(cohort, sample_fraction,
                                                            sample_seed),
        sample_fraction=sample_fraction,
    )


def _only_counted(cohort, persons, endpoints, by, checked) -> Aggregates:
    """The aggregates of a part that fails integrity: persons and rule counts, no figures."""
    keyed = {c: cohort.persons.schema[c] for c in by}
    return Aggregates(
        n_persons=cohort.n_persons,
        persons=persons,
        tallies={e.name: pl.DataFrame(schema=keyed | TALLY_SCHEMA) for e in endpoints},
        transitions=pl.DataFrame(schema=keyed | MOVES_SCHEMA),
        sojourns=pl.DataFrame(schema=keyed | SOJOURN_SCHEMA),
        votes=pl.DataFrame(schema=VOTES_SCHEMA),
        by=by,
        integrity=checked,
    )


def _moves(cohort: Cohort, by: tuple[str, ...]) -> pl.DataFrame:
    """Transition counts per group, with the first persons making each move."""
    return (
        cohort.state_spells()
        .filter(pl.col("next_state").is_not_null())
        .join(cohort.persons.select("person_id", *by), on="person_id", how="left")
        .group_by(*by, pl.col("state").alias("from_state"),
                  pl.col("next_state").alias("to_state"), maintain_order=True)
        .agg(pl.len().cast(pl.Int64).alias("count"),
             pl.col("person_id").unique(maintain_order=True).head(integrity.SHOWN_IDS)
             .alias("first_person_ids"))
        .sort(*by, "from_state", "to_state")
    )


def _sample(cohort: Cohort, fraction: float, seed: Sequence[int]) -> Cohort:
    if not 0 < fraction <= 1:
        raise EndpointError(f"sample_fraction must be in (0, 1], got {fraction!r}")
    if fraction == 1:
        return cohort
    keep = np.random.default_rng(list(seed)).random(cohort.n_persons) < fraction
    persons = cohort.persons.filter(pl.Series(keep))
    events = cohort.events.join(persons.select("person_id"), on="person_id", how="semi")
    return Cohort(persons, events, cohort.manifest.model_copy(
        update={"n_persons": persons.height}), check=False)


def _rounded(frame: pl.DataFrame, column: str, resolution: float | None) -> pl.DataFrame:
    if resolution is None:
        return frame
    return frame.with_columns((pl.col(column) / resolution).ceil() * resolution)


def _tally(
    cohort: Cohort, endpoint: Endpoint, by: tuple[str, ...], resolution: float | None
) -> pl.DataFrame:
    if endpoint.origin != INDEX and not _enters(cohort, endpoint.origin):
        # Nobody in this part reaches the origin state: no one at risk here (endpoint_times
        # would refuse; the whole cohort is checked once the parts are added up).
        empty = {c: cohort.persons.schema[c] for c in by} | TALLY_SCHEMA
        return pl.DataFrame(schema=empty)
    return (
        _rounded(endpoint_times(cohort, endpoint), "time", resolution)
        .group_by(*by, "time", "event")
        .agg(pl.len().cast(pl.Int64).alias("count"))
    )


def _enters(cohort: Cohort, state: str) -> bool:
    return bool((cohort.events.get_column("code") == f"{STATE_PREFIX}{state}").any())


def combine(parts: Iterable[Aggregates]) -> Aggregates:
    """The sum of the aggregates of disjoint parts of one cohort."""
    parts = list(parts)
    if not parts:
        raise EndpointError("no blocks to combine: the cohort is empty")
    by = parts[0].by

    def summed(frames: list[pl.DataFrame], keys: list[str], values: list[str]) -> pl.DataFrame:
        return (
            pl.concat(frames, how="vertical")
            .group_by(keys)
            .agg(pl.col(v).sum() for v in values)
            .sort(keys)
        )

    moves = (
        pl.concat([p.transitions for p in parts], how="vertical")
        .group_by([*by, "from_state", "to_state"], maintain_order=True)
        .agg(pl.col("count").sum(),
             pl.col("first_person_ids").list.explode(keep_nulls=False, empty_as_null=False)
             .head(integrity.SHOWN_IDS))
        .sort(*by, "from_state", "to_state")
    )
    checked = [p.integrity for p in parts]
    samples = [p.sample for p in parts if p.sample is not None]
    return Aggregates(
        n_persons=sum(p.n_persons for p in parts),
        persons=summed([p.persons for p in parts], list(by), ["count"]) if by else
        pl.DataFrame({"count": [sum(p.n_persons for p in parts)]}, schema={"count": pl.Int64}),
        tallies={
            name: summed([p.tallies[name] for p in parts], [*by, "time", "event"], ["count"])
            for name in parts[0].tallies
        },
        transitions=moves,
        sojourns=_add_sojourns([p.sojourns for p in parts], by),
        votes=summed([p.votes for p in parts], ["state"], ["terminal", "left", "initial"]),
        by=by,
        integrity=None if any(c is None for c in checked) else integrity.combine(checked),
        sample=_stacked(samples) if samples else None,
        sample_fraction=parts[0].sample_fraction,
    )


def _stacked(samples: list[Cohort]) -> Cohort:
    if len(samples) == 1:
        return samples[0]
    persons = pl.concat([s.persons for s in samples], how="vertical")
    events = pl.concat([s.events for s in samples], how="vertical")
    return Cohort(persons, events, samples[0].manifest.model_copy(
        update={"n_persons": persons.height}), check=False)


def _add_sojourns(frames: list[pl.DataFrame], by: tuple[str, ...]) -> pl.DataFrame:
    """Sojourn counts summed per (group, state, duration): one group and state at a time,
    which spares sorting and hashing the state strings of a row per stay."""
    keys = [*by, "state"]
    stacked = pl.concat(frames, how="vertical", rechunk=False)
    per_state = [
        part.group_by("duration")
        .agg(pl.col("d").sum(), pl.col("c").sum())
        .sort("duration")
        .select(*(pl.lit(v, stacked.schema[k]).alias(k) for k, v in zip(keys, key, strict=True)),
                "duration", "d", "c")
        for key, part in sorted(stacked.partition_by(keys, as_dict=True).items(),
                                key=lambda item: tuple((v is not None, v) for v in item[0]))
    ]
    if not per_state:
        return stacked
    return pl.concat(per_state, how="vertical")


# -- a partitioned cohort -------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockTask:
    """One block's work for a worker: plain, picklable data."""

    index: int
    persons_file: str
    events_file: str
    manifest: dict[str, Any]
    endpoints: tuple[dict[str, Any], ...]
    by: tuple[str, ...]
    resolution: float | None
    absorbing_states: tuple[str, ...] | None
    sample_fraction: float | None
    seed: int


def _aggregate_block(task: _BlockTask) -> tuple[int, Aggregates]:
    persons = pl.read_parquet(task.persons_file)
    events = pl.scan_parquet(task.events_file)
    if task.absorbing_states is None and task.sample_fraction is None:
        # Every figure then comes from state events: reading only those (about 1 event in 10
        # in the built-in scenarios) keeps a block's memory and time small.
        events = events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
    manifest = Manifest.model_validate({**task.manifest, "n_persons": persons.height})
    cohort = Cohort(persons, events.collect(), manifest, check=False)
    endpoints = [Endpoint.model_validate(e) for e in task.endpoints]
    return task.index, block_aggregates(cohort, endpoints, task.by, task.resolution,
                                        absorbing_states=task.absorbing_states,
                                        sample_fraction=task.sample_fraction,
                                        sample_seed=(task.seed, task.index))


def aggregate(
    source: PartitionedCohort | str | Path,
    endpoints: Sequence[Endpoint],
    by: Sequence[str] = (),
    resolution: float | None | Literal["auto"] = "auto",
    *,
    absorbing_states: Iterable[str] | None = None,
    sample_size: int | None = None,
    seed: int = 0,
    parallel: Parallel | None = None,
    executor: str | None = None,
    workers: int | str | None = None,
    scheduler: str | None = None,
) -> Aggregates:
    """:func:`block_aggregates` of every block of a partitioned cohort, added up.

    Blocks are read one at a time per worker where ``parallel`` says
    (:class:`trajectories.parallel.Parallel`; ``executor``/``workers``/``scheduler``: the old
    separate arguments, for one release): persons and state events only, or every event
    when integrity is checked (``absorbing_states``) or a person sample is drawn (about
    ``sample_size`` persons, each kept with probability sample_size / persons, block ``b``'s
    draws seeded by ``(seed, b)``; all persons when the cohort is no larger). ``resolution``
    as in :func:`block_aggregates`, or "auto": :func:`auto_resolution`.
    """
    parallel = parallel_from(parallel, executor, workers, scheduler)
    dataset = source if isinstance(source, PartitionedCohort) else read_partitioned(source)
    resolution = auto_resolution(resolution, dataset.n_persons)
    manifest = {k: v for k, v in dataset.manifest.model_dump(mode="json").items()
                if k not in ("blocks", "layout", "n_blocks")}
    specs = tuple(e.model_dump(mode="json") for e in endpoints)
    fraction = None
    if sample_size is not None:
        fraction = min(1.0, sample_size / max(dataset.n_persons, 1))
    absorbing = None if absorbing_states is None else tuple(sorted(absorbing_states))
    tasks = [
        _BlockTask(index, str(p), str(e), manifest, specs, tuple(by), resolution, absorbing,
                   fraction, seed)
        for index, (p, e) in enumerate(zip(dataset.files("persons"), dataset.files("events"),
                                           strict=True))
    ]
    return _added_in_block_order(run_blocks(_aggregate_block, tasks, parallel,
                                            description="validating blocks",
                                            count=lambda part: part[1].n_persons))


def auto_resolution(resolution: float | None | str, n_persons: int) -> float | None:
    """``resolution``, or for "auto": whole days above ``AUTO_RESOLUTION_PERSONS`` persons,
    exact times below."""
    if resolution != "auto":
        return resolution
    return 1.0 if n_persons > AUTO_RESOLUTION_PERSONS else None


FOLD_EVERY = 16
"""Blocks' aggregates held before they are added to the running total (bounds memory)."""


def _added_in_block_order(parts: Iterable[tuple[int, Aggregates]]) -> Aggregates:
    """The sum of (block index, aggregates) pairs arriving in any order, added up in block
    order (so person samples and example ids never depend on which worker finished first),
    a few blocks at a time so that memory holds the running total, not every block."""
    waiting: dict[int, Aggregates] = {}
    ready: list[Aggregates] = []
    total, following = None, 0
    for index, part in parts:
        waiting[index] = part
        while following in waiting:
            ready.append(waiting.pop(following))
            following += 1
        if len(ready) >= FOLD_EVERY:
            total = combine([*([total] if total else []), *ready])
            ready = []
    if waiting:
        raise EndpointError(f"blocks {sorted(waiting)} arrived without the blocks before them")
    return combine([*([total] if total else []), *ready])


# -- figures --------------------------------------------------------------------------------------


def figures(
    aggregates: Aggregates,
    endpoints: Sequence[Endpoint],
    absorbing_states: Iterable[str] | None = None,
    alpha: float = 0.05,
) -> LazyFigures:
    """Survival curves, transition counts, jump chain and sojourn statistics from aggregates.

    ``absorbing`` defaults to the states :func:`validation.transitions.infer_absorbing_states`
    would find in the whole cohort (from the summed votes).
    """
    absorbing = (transitions.absorbing_from_votes(aggregates.votes) if absorbing_states is None
                 else set(absorbing_states))
    kaplan_meier, aalen_johansen = {}, {}
    for endpoint in endpoints:
        tally = aggregates.tallies[endpoint.name]
        if tally.height == 0:
            raise EndpointError(
                f"endpoint {endpoint.name!r}: no person ever enters the origin state "
                f"{endpoint.origin!r}"
            )
        if endpoint.competing:
            aalen_johansen[endpoint.name] = _per_group(
                tally, aggregates.by,
                lambda t: survival.aalen_johansen_from_counts(t, cause=EVENT, alpha=alpha))
        else:
            kaplan_meier[endpoint.name] = _per_group(
                tally.with_columns((pl.col("event") == EVENT).cast(pl.Int8).alias("event")),
                aggregates.by,
                lambda t: survival.kaplan_meier_from_counts(t, alpha=alpha))
    sojourns = site_rows(aggregates.sojourns, None, ["state", "duration"], ["d", "c"]).filter(
        ~pl.col("state").is_in(sorted(absorbing)))
    moves = site_rows(aggregates.transitions, None, ["from_state", "to_state"], ["count"])
    summary = (
        sojourns.group_by("state")
        .agg(pl.col("c").sum().alias("n"), pl.col("d").sum().alias("completed"))
        .join(transitions.medians_from_sojourn_counts(sojourns), on="state", how="left")
        .sort("state")
    )
    return LazyFigures(
        n_persons=aggregates.n_persons,
        kaplan_meier=kaplan_meier,
        aalen_johansen=aalen_johansen,
        transitions=moves,
        jump_chain=transitions.jump_chain(moves),
        sojourns=summary,
        absorbing_states=absorbing,
    )


def site_rows(frame: pl.DataFrame, site: str | None, keys: list[str],
              values: list[str]) -> pl.DataFrame:
    """An aggregate table's counts of one site (``None``: all) summed over its other groups:
    one row per ``keys``, sorted."""
    if site is not None:
        frame = frame.filter(pl.col("site") == site)
    return frame.group_by(keys).agg(pl.col(v).sum() for v in values).sort(keys)


def _per_group(tally: pl.DataFrame, by: tuple[str, ...], estimate) -> pl.DataFrame:
    """``estimate`` on the tally of each ``by`` group, stacked with the group columns first,
    groups in sorted order (a null group first)."""
    if not by:
        return estimate(tally)
    curves = []
    groups = tally.partition_by(list(by), as_dict=True)
    for key in sorted(groups, key=lambda k: tuple((v is not None, v) for v in k)):
        group = groups[key]
        curve = estimate(group.drop(by))
        curves.append(curve.select(
            *(pl.lit(value, tally.schema[name]).alias(name) for name, value in zip(by, key,
                                                                                 strict=True)),
            pl.all(),
        ))
    return pl.concat(curves, how="vertical")


def validate_partitioned(
    source: PartitionedCohort | str | Path,
    endpoints: Sequence[Endpoint],
    by: Sequence[str] = (),
    absorbing_states: Iterable[str] | None = None,
    alpha: float = 0.05,
    resolution: float | None | Literal["auto"] = "auto",
    *,
    parallel: Parallel | None = None,
    executor: str | None = None,
    workers: int | str | None = None,
    scheduler: str | None = None,
) -> LazyFigures:
    """:func:`figures` of :func:`aggregate`: a partitioned cohort's figures, block by block."""
    totals = aggregate(source, endpoints, by, resolution,
                       parallel=parallel_from(parallel, executor, workers, scheduler))
    return figures(totals, endpoints, absorbing_states=absorbing_states, alpha=alpha)
