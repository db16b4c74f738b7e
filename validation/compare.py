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

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats

from trajectories.cohort import Cohort
from trajectories.simulate.sharded import PartitionedCohort
from validation import distributions, followup, integrity, lazy, survival, transitions
from validation.endpoints import (
    Endpoint,
    EndpointError,
    default_endpoints,
    default_endpoints_note,
    endpoint_times,
    next_states,
)
from validation.lazy import SAMPLE_CAP, Aggregates
from validation.published import PublishedFigures
from validation.report import Check, Report, info, judge, plots
from validation.thresholds import Thresholds
from validation.utility import train_synthetic_test_real

COX_ROWS = 50_000
"""Synthetic rows a Cox model of the report is fitted on (a seeded subsample above that): its
standard error then stays well below a typical reference's, at a fraction of the time."""

DISTANCE_GRID = 400
"""Kaplan-Meier distances are tested on times coarsened to this many pooled event quantiles,
which keeps the bootstrap cheap at any cohort size (the same grid serves both curves)."""


@dataclass
class _Pending:
    """A hypothesis test waiting for the report's per-test level."""

    group: str
    name: str
    subject: str
    site: str | None
    p_value: float | None = None
    distance: tuple[float, Callable[[float, int], float]] | None = None
    margin: tuple[float, float, float] | None = None  # metric, practical margin, standard error
    details: dict = field(default_factory=dict)


@dataclass
class _Collector:
    checks: list[Check] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def resolve(self, alpha: float) -> float:
        """Judge the pending tests at alpha / m; returns that per-test level."""
        level = alpha / max(len(self.pending), 1)
        z = float(stats.norm.isf(level / 2))
        for test in self.pending:
            if test.margin is not None:
                metric, margin, se = test.margin
                self.checks.append(judge(
                    test.group, test.name, test.subject, metric, margin + z * se,
                    site=test.site,
                    rule=f"<= margin {margin:g} + {z:.2f} x standard error {se:.3g}",
                    details={**test.details, "margin": margin, "standard_error": se}))
            elif test.distance is not None:
                observed, threshold_at = test.distance
                n_boot = max(400, math.ceil(4 / level))
                limit = threshold_at(level, n_boot)
                self.checks.append(judge(
                    test.group, test.name, test.subject, observed, limit, site=test.site,
                    rule=f"sup |S_syn - S_ref| <= bootstrap critical value at level {level:.2g}",
                    details={**test.details, "n_boot": n_boot},
                ))
            else:
                self.checks.append(judge(
                    test.group, test.name, test.subject, test.p_value, level,
                    higher_is_worse=False, site=test.site,
                    rule=f"p-value >= {level:.2g} (alpha {alpha} / {len(self.pending)} tests)",
                    details=test.details,
                ))
        return level


def _z_test_p(difference: float, se_a: float, se_b: float) -> float:
    se = math.hypot(se_a, se_b)
    if not math.isfinite(difference):
        return 0.0
    if se == 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * stats.norm.sf(abs(difference) / se))


def _subset(cohort: Cohort, site: str | None) -> Cohort:
    if site is None:
        return cohort
    persons = cohort.persons.filter(pl.col("site") == site)
    events = cohort.events.join(persons.select("person_id"), on="person_id", how="semi")
    return Cohort(persons, events, cohort.manifest, check=False)


def _states_only(cohort: Cohort) -> Cohort:
    events = cohort.events.filter(pl.col("code").str.starts_with("state:"))
    return Cohort(cohort.persons, events, cohort.manifest, check=False)


def _thin(curve: pl.DataFrame, points: int = 1500) -> pl.DataFrame:
    if curve.height <= points:
        return curve
    rows = np.unique(np.linspace(0, curve.height - 1, points).astype(int))
    return curve[rows]


def death_states(cohort: Cohort) -> list[str]:
    """States in which persons whose exit is death end their path."""
    last = (
        cohort.events.filter(pl.col("code").str.starts_with("state:"))
        .group_by("person_id").agg(pl.col("code").last())
        .join(cohort.persons.filter(pl.col("exit") == "death").select("person_id"),
              on="person_id", how="semi")
    )
    return sorted(last.get_column("code").str.strip_prefix("state:").unique().to_list())


