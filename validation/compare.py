"""compare(): run every check of a synthetic cohort against a reference and collect a Report.

Every judged statistical check shares one family-wise error rate: each is judged at level
``alpha / m`` for the ``m`` such checks of the report (Bonferroni), so two cohorts drawn from
one scenario pass as a whole with probability at least 1 - alpha. Hypothesis tests (log-rank,
Kaplan-Meier distance, RMST and landmark differences, hazard-ratio differences, jump-chain
G-tests, sojourn KS tests, index-date and censored follow-up KS tests) compare their p-value
with that level; magnitude checks (jump-chain total variation, median sojourn ratio, state
occupation, C-index gap) allow a practical margin from :class:`Thresholds` plus
``z(alpha / m)`` standard errors of sampling noise, so the threshold grows as the samples
shrink instead of being a fixed constant.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import polars as pl

from trajectories.cohort import (
    Cohort,
    PartitionedCohort,
    death_states,
    holdout_split,
    initial_states,
    state_names,
)
from trajectories.cohort.files import FINGERPRINT_WITHHELD, synthetic_interval_note
from trajectories.errors import TrajectoriesError
from trajectories.parallel import Parallel, parallel_from
from trajectories.privacy import checks as privacy
from validation import (
    integrity,
    lazy,
    regression_checks,
    sample_checks,
    survival_checks,
    transition_checks,
    transitions,
)
from validation.collect import Collector
from validation.endpoints import (
    Endpoint,
    default_endpoints,
    default_endpoints_note,
    next_states,
)
from validation.lazy import SAMPLE_CAP, Aggregates
from validation.published import PublishedFigures
from validation.published_checks import compare_published
from validation.report import Report
from validation.thresholds import Thresholds


def compare(
    synthetic: Cohort | PartitionedCohort,
    reference: Cohort | PublishedFigures,
    *,
    endpoints: Iterable[Endpoint] | None = None,
    thresholds: Thresholds | None = None,
    allowed_transitions: set[tuple[str, str]] | None = None,
    seed: int = 0,
    figures: bool = True,
    resolution: float | None | Literal["auto"] = "auto",
    parallel: Parallel | None = None,
    executor: str | None = None,
    workers: int | str | None = None,
    scheduler: str | None = None,
    holdout: Cohort | None = None,
) -> Report:
    """Compare a synthetic cohort with a reference cohort (or published figures).

    ``endpoints`` default to overall survival and event-free survival derived from the
    reference's states (without a death state: time out of the initial state and the
    cumulative incidence of each next state; the report's notes say which);
    ``allowed_transitions`` default to the moves seen in the reference.
    A partitioned ``synthetic`` cohort (:func:`trajectories.cohort.read_partitioned`)
    is read block by block and never whole, where ``parallel`` says
    (:class:`trajectories.parallel.Parallel`; ``executor``/``workers``/``scheduler``: the old
    separate arguments, for one release): integrity, survival, transition and sojourn
    checks come from additive per-block aggregates, exactly as in memory; Cox models, the
    utility check, state occupation and the descriptive figures use a random sample of about
    ``SAMPLE_CAP`` persons. ``resolution`` (days) rounds endpoint times and sojourn durations
    of both sides up to that grid before counting; "auto" rounds to whole days for partitioned
    cohorts above :data:`validation.lazy.AUTO_RESOLUTION_PERSONS` persons (keeping the
    aggregates small) and keeps times exact otherwise.

    ``holdout``: real persons the generator never saw. With one, the privacy checks
    (:mod:`trajectories.privacy.checks`, group "privacy") judge the synthetic cohort against
    the reference as its train cohort with ``holdout`` the control; without one, a synthetic
    cohort whose manifest records the split its generator was fitted on (``reference_split``)
    is measured against the train part of the same split of the reference, with its holdout
    part the control; otherwise the copy shares against the reference are shown, not judged.
    """
    th = thresholds or Thresholds()
    parallel = parallel_from(parallel, executor, workers, scheduler)
    if isinstance(reference, PublishedFigures):
        report = compare_published(synthetic, reference, thresholds=th, seed=seed,
                                   figures=figures, parallel=parallel)
        report.context["privacy"] = privacy.PUBLISHED + (
            "; the holdout given is not used" if holdout is not None else "")
        return report
    rng = np.random.default_rng(seed)
    col = Collector()
    states = state_names(reference)
    absorbing = transitions.infer_absorbing_states(reference)
    context = _compared(synthetic, reference)
    train, control, sides = _privacy_sides(synthetic, reference, holdout)
    context |= sides
    endpoints, notes = _endpoints(endpoints, reference, states, absorbing)
    notes += [n for n in [synthetic_interval_note(synthetic.manifest)] if n]
    resolution = _resolution(resolution, synthetic)
    syn = _synthetic_aggregates(synthetic, endpoints, absorbing, resolution, seed,
                                parallel=parallel)
    context |= _how_read(synthetic, syn, resolution)

    col.checks += integrity.as_checks(syn.integrity)
    if any(c.failed for c in col.checks):
        context["note"] = "statistical checks skipped: the synthetic cohort fails integrity"
        return Report(col.checks, {}, context)

    ref = lazy.block_aggregates(reference, endpoints, ("site",), resolution, sample_fraction=1.0)
    states += [s for s in sorted(syn.votes.get_column("state").to_list()) if s not in states]
    horizon = th.rmst_horizon_days or float(reference.persons["followup_end"].quantile(0.9))
    sites = _judged_sites(set(syn.persons.get_column("site").to_list()), reference,
                          th.min_site_persons)
    context |= {"endpoints": ", ".join(e.name for e in endpoints),
                "sites judged separately": ", ".join(sites) or "none (pooled only)",
                "horizon (days)": f"{horizon:.0f}"}

    for endpoint in endpoints:
        panels = survival_checks.endpoint_checks(col, endpoint, syn, ref, sites, horizon, th,
                                                 rng)
        if not endpoint.competing:
            regression_checks.hazard_ratio_checks(col, endpoint, syn.sample, reference)
        if figures and panels:
            col.figures |= survival_checks.curves_figure(endpoint, panels)
    main = next((e for e in endpoints if not e.competing), None)
    if main is not None:
        regression_checks.utility_checks(col, main, syn.sample, reference, th, seed)
    pooled, *_ = [transition_checks.site_checks(col, syn, ref, site, allowed_transitions,
                                                absorbing, horizon, th)
                  for site in [None, *sites]]
    sample_checks.distribution_info(col, syn.sample, reference, rng, SAMPLE_CAP)
    sample_checks.followup_checks(col, syn.sample, reference, sites, rng, SAMPLE_CAP)
    context |= _privacy(col, syn.sample, train, control, th, seed)

    level = col.resolve(th.alpha)
    context |= {"tests sharing alpha": f"{len(col.pending)} (each at {level:.2g})"}
    if figures:
        col.figures |= transition_checks.figures(pooled, states, absorbing)
    return Report(col.checks, col.figures, context, notes)


def _compared(synthetic: Cohort | PartitionedCohort, reference: Cohort) -> dict[str, str]:
    """What was compared, for the report's context."""
    return {
        "synthetic": f"{synthetic.n_persons:,} persons "
                     f"({synthetic.manifest.generator}, scenario "
                     f"{synthetic.manifest.scenario_name}, seed {synthetic.manifest.seed})",
        "reference": f"{reference.n_persons:,} persons ({reference.manifest.generator})",
    }


