"""Validation figures of a partitioned cohort, block by block: never the whole cohort in memory.

A block holds whole persons (a person's events never cross blocks), so each block is read alone
and reduced to additive tables: a (time, status) tally per endpoint, transition counts, sojourn
counts per (state, duration) and absorbing-state votes. Their sums over the blocks go through
the estimators of :mod:`validation.survival` and :mod:`validation.transitions`, so the figures
are those of the whole cohort in memory, to the last bit. Memory holds one block per worker
plus the tallies (one row per distinct time: about one per person when times are continuous,
far fewer when they are whole days: ``resolution`` rounds times up to a grid for that).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort, Manifest
from trajectories.parallel import run_blocks
from trajectories.simulate.sharded import PartitionedCohort, read_partitioned
from validation import survival, transitions
from validation.endpoints import EVENT, INDEX, Endpoint, EndpointError, endpoint_times

TALLY_SCHEMA = {"time": pl.Float64(), "status": pl.Int8(), "count": pl.Int64()}


@dataclass(frozen=True)
class Aggregates:
    """Additive summaries of (part of) a cohort; those of disjoint parts add up (:func:`combine`).

    ``tallies``: endpoint name -> [*by, time, status, count], the parts' tallies stacked (a
    time may repeat; the estimators add up equal times); ``transitions``: [from_state,
    to_state, count]; ``sojourns``: [state, duration, d, c] for every state (absorbing ones are
    dropped once known); ``votes``: [state, terminal, left] (see
    :func:`validation.transitions.absorbing_votes`).
    """

    n_persons: int
    tallies: dict[str, pl.DataFrame]
    transitions: pl.DataFrame
    sojourns: pl.DataFrame
    votes: pl.DataFrame
    by: tuple[str, ...] = ()


@dataclass(frozen=True)
class LazyFigures:
    """The validation figures of a cohort computed from its :class:`Aggregates`.

    ``kaplan_meier``: curves of the endpoints without competing events (status 1 is the event);
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
    absorbing: set[str] = field(default_factory=set)


# -- one block ------------------------------------------------------------------------------------


def block_aggregates(
    cohort: Cohort,
    endpoints: Sequence[Endpoint],
    by: Sequence[str] = (),
    resolution: float | None = None,
) -> Aggregates:
    """The additive summaries of ``cohort`` (a block, or any set of whole persons).

    ``resolution`` (days): endpoint times and sojourn durations are rounded up to multiples of
    it before they are counted (1.0: whole days, as most real data are), which bounds the
    tallies by the number of grid points instead of the number of persons; None keeps them
    exact.
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
    tallies = {endpoint.name: _tally(cohort, endpoint, by, resolution) for endpoint in endpoints}
    sojourns = transitions.sojourn_times(cohort, absorbing=())
    return Aggregates(
        n_persons=cohort.n_persons,
        tallies=tallies,
        transitions=transitions.transition_counts(cohort),
        sojourns=transitions.sojourn_counts(_rounded(sojourns, "duration", resolution)),
        votes=transitions.absorbing_votes(cohort),
        by=by,
    )


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
        .group_by(*by, "time", "status")
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

    return Aggregates(
        n_persons=sum(p.n_persons for p in parts),
        tallies={
            name: pl.concat([p.tallies[name] for p in parts], how="vertical", rechunk=False)
            for name in parts[0].tallies
        },
        transitions=summed([p.transitions for p in parts], ["from_state", "to_state"],
                           ["count"]),
        sojourns=_add_sojourns([p.sojourns for p in parts]),
        votes=summed([p.votes for p in parts], ["state"], ["terminal", "left"]),
        by=by,
    )


def _add_sojourns(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Sojourn counts summed per (state, duration): state by state, which spares sorting and
    hashing the state strings of a row per stay."""
    stacked = pl.concat(frames, how="vertical", rechunk=False)
    per_state = [
        part.group_by("duration")
        .agg(pl.col("d").sum(), pl.col("c").sum())
        .sort("duration")
        .select(pl.lit(state, pl.String).alias("state"), "duration", "d", "c")
        for (state,), part in sorted(stacked.partition_by("state", as_dict=True).items())
    ]
    if not per_state:
        return stacked
    return pl.concat(per_state, how="vertical")