def _state_names(*cohorts: Cohort) -> list[str]:
    names: list[str] = []
    for cohort in cohorts:
        codes = cohort.events.filter(pl.col("code").str.starts_with("state:")).get_column("code")
        for name in codes.unique(maintain_order=True).str.strip_prefix("state:").to_list():
            if name not in names:
                names.append(name)
    return names


def _initial_states(cohort: Cohort) -> list[str]:
    spells = cohort.state_spells().filter(pl.col("first"))
    return sorted(spells.get_column("state").unique().to_list())


def _judged_sites(synthetic_sites: set[str], reference: Cohort, minimum: int) -> list[str]:
    ref_counts = reference.persons.group_by("site").len()
    large = set(ref_counts.filter(pl.col("len") >= minimum).get_column("site").to_list())
    shared = large & synthetic_sites
    return sorted(shared) if len(shared) > 1 else []


def _shared_covariates(synthetic: Cohort, reference: Cohort, frame: pl.DataFrame) -> list[str]:
    names = [c for c in reference.covariates if c in synthetic.covariates]
    if frame.get_column("site").n_unique() > 1:
        names.append("site")
    return [c for c in names if frame.get_column(c).n_unique() > 1
            and frame.get_column(c).null_count() == 0]


# -- survival ------------------------------------------------------------------------------------


def _landmark_tests(col: _Collector, curves: dict, label: str, subject: str, site: str | None,
                    horizon: float, th: Thresholds) -> None:
    """Curve values at the landmarks (up to the horizon): a z-test of their difference."""
    for t in th.landmark_days:
        if t > horizon:
            continue
        a, b = (survival.survival_at(curves[k], t) for k in ("synthetic", "reference"))
        col.pending.append(_Pending(
            "survival", f"{label} at {t:g} d", subject, site,
            p_value=_z_test_p(a["value"] - b["value"], a["std_error"], b["std_error"]),
            details={"synthetic": a, "reference": b}))


def _event_quantiles(tally: pl.DataFrame, points: int) -> np.ndarray:
    """``np.quantile`` (linear) of the event times a [time, status, count] tally counts, at
    ``points`` evenly spaced levels: the same values as on the expanded times."""
    events = tally.filter(pl.col("status") == 1).group_by("time").agg(pl.col("count").sum())
    events = events.filter(pl.col("count") > 0).sort("time")
    times, counts = events.get_column("time").to_numpy(), events.get_column("count").to_numpy()
    if times.size == 0:
        return np.array([])
    ends = np.cumsum(counts)  # the expanded array's k-th value is times[first end > k]
    position = np.linspace(0, 1, points) * (ends[-1] - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, ends[-1] - 1)

    def value(k: np.ndarray) -> np.ndarray:
        return times[np.searchsorted(ends, k, side="right")]

    low = value(below)
    return low + (position - below) * (value(above) - low)


def _coarsened(tally: pl.DataFrame, grid: np.ndarray) -> pl.DataFrame:
    """A tally with each time moved up to the next grid point (the grid's last one is +inf)."""
    moved = grid[np.searchsorted(grid, tally.get_column("time").to_numpy(), side="left")]
    return tally.with_columns(pl.Series("time", moved)).group_by("time", "status").agg(
        pl.col("count").sum())