def _privacy_sides(synthetic: Cohort | PartitionedCohort, reference: Cohort,
                   holdout: Cohort | None) -> tuple[Cohort, Cohort | None, dict[str, str]]:
    """The privacy checks' train cohort and control (None: no holdout), and context lines
    saying which: the reference and ``holdout``, or both parts of the reference's split
    recorded in the synthetic manifest (the holdout given, if any, replaces its holdout part)."""
    split = synthetic.manifest.reference_split
    train, described = reference, f"the reference ({reference.n_persons:,} persons)"
    source = None if holdout is None else f"given ({holdout.n_persons:,} persons)"
    if split is not None:
        try:
            fraction, split_seed = float(split["fraction"]), int(split["seed"])
        except (KeyError, TypeError, ValueError):
            raise TrajectoriesError(
                f"synthetic manifest: reference_split must be {{'fraction': f, 'seed': s}}, got "
                f"{split!r}") from None
        recorded_print = synthetic.manifest.reference_fingerprint
        unverified = recorded_print == FINGERPRINT_WITHHELD
        if unverified:  # a private model withholds it: the split is applied as recorded
            recorded_print = None
        if recorded_print is not None and recorded_print != (
                reference.manifest.reference_fingerprint or reference.fingerprint()):
            if holdout is None:
                return reference, None, {"privacy split": (
                    "the synthetic manifest records a split of another reference (fingerprints "
                    "differ): its holdout part here could hold persons the generator saw, so "
                    "it is not used")}
        else:
            train, recorded = holdout_split(reference, fraction, split_seed)
            described = (f"the train part of the reference ({train.n_persons:,} of "
                         f"{reference.n_persons:,} persons), split as the synthetic manifest "
                         f"records (reference_split: fraction {fraction:g}, seed {split_seed})"
                         + ("; the private model withholds the reference's fingerprint, so "
                            "that this is the reference it was fitted to is not checked"
                            if unverified else ""))
            if holdout is None:
                holdout = recorded
                source = f"the holdout part of that split ({recorded.n_persons:,} persons)"
    if holdout is None:
        return train, None, {}
    return train, holdout, {"privacy train": described, "privacy holdout": str(source)}


