"""Survival estimators for validation: Kaplan-Meier (Kaplan & Meier 1958, Greenwood
variance), Aalen-Johansen cumulative incidence (Aalen & Johansen 1978), landmark values,
medians and RMST.

Estimators work on one row per distinct time (polars group-by on the sorted times, then
cumulative sums), never on rows one by one, so ten million persons take seconds. Values
follow lifelines' conventions (the row at time 0, Greenwood variance, log(-log) intervals) so
that they can be checked against it. Inputs follow :mod:`validation.survival_data`. Curves are
polars frames. The ``*_from_counts`` estimators take the same data as tallies per
(time, event) (:func:`tally`); tallies of disjoint parts of a cohort can simply be stacked,
so a cohort too large for memory is estimated part by part, with the same curves.

Two-sample tests and distances live in :mod:`validation.two_sample`, Cox regression in
:mod:`validation.cox`; their names are re-exported here for one release.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from trajectories.errors import CoxConvergenceError, SurvivalDataError
from validation.cox import COX_MAX_ROWS, cox_hazard_ratios, design_matrix
from validation.survival_data import (
    ArrayLike,
    checked_tallies,
    estimate_column,
    survival_rows,
    tally,
    z_critical,
)
from validation.two_sample import (
    distance_threshold,
    distance_threshold_from_counts,
    logrank,
    logrank_from_counts,
    max_vertical_distance,
)

__all__ = [
    "COX_MAX_ROWS", "ArrayLike", "CoxConvergenceError", "SurvivalDataError", "aalen_johansen",
    "aalen_johansen_from_counts", "cox_hazard_ratios", "design_matrix", "distance_threshold",
    "distance_threshold_from_counts", "kaplan_meier", "kaplan_meier_from_counts", "logrank",
    "logrank_from_counts", "max_vertical_distance", "median_survival", "rmst",
    "rmst_difference", "survival_at", "tally",
]


def _event_table(frame: pl.DataFrame, cause: int | None = None) -> pl.DataFrame:
    """One row per distinct time, and a row at time 0: at_risk, removed, events (any nonzero
    event), censored and, with ``cause``, cause_events. The fast path: sort, group, sums.
    ``frame`` holds one row per observation, or tallies with a ``count`` column."""
    if "count" in frame.columns:
        weight = pl.col("count")
        aggregates = [weight.sum().alias("removed"),
                      weight.filter(pl.col("event") != 0).sum().alias("events")]
        if cause is not None:
            aggregates.append(weight.filter(pl.col("event") == cause).sum().alias(
                "cause_events"))
        total = int(frame.get_column("count").sum())
    else:
        aggregates = [pl.len().alias("removed"), (pl.col("event") != 0).sum().alias("events")]
        if cause is not None:
            aggregates.append((pl.col("event") == cause).sum().alias("cause_events"))
        total = frame.height
    table = (
        frame.lazy()
        .sort("time")
        .group_by("time", maintain_order=True)
        .agg(aggregates)
        .with_columns(pl.exclude("time").cast(pl.Int64))
        .collect()
    )
    if table.item(0, "time") > 0:  # lifelines always reports time 0, before anything happened
        zero = pl.DataFrame({"time": [0.0]}).with_columns(
            pl.lit(0, pl.Int64).alias(name) for name in table.columns[1:]
        )
        table = pl.concat([zero, table])
    removed = pl.col("removed")
    return table.with_columns(
        (total - removed.cum_sum().shift(1, fill_value=0)).alias("at_risk"),
        (removed - pl.col("events")).alias("censored"),
    )


def _log_log_bounds(estimate: np.ndarray, se_log_log: np.ndarray, z: float) -> tuple:
    """Bounds ``estimate ** exp(+-z se)`` from a log(-log) scale standard error."""
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = np.log(-np.log(estimate))
        a = np.exp(-np.exp(centre - z * se_log_log))
        b = np.exp(-np.exp(centre + z * se_log_log))
    return np.minimum(a, b), np.maximum(a, b)


# -- Kaplan-Meier -------------------------------------------------------------------------------


def kaplan_meier(time: ArrayLike, event: ArrayLike, alpha: float = 0.05) -> pl.DataFrame:
    """Kaplan-Meier curve: one row per distinct time, starting at time 0.

    Columns: time, at_risk, events, censored, survival, std_error (Greenwood, on S), lower,
    upper (1 - alpha, exponential Greenwood / log(-log) bounds as in lifelines). ``event`` is
    1 for an event, 0 for censoring. Equals lifelines' ``survival_function_`` and
    ``confidence_interval_`` on the same timeline.
    """
    z = z_critical(alpha)
    return _kaplan_meier_curve(_event_table(survival_rows(time, event, "binary")), z)


def kaplan_meier_from_counts(counts: pl.DataFrame, alpha: float = 0.05) -> pl.DataFrame:
    """:func:`kaplan_meier` from [time, event, count] tallies (event 1, censored 0;
    a (time, event) may repeat): the same curve as from the rows they count."""
    z = z_critical(alpha)
    return _kaplan_meier_curve(_event_table(checked_tallies(counts, "binary")), z)


def _kaplan_meier_curve(table: pl.DataFrame, z: float) -> pl.DataFrame:
    n, d = pl.col("at_risk"), pl.col("events")
    curve = (
        table
        .lazy()
        .with_columns(
            ((n - d).cast(pl.Float64).log() - n.cast(pl.Float64).log()).cum_sum().alias("_log_s"),
            pl.when(n > d)
            .then(d / (n * (n - d)).cast(pl.Float64))
            .otherwise(0.0)
            .cum_sum()
            .alias("_greenwood"),
        )
        .with_columns(pl.col("_log_s").exp().alias("survival"))
        .collect()
    )
    log_s = curve.get_column("_log_s").to_numpy()
    greenwood = curve.get_column("_greenwood").to_numpy()
    survival = curve.get_column("survival").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = z * np.sqrt(greenwood) / log_s
        lower = np.exp(-np.exp(np.log(-log_s) - spread))
        upper = np.exp(-np.exp(np.log(-log_s) + spread))
    return curve.select(
        "time",
        "at_risk",
        "events",
        "censored",
        "survival",
        pl.Series("std_error", survival * np.sqrt(greenwood)),
        pl.Series("lower", np.nan_to_num(lower, nan=1.0)),
        pl.Series("upper", np.nan_to_num(upper, nan=1.0)),
    )


# -- Aalen-Johansen -----------------------------------------------------------------------------


def aalen_johansen(
    time: ArrayLike, event: ArrayLike, cause: int = 1, alpha: float = 0.05
) -> pl.DataFrame:
    """Cumulative incidence of ``cause`` with every other nonzero code as a competing event.

    Columns: time, at_risk, events (of ``cause``), competing, censored, cumulative_incidence,
    std_error, lower, upper. CIF(t) = sum over times <= t of S(t-) d_cause / n, where S is the
    Kaplan-Meier curve of any event. The variance is the Greenwood-type delta-method formula
    of Collett (pg 411) that lifelines' AalenJohansenFitter uses, with log(-log) bounds.
    Unlike lifelines, tied times of different causes are used as they are (no jitter), and
    events at time 0 count.
    """
    z = z_critical(alpha)
    return _aalen_johansen_curve(_event_table(survival_rows(time, event, "codes"), cause=cause), z)


def aalen_johansen_from_counts(
    counts: pl.DataFrame, cause: int = 1, alpha: float = 0.05
) -> pl.DataFrame:
    """:func:`aalen_johansen` from [time, event, count] tallies (a (time, event) may
    repeat): the same curve as from the rows they count."""
    z = z_critical(alpha)
    return _aalen_johansen_curve(_event_table(checked_tallies(counts, "codes"), cause=cause), z)


def _aalen_johansen_curve(table: pl.DataFrame, z: float) -> pl.DataFrame:
    n = table.get_column("at_risk").to_numpy().astype(np.float64)
    d = table.get_column("events").to_numpy().astype(np.float64)
    dk = table.get_column("cause_events").to_numpy().astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n > 0, 1.0 - d / n, 1.0)
        survival = np.cumprod(factor)
        lag_s = np.concatenate([[1.0], survival[:-1]])
        jump = np.where(n > 0, lag_s * dk / n, 0.0)
        cif = np.cumsum(jump)
        # Var F(t) = sum_i a_i (F - F_i)^2 + b_i - 2 c_i (F - F_i), expanded into cumulative sums
        a = np.where(n > d, d / (n * (n - d)), 0.0)
        b = np.where(n > 0, lag_s**2 * dk * (n - dk) / n**3, 0.0)
        c = np.where(n > 0, lag_s * dk / n**2, 0.0)
    variance = (
        cif**2 * np.cumsum(a)
        - 2 * cif * np.cumsum(a * cif)
        + np.cumsum(a * cif**2)
        + np.cumsum(b)
        - 2 * (cif * np.cumsum(c) - np.cumsum(c * cif))
    )
    std_error = np.sqrt(np.maximum(variance, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        se_log_log = std_error / (cif * np.abs(np.log(cif)))
    lower, upper = _log_log_bounds(cif, se_log_log, z)
    lower = np.where(cif <= 0, 0.0, np.where(cif >= 1, 1.0, lower))
    upper = np.where(cif <= 0, 0.0, np.where(cif >= 1, 1.0, upper))
    return table.select(
        "time",
        "at_risk",
        pl.col("cause_events").alias("events"),
        (pl.col("events") - pl.col("cause_events")).alias("competing"),
        "censored",
        pl.Series("cumulative_incidence", cif),
        pl.Series("std_error", std_error),
        pl.Series("lower", lower),
        pl.Series("upper", upper),
    )


def survival_at(curve: pl.DataFrame, t: float) -> dict[str, float]:
    """The step function's value at ``t`` with its std_error and bounds.

    Works on Kaplan-Meier (survival) and Aalen-Johansen (cumulative incidence) curves; returns
    ``{"time", "value", "std_error", "lower", "upper"}``. Before the first row the value is
    the curve's start (1 for survival, 0 for incidence) with no uncertainty.
    """
    column = estimate_column(curve)
    times = curve.get_column("time").to_numpy()
    row = int(np.searchsorted(times, t, side="right")) - 1
    if row < 0:
        start = 1.0 if column == "survival" else 0.0
        return {"time": float(t), "value": start, "std_error": 0.0, "lower": start,
                "upper": start}
    values = curve.row(row, named=True)
    return {
        "time": float(t),
        "value": float(values[column]),
        "std_error": float(values["std_error"]),
        "lower": float(values["lower"]),
        "upper": float(values["upper"]),
    }


def _first_time_at_or_below(times: np.ndarray, values: np.ndarray, q: float) -> float:
    below = np.flatnonzero(values <= q)
    return float(times[below[0]]) if below.size else math.inf


def median_survival(curve: pl.DataFrame) -> dict[str, float]:
    """Median survival with its confidence interval, as lifelines computes them.

    The median is the first time the curve is <= 0.5 (inf if it never is); the interval is
    where the lower and upper confidence curves first reach 0.5 (lifelines'
    ``median_survival_times(kmf.confidence_interval_)``). Returns ``{"median", "lower",
    "upper"}``.
    """
    if "survival" not in curve.columns:
        raise SurvivalDataError("median_survival: needs a Kaplan-Meier curve ('survival')")
    times = curve.get_column("time").to_numpy()
    return {
        name: _first_time_at_or_below(times, curve.get_column(column).to_numpy(), 0.5)
        for name, column in (("median", "survival"), ("lower", "lower"), ("upper", "upper"))
    }


def rmst(curve: pl.DataFrame, horizon: float) -> tuple[float, float]:
    """Restricted mean survival time up to ``horizon`` and its standard error.

    The value is the exact area under the Kaplan-Meier step function on [0, horizon] (as
    lifelines.utils.restricted_mean_survival_time on a fitted KaplanMeierFitter; the last
    value is carried on when the curve ends before ``horizon``). The variance is the
    Greenwood-type (Klein & Moeschberger 4.5) sum over event times t_j <= horizon of
    A_j^2 d_j / (n_j (n_j - d_j)), with A_j the area under the curve from t_j to horizon.
    """
    if "survival" not in curve.columns:
        raise SurvivalDataError("rmst: needs a Kaplan-Meier curve ('survival')")
    if not horizon > 0 or not math.isfinite(horizon):
        raise SurvivalDataError(f"rmst: horizon must be a finite number of days > 0, got {horizon}")
    within = curve.filter(pl.col("time") <= horizon)
    times = within.get_column("time").to_numpy()
    survival = within.get_column("survival").to_numpy()
    widths = np.diff(np.append(times, horizon))
    pieces = survival * widths
    value = float(pieces.sum())
    area_after = value - (np.cumsum(pieces) - pieces)  # area from t_j to horizon
    n = within.get_column("at_risk").to_numpy().astype(np.float64)
    d = within.get_column("events").to_numpy().astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(n > d, area_after**2 * d / (n * (n - d)), 0.0)
    return value, float(math.sqrt(terms.sum()))


def rmst_difference(
    curve_a: pl.DataFrame, curve_b: pl.DataFrame, horizon: float, alpha: float = 0.05
) -> tuple[float, float, float]:
    """RMST(a) - RMST(b) up to ``horizon`` with a normal 1 - alpha interval (independent
    samples): ``(difference, lower, upper)``."""
    z = z_critical(alpha)
    value_a, se_a = rmst(curve_a, horizon)
    value_b, se_b = rmst(curve_b, horizon)
    diff, se = value_a - value_b, math.hypot(se_a, se_b)
    return diff, diff - z * se, diff + z * se