def _survival_checks(col: _Collector, endpoint: Endpoint, site: str | None, syn: pl.DataFrame,
                     ref: pl.DataFrame, horizon: float, th: Thresholds, rng) -> dict:
    """Survival checks of one endpoint (and site) from the two sides' [time, status, count]
    tallies."""
    subject = endpoint.name
    if endpoint.competing:
        curves = {
            label: survival.aalen_johansen_from_counts(t, cause=1)
            for label, t in (("synthetic", syn), ("reference", ref))
        }
        _landmark_tests(col, curves, "cumulative incidence", subject, site, horizon, th)
        gap = survival.max_vertical_distance(curves["synthetic"], curves["reference"], horizon)
        col.checks.append(info("survival", "max cumulative incidence difference", subject, gap,
                               site=site))
        return {k: _thin(v).rename({"cumulative_incidence": "value"}) for k, v in curves.items()}

    syn, ref = (t.with_columns((pl.col("status") == 1).cast(pl.Int8).alias("status"))
                for t in (syn, ref))
    curves = {"synthetic": survival.kaplan_meier_from_counts(syn),
              "reference": survival.kaplan_meier_from_counts(ref)}
    quantiles = _event_quantiles(pl.concat([syn, ref]), DISTANCE_GRID)
    grid = np.unique(np.append(quantiles, np.inf))
    coarse_syn, coarse_ref = _coarsened(syn, grid), _coarsened(ref, grid)
    coarse_distance = survival.max_vertical_distance(
        survival.kaplan_meier_from_counts(coarse_syn),
        survival.kaplan_meier_from_counts(coarse_ref), horizon)
    seed = int(rng.integers(2**31))

    def threshold_at(level: float, n_boot: int) -> float:
        return survival.distance_threshold_from_counts(
            coarse_syn, coarse_ref, alpha=level, n_boot=n_boot,
            rng=np.random.default_rng(seed), horizon=horizon)

    col.pending.append(_Pending(
        "survival", "Kaplan-Meier max distance", subject, site,
        distance=(coarse_distance, threshold_at),
        details={"exact_distance": survival.max_vertical_distance(
            curves["synthetic"], curves["reference"], horizon), "horizon_days": horizon,
            "grid_points": int(grid.size)}))
    statistic, p = survival.logrank_from_counts(syn, ref)
    col.pending.append(_Pending("survival", "log-rank", subject, site, p_value=p,
                                details={"chi_square": statistic}))
    (rmst_s, se_s), (rmst_r, se_r) = (survival.rmst(curves[k], horizon)
                                      for k in ("synthetic", "reference"))
    col.pending.append(_Pending(
        "survival", f"RMST difference at {horizon:.0f} d", subject, site,
        p_value=_z_test_p(rmst_s - rmst_r, se_s, se_r),
        details={"rmst_synthetic": rmst_s, "rmst_reference": rmst_r,
                 "difference_days": rmst_s - rmst_r, "std_error": math.hypot(se_s, se_r)}))
    _landmark_tests(col, curves, "survival", subject, site, horizon, th)
    medians = {k: survival.median_survival(v) for k, v in curves.items()}
    col.checks.append(info("survival", "median (days)", subject,
                           medians["synthetic"]["median"], site=site, details=medians))
    return {k: _thin(v).rename({"survival": "value"}) for k, v in curves.items()}


def _hazard_ratio_checks(col: _Collector, endpoint: Endpoint, syn: pl.DataFrame,
                         ref: pl.DataFrame, covariates: list[str]) -> None:
    constant = [c for c in covariates if syn.get_column(c).n_unique() < 2]
    if constant:  # e.g. a cohort sampled for one site: no hazard ratio of it to compare
        col.checks.append(info(
            "hazard ratios", "log HR (not evaluable)", endpoint.name, None,
            details={"reason": f"synthetic: covariate(s) {constant} do not vary in the "
                               "synthetic cohort; their hazard ratios are not compared",
                     "covariates": constant}))
        covariates = [c for c in covariates if c not in constant]
    if not covariates:
        return
    fits = {}
    for label, frame in (("reference", ref), ("synthetic", syn)):
        try:
            fits[label] = survival.cox_hazard_ratios(frame, "time", "status", covariates,
                                                     max_rows=COX_ROWS)
        except survival.CoxConvergenceError as error:
            # Not evaluable where the reference itself has no Cox fit; a failure where only
            # the synthetic cohort lacks one. Either way the other checks go on.
            details = {"reason": f"{label}: {error}", "covariates": list(covariates)}
            if label == "reference":
                col.checks.append(info("hazard ratios", "log HR (not evaluable)", endpoint.name,
                                       None, details=details))
            else:
                col.checks.append(Check(
                    "hazard ratios", "log HR (not evaluable)", endpoint.name, None, None,
                    "fail", "the synthetic Cox model converges where the reference's does",
                    details=details))
            return
    table = fits["synthetic"].join(fits["reference"], on="covariate", suffix="_reference")
    for row in table.iter_rows(named=True):
        col.pending.append(_Pending(
            "hazard ratios", f"log HR {row['covariate']}", endpoint.name, None,
            p_value=_z_test_p(row["log_hr"] - row["log_hr_reference"], row["std_error"],
                              row["std_error_reference"]),
            details={"hazard_ratio_synthetic": row["hazard_ratio"],
                     "hazard_ratio_reference": row["hazard_ratio_reference"],
                     "reference_interval": [row["lower_reference"], row["upper_reference"]],
                     "synthetic_interval": [row["lower"], row["upper"]]}))