# -- a partitioned cohort -------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockTask:
    """One block's work for a worker: plain, picklable data."""

    persons_file: str
    events_file: str
    manifest: dict[str, Any]
    endpoints: tuple[dict[str, Any], ...]
    by: tuple[str, ...]
    resolution: float | None


def _aggregate_block(task: _BlockTask) -> Aggregates:
    # Every figure here comes from state events: reading only those (about 1 event in 10 in
    # the built-in scenarios) keeps a block's memory and time small.
    persons = pl.read_parquet(task.persons_file)
    events = (
        pl.scan_parquet(task.events_file)
        .filter(pl.col("code").str.starts_with(STATE_PREFIX))
        .collect()
    )
    manifest = Manifest.model_validate({**task.manifest, "n_persons": persons.height})
    cohort = Cohort(persons, events, manifest, check=False)
    endpoints = [Endpoint.model_validate(e) for e in task.endpoints]
    return block_aggregates(cohort, endpoints, task.by, task.resolution)


def aggregate(
    source: PartitionedCohort | str | Path,
    endpoints: Sequence[Endpoint],
    by: Sequence[str] = (),
    resolution: float | None = None,
    *,
    executor: str = "local",
    workers: int | str = 1,
    scheduler: str | None = None,
) -> Aggregates:
    """:func:`block_aggregates` of every block of a partitioned cohort, added up.

    Blocks are read one at a time per worker (``executor``/``workers``/``scheduler`` as in
    :func:`trajectories.parallel.run_blocks`), persons and state events only. Blocks are not
    re-validated: the writer checked each one against the data model.
    """
    dataset = source if isinstance(source, PartitionedCohort) else read_partitioned(source)
    manifest = {k: v for k, v in dataset.manifest.model_dump(mode="json").items()
                if k not in ("blocks", "layout", "n_blocks")}
    specs = tuple(e.model_dump(mode="json") for e in endpoints)
    tasks = [
        _BlockTask(str(p), str(e), manifest, specs, tuple(by), resolution)
        for p, e in zip(dataset.files("persons"), dataset.files("events"), strict=True)
    ]
    parts = list(run_blocks(_aggregate_block, tasks, executor, workers, scheduler,
                            description="validating blocks"))
    return combine(parts)


# -- figures --------------------------------------------------------------------------------------


def figures(
    aggregates: Aggregates,
    endpoints: Sequence[Endpoint],
    absorbing: Iterable[str] | None = None,
    alpha: float = 0.05,
) -> LazyFigures:
    """Survival curves, transition counts, jump chain and sojourn statistics from aggregates.

    ``absorbing`` defaults to the states :func:`validation.transitions.infer_absorbing_states`
    would find in the whole cohort (from the summed votes).
    """
    absorbing = (transitions.absorbing_from_votes(aggregates.votes) if absorbing is None
                 else set(absorbing))
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
                tally.with_columns((pl.col("status") == EVENT).cast(pl.Int8).alias("status")),
                aggregates.by,
                lambda t: survival.kaplan_meier_from_counts(t, alpha=alpha))
    sojourns = aggregates.sojourns.filter(~pl.col("state").is_in(sorted(absorbing)))
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
        transitions=aggregates.transitions,
        jump_chain=transitions.jump_chain(aggregates.transitions),
        sojourns=summary,
        absorbing=absorbing,
    )


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
    absorbing: Iterable[str] | None = None,
    alpha: float = 0.05,
    resolution: float | None = None,
    *,
    executor: str = "local",
    workers: int | str = 1,
    scheduler: str | None = None,
) -> LazyFigures:
    """:func:`figures` of :func:`aggregate`: a partitioned cohort's figures, block by block."""
    totals = aggregate(source, endpoints, by, resolution, executor=executor, workers=workers,
                       scheduler=scheduler)
    return figures(totals, endpoints, absorbing=absorbing, alpha=alpha)
