"""Survival checks of one endpoint from the two sides' [time, event, count] tallies, pooled
and per judged site: the Kaplan-Meier sup distance with its bootstrap critical value, the
log-rank test, the RMST difference (Royston & Parmar 2013), landmark values and the median;
for a competing-risk endpoint the Aalen-Johansen cumulative incidence at the landmarks.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from trajectories.errors import EndpointError
from validation import survival, two_sample
from validation.collect import BootstrapDistance, Collector, Pending
from validation.endpoints import Endpoint
from validation.lazy import Aggregates, site_rows
from validation.report import info, plots
from validation.thresholds import Thresholds

DISTANCE_GRID = 400
"""Kaplan-Meier distances are tested on times coarsened to this many pooled event quantiles,
which keeps the bootstrap cheap at any cohort size (the same grid serves both curves)."""

Panels = dict[str, dict[str, pl.DataFrame]]
"""Figure panel title -> side ("synthetic", "reference") -> thinned curve with a value column."""


def endpoint_checks(col: Collector, endpoint: Endpoint, syn: Aggregates, ref: Aggregates,
                    sites: list[str], horizon: float, th: Thresholds,
                    rng: np.random.Generator) -> Panels:
    """The endpoint's survival checks, pooled then per site (a site missing on either side is
    skipped); returns the curves to draw."""
    for side, aggregates in (("synthetic", syn), ("reference", ref)):
        if aggregates.tallies[endpoint.name].get_column("count").sum() == 0:
            raise EndpointError(f"endpoint {endpoint.name!r}: no person of the {side} "
                                f"cohort enters the origin state {endpoint.origin!r}")
    panels = {}
    for site in [None, *sites]:
        syn_tally, ref_tally = (
            site_rows(a.tallies[endpoint.name], site, ["time", "event"], ["count"])
            for a in (syn, ref))
        if syn_tally.is_empty() or ref_tally.is_empty():
            continue
        panels[f"{endpoint.name}: {site or 'pooled'}"] = tally_checks(
            col, endpoint, site, syn_tally, ref_tally, horizon, th, rng)
    return panels


def curves_figure(endpoint: Endpoint, panels: Panels) -> dict[str, str]:
    """The endpoint's curves, synthetic against reference, one panel per site: {title: PNG}."""
    label = "cumulative incidence" if endpoint.competing else "survival"
    return {f"{endpoint.name}: {label}, synthetic vs reference": plots.step_curves(
        panels, "value", label)}


def tally_checks(col: Collector, endpoint: Endpoint, site: str | None, syn: pl.DataFrame,
                 ref: pl.DataFrame, horizon: float, th: Thresholds,
                 rng: np.random.Generator) -> dict[str, pl.DataFrame]:
    """Survival checks of one endpoint (and site) from the two sides' [time, event, count]
    tallies; returns the two thinned curves."""
    subject = endpoint.name
    if endpoint.competing:
        curves = {
            label: survival.aalen_johansen_from_counts(t, cause=1)
            for label, t in (("synthetic", syn), ("reference", ref))
        }
        _landmark_tests(col, curves, "cumulative incidence", subject, site, horizon, th)
        gap = two_sample.max_vertical_distance(curves["synthetic"], curves["reference"],
                                               horizon)
        col.checks.append(info("survival", "max cumulative incidence difference", subject, gap,
                               site=site))
        return {k: _thin(v).rename({"cumulative_incidence": "value"}) for k, v in curves.items()}

    syn, ref = (t.with_columns((pl.col("event") == 1).cast(pl.Int8).alias("event"))
                for t in (syn, ref))
    curves = {"synthetic": survival.kaplan_meier_from_counts(syn),
              "reference": survival.kaplan_meier_from_counts(ref)}
    col.pending.append(_distance_test(curves, syn, ref, subject, site, horizon, rng))
    statistic, p = two_sample.logrank_from_counts(syn, ref)
    col.pending.append(Pending("survival", "log-rank", subject, site, p_value=p,
                               details={"chi_square": statistic}))
    (rmst_s, se_s), (rmst_r, se_r) = (survival.rmst(curves[k], horizon)
                                      for k in ("synthetic", "reference"))
    col.pending.append(Pending(
        "survival", f"RMST difference at {horizon:.0f} d", subject, site,
        p_value=two_sample.z_test_p(rmst_s - rmst_r, se_s, se_r),
        details={"rmst_synthetic": rmst_s, "rmst_reference": rmst_r,
                 "difference_days": rmst_s - rmst_r, "std_error": math.hypot(se_s, se_r)}))
    _landmark_tests(col, curves, "survival", subject, site, horizon, th)
    medians = {k: survival.median_survival(v) for k, v in curves.items()}
    col.checks.append(info("survival", "median (days)", subject,
                           medians["synthetic"]["median"], site=site, details=medians))
    return {k: _thin(v).rename({"survival": "value"}) for k, v in curves.items()}