def _utility_checks(col: _Collector, endpoint: Endpoint, syn, ref, covariates, th, seed) -> None:
    covariates = [c for c in covariates if syn.get_column(c).n_unique() > 1]  # else no fit
    if not covariates or ref.height < 50 or int((ref["status"] == 1).sum()) < 10:
        return
    try:
        result = train_synthetic_test_real(syn, ref, covariates, seed=seed, max_rows=COX_ROWS)
    except survival.CoxConvergenceError as error:
        col.checks.append(info("utility", "train synthetic, test real: C-index gap (not "
                               "evaluable)", endpoint.name, None,
                               details={"reason": str(error), "covariates": list(covariates)}))
        return
    se = result["reference_cv_sd"] / math.sqrt(result["folds"])
    col.pending.append(_Pending(
        "utility", "train synthetic, test real: C-index gap", endpoint.name, None,
        margin=(result["gap"], th.max_concordance_gap, se), details=result))


# -- transitions --------------------------------------------------------------------------------


def _site_rows(frame: pl.DataFrame, site: str | None, keys: list[str],
               values: list[str]) -> pl.DataFrame:
    """Rows of an aggregate table (with a ``site`` column) for one site, or summed over all."""
    if site is not None:
        frame = frame.filter(pl.col("site") == site)
    return frame.group_by(keys).agg(pl.col(v).sum() for v in values).sort(keys)


def _forbidden(moves: pl.DataFrame, allowed: set[tuple[str, str]], site: str | None):
    """[from_state, to_state, count, first_person_ids] of the moves not allowed."""
    if site is not None:
        moves = moves.filter(pl.col("site") == site)
    allowed_frame = pl.DataFrame(
        list(allowed), schema={"from_state": pl.String, "to_state": pl.String}, orient="row")
    return (
        moves.join(allowed_frame, on=["from_state", "to_state"], how="anti")
        .group_by("from_state", "to_state", maintain_order=True)
        .agg(pl.col("count").sum(),
             pl.col("first_person_ids").list.explode(keep_nulls=False, empty_as_null=False)
             .unique(maintain_order=True).head(integrity.SHOWN_IDS))
        .sort("from_state", "to_state")
    )