def _privacy(col: Collector, sample: Cohort, train: Cohort, control: Cohort | None,
             th: Thresholds, seed: int) -> dict[str, str]:
    """The privacy section: judged against a holdout, else copy shares shown with a note."""
    if control is None:
        return privacy.no_holdout_checks(col, sample, train)
    return privacy.privacy_checks(col, sample, train, control, th, seed)


def _endpoints(endpoints: Iterable[Endpoint] | None, reference: Cohort, states: list[str],
               absorbing: set[str]) -> tuple[list[Endpoint], list[str]]:
    """The endpoints given, or the defaults from the reference's states with a note on them."""
    if endpoints is not None:
        return list(endpoints), []
    deaths, initial = death_states(reference), initial_states(reference)
    following = [] if deaths else next_states(reference)
    endpoints = default_endpoints(
        [s for s in states if s not in absorbing] + sorted(absorbing), deaths,
        initial=initial, next_states=None if deaths else following)
    return endpoints, [default_endpoints_note(endpoints, deaths, initial, following)]


def _resolution(resolution: float | None | str, synthetic: Cohort | PartitionedCohort):
    if isinstance(synthetic, PartitionedCohort):
        return lazy.auto_resolution(resolution, synthetic.n_persons)
    return None if resolution == "auto" else resolution


def _synthetic_aggregates(synthetic: Cohort | PartitionedCohort, endpoints: list[Endpoint],
                          absorbing: set[str], resolution: float | None, seed: int,
                          parallel: Parallel) -> Aggregates:
    """The synthetic side's aggregates with integrity results and a person sample: in one
    pass over the blocks of a partitioned cohort, or of the cohort in memory (its own sample)."""
    if isinstance(synthetic, PartitionedCohort):
        return lazy.aggregate(synthetic, endpoints, ("site",), resolution,
                              absorbing_states=absorbing, sample_size=SAMPLE_CAP, seed=seed,
                              parallel=parallel)
    return lazy.block_aggregates(synthetic, endpoints, ("site",), resolution,
                                 absorbing_states=absorbing, sample_fraction=1.0)


def _how_read(synthetic: Cohort | PartitionedCohort, syn: Aggregates,
              resolution: float | None) -> dict[str, str]:
    """How the synthetic side was read and counted, for the report's context."""
    context = {}
    if isinstance(synthetic, PartitionedCohort):
        context["synthetic read"] = (
            f"block by block ({synthetic.n_blocks} blocks); Cox, utility, state occupation "
            f"and distributions on a random sample of {syn.sample.n_persons:,} persons")
    if resolution is not None:
        context["resolution (days)"] = f"{resolution:g} (times rounded up before counting)"
    return context


def _judged_sites(synthetic_sites: set[str], reference: Cohort, minimum: int) -> list[str]:
    ref_counts = reference.persons.group_by("site").len()
    large = set(ref_counts.filter(pl.col("len") >= minimum).get_column("site").to_list())
    shared = large & synthetic_sites
    return sorted(shared) if len(shared) > 1 else []