def _distance_test(curves: dict[str, pl.DataFrame], syn: pl.DataFrame, ref: pl.DataFrame,
                   subject: str, site: str | None, horizon: float,
                   rng: np.random.Generator) -> Pending:
    """The Kaplan-Meier sup distance on the pooled event-quantile grid, its critical value
    bootstrapped once the level is known (seeded now, from ``rng``)."""
    quantiles = event_quantiles(pl.concat([syn, ref]), DISTANCE_GRID)
    grid = np.unique(np.append(quantiles, np.inf))
    coarse_syn, coarse_ref = coarsened(syn, grid), coarsened(ref, grid)
    coarse_distance = two_sample.max_vertical_distance(
        survival.kaplan_meier_from_counts(coarse_syn),
        survival.kaplan_meier_from_counts(coarse_ref), horizon)
    seed = int(rng.integers(2**31))

    def threshold_at(level: float, n_boot: int) -> float:
        return two_sample.distance_threshold_from_counts(
            coarse_syn, coarse_ref, alpha=level, n_boot=n_boot,
            rng=np.random.default_rng(seed), horizon=horizon)

    return Pending(
        "survival", "Kaplan-Meier max distance", subject, site,
        distance=BootstrapDistance(coarse_distance, threshold_at),
        details={"exact_distance": two_sample.max_vertical_distance(
            curves["synthetic"], curves["reference"], horizon), "horizon_days": horizon,
            "grid_points": int(grid.size)})


def _landmark_tests(col: Collector, curves: dict, label: str, subject: str, site: str | None,
                    horizon: float, th: Thresholds) -> None:
    """Curve values at the landmarks (up to the horizon): a z-test of their difference."""
    for t in th.landmark_days:
        if t > horizon:
            continue
        a, b = (survival.survival_at(curves[k], t) for k in ("synthetic", "reference"))
        col.pending.append(Pending(
            "survival", f"{label} at {t:g} d", subject, site,
            p_value=two_sample.z_test_p(a["value"] - b["value"], a["std_error"],
                                        b["std_error"]),
            details={"synthetic": a, "reference": b}))


def event_quantiles(tally: pl.DataFrame, points: int) -> np.ndarray:
    """``np.quantile`` (linear) of the event times a [time, event, count] tally counts, at
    ``points`` evenly spaced levels: the same values as on the expanded times."""
    events = tally.filter(pl.col("event") == 1).group_by("time").agg(pl.col("count").sum())
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


def coarsened(tally: pl.DataFrame, grid: np.ndarray) -> pl.DataFrame:
    """A tally with each time moved up to the next grid point (the grid's last one is +inf)."""
    moved = grid[np.searchsorted(grid, tally.get_column("time").to_numpy(), side="left")]
    return tally.with_columns(pl.Series("time", moved)).group_by("time", "event").agg(
        pl.col("count").sum())


def _thin(curve: pl.DataFrame, points: int = 1500) -> pl.DataFrame:
    if curve.height <= points:
        return curve
    rows = np.unique(np.linspace(0, curve.height - 1, points).astype(int))
    return curve[rows]