def _transition_checks(col: _Collector, syn: Aggregates, ref: Aggregates, site: str | None,
                       allowed: set[tuple[str, str]] | None, absorbing: set[str],
                       horizon: float, th: Thresholds) -> dict:
    """Transition checks of one site (or pooled): counts and sojourns from the aggregates,
    state occupation from the person samples (the whole cohorts when in memory)."""
    pair = ["from_state", "to_state"]
    counts = {label: _site_rows(a.transitions, site, pair, ["count"])
              for label, a in (("synthetic", syn), ("reference", ref))}
    allowed = allowed if allowed is not None else transitions.observed_transitions(
        counts["reference"])
    forbidden = _forbidden(syn.transitions, allowed, site)
    col.checks.append(judge(
        "transitions", "forbidden transitions", "all moves", float(forbidden["count"].sum()), 0.0,
        site=site, rule="moves never allowed (or never seen in the reference) must number 0",
        details={"moves": forbidden.to_dicts()}))
    for row in transitions.compare_jump_chains(counts["synthetic"],
                                               counts["reference"]).iter_rows(named=True):
        origin = f"from {row['from_state']}"
        if row["p_value"] is None:
            col.checks.append(info("transitions", "jump chain", origin, None, site=site,
                                   details=row))
            continue
        col.pending.append(_Pending("transitions", "jump chain G-test", origin, site,
                                    p_value=row["p_value"], details=row))
        # Noise in total variation: at most sqrt(k - 1) / 2 times the SE of one proportion.
        se = 0.5 * math.sqrt(max(row["dof"], 1) * (1 / row["n_synthetic"]
                                                   + 1 / row["n_reference"]))
        col.pending.append(_Pending(
            "transitions", "jump chain total variation", origin, site,
            margin=(row["total_variation"], th.max_total_variation, se), details=row))
    transient = ~pl.col("state").is_in(sorted(absorbing))
    stays = [_site_rows(a.sojourns.filter(transient), site, ["state", "duration"], ["d", "c"])
             for a in (syn, ref)]
    for row in transitions.compare_sojourn_counts(*stays).iter_rows(named=True):
        subject = f"sojourn in {row['state']}"
        ratio = (row["median_synthetic"] / row["median_reference"]
                 if row["median_synthetic"] and row["median_reference"] else None)
        if ratio is not None and math.isfinite(ratio) and row["completed_synthetic"] and (
                row["completed_reference"]):
            # log median ~ 1/sqrt(events) for exponential-like stays.
            se = math.sqrt(1 / row["completed_synthetic"] + 1 / row["completed_reference"])
            col.pending.append(_Pending(
                "transitions", "median sojourn |log ratio|", subject, site,
                margin=(abs(math.log(ratio)), math.log(th.max_sojourn_median_ratio), se),
                details={**row, "ratio": ratio}))
        if row["ks_p_value"] is not None:
            col.pending.append(_Pending("transitions", "sojourn KS test", subject, site,
                                        p_value=row["ks_p_value"], details=row))
    grid = np.linspace(0, horizon, 61)
    samples = {label: _subset(_states_only(a.sample), site)
               for label, a in (("synthetic", syn), ("reference", ref))}
    occupation = {k: transitions.state_occupation(c, grid) for k, c in samples.items()}
    # A proportion's SE is at most 1 / (2 sqrt(n)), n = persons still informative at horizon.
    informative = [_informative_persons(c, horizon) for c in samples.values()]
    se = 0.5 * math.sqrt(sum(1 / max(n, 1) for n in informative))
    col.pending.append(_Pending(
        "transitions", "state occupation max difference", "all states", site,
        margin=(transitions.occupation_difference(occupation["synthetic"],
                                                  occupation["reference"]),
                th.max_occupation_difference, se),
        details={"grid_points": grid.size, "informative_persons": informative,
                 "sampled": syn.sample_fraction is not None and syn.sample_fraction < 1}))
    return {"counts": counts, "samples": samples, "occupation": occupation}


def _informative_persons(cohort: Cohort, horizon: float) -> int:
    """Persons followed to ``horizon`` or absorbed before it: those whose state is known."""
    persons = cohort.persons
    return int(((persons["followup_end"] >= horizon)
                | persons["exit"].is_in(list(transitions.ABSORBED_EXITS))).sum())


def _capped(values: pl.Series, rng: np.random.Generator) -> pl.Series:
    if values.len() <= SAMPLE_CAP:
        return values
    return values.gather(np.sort(rng.choice(values.len(), SAMPLE_CAP, replace=False)))


def _person_sample(cohort: Cohort, rng: np.random.Generator) -> Cohort:
    """At most SAMPLE_CAP persons drawn at random, with their events (shown figures only)."""
    if cohort.n_persons <= SAMPLE_CAP:
        return cohort
    rows = np.sort(rng.choice(cohort.n_persons, SAMPLE_CAP, replace=False))
    persons = cohort.persons[rows]
    events = cohort.events.join(persons.select("person_id"), on="person_id", how="semi")
    return Cohort(persons, events, cohort.manifest, check=False)


