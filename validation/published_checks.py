"""Checks of a synthetic cohort against published figures: each estimate in its interval."""

from __future__ import annotations

import polars as pl

from trajectories.cohort import Cohort, PartitionedCohort, death_states, state_names
from trajectories.errors import CoxConvergenceError
from trajectories.parallel import Parallel, parallel_from
from validation import cox, lazy, survival, transitions
from validation.endpoints import default_endpoints, endpoint_times
from validation.lazy import SAMPLE_CAP
from validation.published import (
    HazardRatioFigure,
    LandmarkFigure,
    MedianFigure,
    PublishedFigures,
    TransitionFigure,
)
from validation.report import Report, plots, within
from validation.thresholds import Thresholds


def _subject(figure) -> str:
    where = [f"site {figure.site}"] if figure.site else []
    where += [f"{k}={v}" for k, v in figure.group.items()]
    name = getattr(figure, "endpoint", None) or f"{figure.from_state}->{figure.to_state}"
    return name + (f" ({', '.join(where)})" if where else "")


def compare_published(
    synthetic: Cohort | PartitionedCohort, published: PublishedFigures, *,
    thresholds: Thresholds | None = None, seed: int = 0, figures: bool = True,
    parallel: Parallel | None = None, executor: str | None = None,
    workers: int | str | None = None, scheduler: str | None = None,
) -> Report:
    """One check per published figure: the synthetic estimate must fall in its interval.

    A partitioned cohort is read block by block (curves from per-block tallies by site and
    by the figures' group columns, hazard ratios from a random sample of persons); its default
    endpoints take its absorbing states as the death states.
    """
    unit = published.days_per_unit
    parallel = parallel_from(parallel, executor, workers, scheduler)
    if isinstance(synthetic, PartitionedCohort):
        endpoints, frames, chain, sample = _partitioned_inputs(
            synthetic, published, seed, parallel=parallel)
    else:
        endpoints = {e.name: e for e in (published.endpoints or default_endpoints(
            state_names(synthetic), death_states(synthetic)))}
        frames = {name: endpoint_times(synthetic, e) for name, e in endpoints.items()}
        chain = transitions.jump_chain(transitions.transition_counts(synthetic))
        sample = frames
    checks, panels = [], {}
    for figure in published.figures:
        subject = _subject(figure)
        details = {"published": [figure.lower, figure.value, figure.upper],
                   "label": figure.label, "source": published.source}
        if isinstance(figure, TransitionFigure):
            row = chain.filter((pl.col("from_state") == figure.from_state)
                               & (pl.col("to_state") == figure.to_state))
            estimate = float(row["probability"][0]) if row.height else 0.0
            checks.append(within("published", "transition probability", subject, estimate,
                                 figure.lower, figure.upper, details=details))
            continue
        frame = figure.restrict(frames[figure.endpoint])
        endpoint = endpoints[figure.endpoint]
        if isinstance(figure, HazardRatioFigure):
            name = figure.covariate + (f"[{figure.level}]" if figure.level else "")
            try:
                fitted = cox.cox_hazard_ratios(
                    figure.restrict(sample[figure.endpoint]), "time", "event",
                    [figure.covariate], reference_levels=(
                        {figure.covariate: figure.reference_level} if figure.reference_level
                        else {}), seed=seed)
            except CoxConvergenceError as error:  # no estimate: the figure fails
                fitted = pl.DataFrame(schema={"covariate": pl.String, "hazard_ratio": pl.Float64})
                details = {**details, "reason": str(error)}
            row = fitted.filter(pl.col("covariate") == name)
            estimate = float(row["hazard_ratio"][0]) if row.height else float("nan")
            checks.append(within("published", f"hazard ratio {name}", subject, estimate,
                                 figure.lower, figure.upper, details=details))
            continue
        counts = frame.group_by("time", "event").agg(
            (pl.col("count").sum() if "count" in frame.columns else pl.len()).alias("count"))
        if endpoint.competing:
            curve = survival.aalen_johansen_from_counts(counts, cause=1)
        else:
            curve = survival.kaplan_meier_from_counts(counts.with_columns(
                (pl.col("event") == 1).cast(pl.Int8).alias("event")))
        if isinstance(figure, MedianFigure):
            estimate = survival.median_survival(curve)["median"] / unit
            checks.append(within("published", "median", subject, estimate, figure.lower,
                                 figure.upper, details={**details, "unit": published.time_unit}))
        elif isinstance(figure, LandmarkFigure):
            estimate = survival.survival_at(curve, figure.time * unit)["value"]
            checks.append(within("published", f"{figure.kind} {figure.time:g} "
                                 f"{published.time_unit}", subject, estimate, figure.lower,
                                 figure.upper, details=details))
            if figures:
                key = f"{figure.endpoint}: {subject}"
                column = "survival" if "survival" in curve.columns else "cumulative_incidence"
                panels.setdefault(key, {"synthetic": curve.select(
                    "time", pl.col(column).alias("value"), "lower", "upper")})
    report = Report(checks, {}, {"synthetic": f"{synthetic.n_persons:,} persons",
                                 "reference": f"published figures: {published.source}"})
    if figures and panels:
        report.figures["Synthetic curves for the published endpoints"] = plots.step_curves(
            panels, "value", "probability")
    return report


def _partitioned_inputs(dataset: PartitionedCohort, published: PublishedFigures, seed: int,
                        parallel: Parallel):
    """Endpoints, per-endpoint tallies (by site and group columns), the jump chain and
    per-endpoint rows of a person sample, read block by block."""
    endpoints = published.endpoints
    if not endpoints:
        structure = lazy.aggregate(dataset, [], parallel=parallel)
        absorbing = transitions.absorbing_from_votes(structure.votes)
        votes = structure.votes.sort("initial", "state", descending=[True, False])
        names = [s for s in votes.get_column("state").to_list() if s not in absorbing]
        initial = votes.filter(pl.col("initial") > 0).get_column("state").to_list()
        endpoints = default_endpoints(names + sorted(absorbing), sorted(absorbing),
                                      initial=initial)
    groups = sorted({name for figure in published.figures for name in figure.group})
    totals = lazy.aggregate(dataset, endpoints, ("site", *groups), sample_size=SAMPLE_CAP,
                            seed=seed, parallel=parallel)
    moves = totals.transitions.group_by("from_state", "to_state").agg(pl.col("count").sum())
    sample = {e.name: endpoint_times(totals.sample, e) for e in endpoints}
    return ({e.name: e for e in endpoints}, dict(totals.tallies),
            transitions.jump_chain(moves.sort("from_state", "to_state")), sample)