def _distribution_info(col: _Collector, syn: Cohort, ref: Cohort, rng) -> None:
    syn, ref = _person_sample(syn, rng), _person_sample(ref, rng)

    def side_by_side(frame_of, column):
        return distributions.compare_samples(
            *(_capped(frame_of(c)[column], rng) for c in (syn, ref)))

    per_person = side_by_side(distributions.events_per_person, "n_events")
    col.checks.append(info("distributions", "events per person (mean)", "all events",
                           per_person["mean_a"], details=per_person))
    gap = side_by_side(distributions.gaps, "gap")
    col.checks.append(info("distributions", "days between events (median)", "all events",
                           gap["median_a"], details=gap))
    rates = distributions.visit_rates(syn).join(
        distributions.visit_rates(ref), on=["code", "state"], how="full", suffix="_reference",
        coalesce=True)
    for row in rates.iter_rows(named=True):
        col.checks.append(info("distributions", "visits per person-year",
                               f"{row['code']} in {row['state']}", row["rate"], details=row))
    measures = distributions.measurement_summary(syn).join(
        distributions.measurement_summary(ref), on=["code", "state"], how="full",
        suffix="_reference", coalesce=True)
    for row in measures.iter_rows(named=True):
        col.checks.append(info("distributions", "measurement mean",
                               f"{row['code']} in {row['state']}", row["mean"], details=row))


def _followup_checks(col: _Collector, syn: Cohort, ref: Cohort, sites: list[str], rng) -> None:
    """Index dates and censored follow-up ends: KS tests on (a seeded sample of at most
    SAMPLE_CAP) persons, pooled and per site, judged like the sojourn KS tests."""
    persons = [followup.capped(c.persons, SAMPLE_CAP, rng) for c in (syn, ref)]
    for test in followup.followup_tests(*persons, sites):
        if test.p_value is None:
            col.checks.append(info("follow-up", test.name, test.subject, None, site=test.site,
                                   details=test.details))
        else:
            col.pending.append(_Pending("follow-up", test.name, test.subject, test.site,
                                        p_value=test.p_value, details=test.details))


# -- entry point ----------------------------------------------------------------------------------


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
    executor: str = "local",
    workers: int | str = 1,
    scheduler: str | None = None,
) -> Report:
    """Compare a synthetic cohort with a reference cohort (or published figures).

    ``endpoints`` default to overall survival and event-free survival derived from the
    reference's states (without a death state: time out of the initial state and the
    cumulative incidence of each next state; the report's notes say which);
    ``allowed_transitions`` default to the moves seen in the reference.
    A partitioned ``synthetic`` cohort (:func:`trajectories.simulate.sharded.read_partitioned`)
    is read block by block and never whole (``executor``/``workers``/``scheduler`` as in
    :func:`trajectories.parallel.run_blocks`): integrity, survival, transition and sojourn
    checks come from additive per-block aggregates, exactly as in memory; Cox models, the
    utility check, state occupation and the descriptive figures use a random sample of about
    ``SAMPLE_CAP`` persons. ``resolution`` (days) rounds endpoint times and sojourn durations
    of both sides up to that grid before counting; "auto" rounds to whole days for partitioned
    cohorts above :data:`validation.lazy.AUTO_RESOLUTION_PERSONS` persons (keeping the
    aggregates small) and keeps times exact otherwise.
    """
    th = thresholds or Thresholds()
    if isinstance(reference, PublishedFigures):
        from validation.published_checks import compare_published

        return compare_published(synthetic, reference, thresholds=th, seed=seed,
                                 figures=figures, executor=executor, workers=workers,
                                 scheduler=scheduler)
    rng = np.random.default_rng(seed)
    col = _Collector()
    states = _state_names(reference)
    absorbing = transitions.infer_absorbing_states(reference)
    context = {
        "synthetic": f"{synthetic.n_persons:,} persons "
                     f"({synthetic.manifest.generator}, scenario "
                     f"{synthetic.manifest.scenario_name}, seed {synthetic.manifest.seed})",
        "reference": f"{reference.n_persons:,} persons ({reference.manifest.generator})",
    }
    notes: list[str] = []
    if endpoints is not None:
        endpoints = list(endpoints)
    else:
        deaths, initial = death_states(reference), _initial_states(reference)
        following = [] if deaths else next_states(reference)
        endpoints = default_endpoints(
            [s for s in states if s not in absorbing] + sorted(absorbing), deaths,
            initial=initial, next_states=None if deaths else following)
        notes.append(default_endpoints_note(endpoints, deaths, initial, following))
    resolution = _resolution(resolution, synthetic)
    syn = _synthetic_aggregates(synthetic, endpoints, absorbing, resolution, seed,
                                executor=executor, workers=workers, scheduler=scheduler)
    if isinstance(synthetic, PartitionedCohort):
        context["synthetic read"] = (
            f"block by block ({synthetic.n_blocks} blocks); Cox, utility, state occupation "
            f"and distributions on a random sample of {syn.sample.n_persons:,} persons")
    if resolution is not None:
        context["resolution (days)"] = f"{resolution:g} (times rounded up before counting)"

    for result in syn.integrity:
        col.checks.append(judge("integrity", result.name, "synthetic", float(result.n_persons),
                                0.0, rule=result.description, details=result.to_dict()))
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
        for side, aggregates in (("synthetic", syn), ("reference", ref)):
            if aggregates.tallies[endpoint.name].get_column("count").sum() == 0:
                raise EndpointError(f"endpoint {endpoint.name!r}: no person of the {side} "
                                    f"cohort enters the origin state {endpoint.origin!r}")
        panels = {}
        for site in [None, *sites]:
            syn_tally, ref_tally = (
                _site_rows(a.tallies[endpoint.name], site, ["time", "status"], ["count"])
                for a in (syn, ref))
            if syn_tally.is_empty() or ref_tally.is_empty():
                continue
            panels[f"{endpoint.name}: {site or 'pooled'}"] = _survival_checks(
                col, endpoint, site, syn_tally, ref_tally, horizon, th, rng)
        if not endpoint.competing:
            syn_rows, ref_rows = (endpoint_times(c, endpoint) for c in (syn.sample, reference))
            _hazard_ratio_checks(col, endpoint, syn_rows, ref_rows,
                                 _shared_covariates(syn.sample, reference, ref_rows))
        if figures and panels:
            label = "cumulative incidence" if endpoint.competing else "survival"
            col.figures[f"{endpoint.name}: {label}, synthetic vs reference"] = plots.step_curves(
                panels, "value", label)
    main = next((e for e in endpoints if not e.competing), None)
    if main is not None:
        ref_main = endpoint_times(reference, main)
        _utility_checks(col, main, endpoint_times(syn.sample, main), ref_main,
                        _shared_covariates(syn.sample, reference, ref_main), th, seed)

    pooled = None
    for site in [None, *sites]:
        result = _transition_checks(col, syn, ref, site, allowed_transitions, absorbing,
                                    horizon, th)
        if site is None:
            pooled = result
    _distribution_info(col, syn.sample, reference, rng)
    _followup_checks(col, syn.sample, reference, sites, rng)
    level = col.resolve(th.alpha)
    context |= {"tests sharing alpha": f"{len(col.pending)} (each at {level:.2g})"}

    if figures and pooled is not None:
        transient = [s for s in states if s not in absorbing]
        col.figures["Jump chain: synthetic vs reference"] = plots.transition_heatmaps(
            {k: transitions.jump_chain(v) for k, v in pooled["counts"].items()},
            transient + sorted(absorbing))
        col.figures["Sojourn times (completed stays)"] = plots.sojourn_histograms(
            {k: transitions.sojourn_times(v, absorbing).filter(pl.col("completed"))
             for k, v in pooled["samples"].items()}, transient)
        col.figures["State occupation probabilities"] = plots.occupation_curves(
            pooled["occupation"], states)
    return Report(col.checks, col.figures, context, notes)


def _resolution(resolution: float | None | str, synthetic: Cohort | PartitionedCohort):
    if isinstance(synthetic, PartitionedCohort):
        return lazy.auto_resolution(resolution, synthetic.n_persons)
    return None if resolution == "auto" else resolution


def _synthetic_aggregates(synthetic: Cohort | PartitionedCohort, endpoints: list[Endpoint],
                          absorbing: set[str], resolution: float | None, seed: int,
                          **parallel) -> Aggregates:
    """The synthetic side's aggregates with integrity results and a person sample: in one
    pass over the blocks of a partitioned cohort, or of the cohort in memory (its own sample)."""
    if isinstance(synthetic, PartitionedCohort):
        return lazy.aggregate(synthetic, endpoints, ("site",), resolution,
                              integrity_absorbing=absorbing, sample_size=SAMPLE_CAP, seed=seed,
                              **parallel)
    return lazy.block_aggregates(synthetic, endpoints, ("site",), resolution,
                                 integrity_absorbing=absorbing, sample_fraction=1.0)
