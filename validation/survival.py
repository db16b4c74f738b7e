"""Survival estimators for validation: Kaplan-Meier, Aalen-Johansen, RMST, log-rank, Cox.

Estimators work on one row per distinct time (polars group-by on the sorted times, then
cumulative sums), never on rows one by one, so ten million persons take seconds. Values
follow lifelines' conventions (the row at time 0, Greenwood variance, log(-log) intervals) so
that they can be checked against it. Inputs are polars Series (numpy arrays and lists work
too): ``time`` in days >= 0 (+inf allowed when censored), ``event``/``status`` integer codes.
Curves are polars frames. The ``*_from_counts`` estimators take the same data as tallies per
(time, status) (:func:`tally`); tallies of disjoint parts of a cohort can simply be stacked,
so a cohort too large for memory is estimated part by part, with the same curves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from scipy import stats

from trajectories.errors import TrajectoriesError

ArrayLike = pl.Series | np.ndarray | Sequence[float]

COX_MAX_ROWS = 200_000
"""Above this many rows Cox models are fitted on a seeded random subsample of this size.

lifelines' Efron fit loops in Python over distinct event times: 200,000 rows with continuous
times take 9-15 s on 2 (shared) cores, 1,000,000 take ~80 s (measured, lifelines 0.30). The
subsample keeps a 1M-person cohort at the 200k cost; its standard errors are those of 200k.
"""


class SurvivalDataError(TrajectoriesError):
    """Survival data handed to an estimator is unusable (negative time, bad codes, ...)."""


class CoxConvergenceError(SurvivalDataError):
    """A Cox model could not be fitted (collinear covariates, perfect separation...): the
    checks resting on it are not evaluable, the rest of a validation goes on."""


# -- inputs -------------------------------------------------------------------------------------


def _column(values: ArrayLike, name: str, dtype: pl.DataType) -> pl.Series:
    series = values if isinstance(values, pl.Series) else pl.Series(values=np.asarray(values))
    if series.null_count():
        raise SurvivalDataError(f"{name}: {series.null_count()} null value(s); none allowed")
    if series.dtype == pl.Boolean:
        series = series.cast(pl.Int8)
    try:
        return series.cast(dtype, strict=True).rename(name)
    except pl.exceptions.InvalidOperationError:
        raise SurvivalDataError(f"{name}: expected {dtype} values, got {series.dtype}") from None


def _frame(time: ArrayLike, status: ArrayLike, allowed: str) -> pl.DataFrame:
    """A (time, status) frame after checking lengths, values and status codes.

    Times are days >= 0; +inf is accepted for censored rows only (known to be event-free
    at every finite time, e.g. times coarsened past the last grid point).
    """
    t = _column(time, "time", pl.Float64())
    s = _column(status, "status", pl.Int64())
    if t.len() != s.len():
        raise SurvivalDataError(f"time has {t.len()} values but status has {s.len()}")
    if t.len() == 0:
        raise SurvivalDataError("time: no observations")
    if t.is_nan().any() or t.min() < 0 or (t.is_infinite() & (s != 0)).any():
        raise SurvivalDataError(
            "time: values must be >= 0 days from origin, and finite unless censored"
        )
    if allowed == "binary" and not s.is_in([0, 1]).all():
        raise SurvivalDataError("event: values must be 0 (censored) or 1 (event)")
    if allowed == "codes" and s.min() < 0:
        raise SurvivalDataError("status: values must be 0 (censored) or positive cause codes")
    return pl.DataFrame([t, s])


def _tallies(counts: pl.DataFrame, allowed: str) -> pl.DataFrame:
    """A checked [time, status, count] frame: the rules of :func:`_frame` plus counts >= 0."""
    missing = [c for c in ("time", "status", "count") if c not in counts.columns]
    if missing:
        raise SurvivalDataError(
            f"counts: missing column(s) {missing}; expected time, status, count (see tally)"
        )
    checked = _frame(counts.get_column("time"), counts.get_column("status"), allowed)
    count = _column(counts.get_column("count"), "count", pl.Int64())
    if count.min() < 0:
        raise SurvivalDataError("count: values must be >= 0")
    return checked.with_columns(count)


def tally(time: ArrayLike, status: ArrayLike) -> pl.DataFrame:
    """[time, status, count]: how many rows share each (time, status), sorted.

    The additive summary of survival data: the ``*_from_counts`` estimators give the same
    curves from it as the row-level ones, and from tallies of disjoint parts stacked together
    (rows of equal time and status are added up). Compact when times are tied (whole days).
    """
    frame = _frame(time, status, "codes")
    return (
        frame.group_by("time", "status")
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort("time", "status")
    )


def _z(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise SurvivalDataError(f"alpha must be in (0, 1), got {alpha}")
    return float(stats.norm.ppf(1 - alpha / 2))


def _event_table(frame: pl.DataFrame, cause: int | None = None) -> pl.DataFrame:
    """One row per distinct time, and a row at time 0: at_risk, removed, events (any nonzero
    status), censored and, with ``cause``, cause_events. The fast path: sort, group, sums.
    ``frame`` holds one row per observation, or tallies with a ``count`` column."""
    if "count" in frame.columns:
        weight = pl.col("count")
        aggregates = [weight.sum().alias("removed"),
                      weight.filter(pl.col("status") != 0).sum().alias("events")]
        if cause is not None:
            aggregates.append(weight.filter(pl.col("status") == cause).sum().alias(
                "cause_events"))
        total = int(frame.get_column("count").sum())
    else:
        aggregates = [pl.len().alias("removed"), (pl.col("status") != 0).sum().alias("events")]
        if cause is not None:
            aggregates.append((pl.col("status") == cause).sum().alias("cause_events"))
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
    z = _z(alpha)
    return _kaplan_meier_curve(_event_table(_frame(time, event, "binary")), z)


def kaplan_meier_from_counts(counts: pl.DataFrame, alpha: float = 0.05) -> pl.DataFrame:
    """:func:`kaplan_meier` from [time, status, count] tallies (status 1 event, 0 censored;
    a (time, status) may repeat): the same curve as from the rows they count."""
    z = _z(alpha)
    return _kaplan_meier_curve(_event_table(_tallies(counts, "binary")), z)


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
    time: ArrayLike, status: ArrayLike, cause: int = 1, alpha: float = 0.05
) -> pl.DataFrame:
    """Cumulative incidence of ``cause`` with every other nonzero status as a competing event.

    Columns: time, at_risk, events (of ``cause``), competing, censored, cumulative_incidence,
    std_error, lower, upper. CIF(t) = sum over times <= t of S(t-) d_cause / n, where S is the
    Kaplan-Meier curve of any event. The variance is the Greenwood-type delta-method formula
    of Collett (pg 411) that lifelines' AalenJohansenFitter uses, with log(-log) bounds.
    Unlike lifelines, tied times of different causes are used as they are (no jitter), and
    events at time 0 count.
    """
    z = _z(alpha)
    return _aalen_johansen_curve(_event_table(_frame(time, status, "codes"), cause=cause), z)


def aalen_johansen_from_counts(
    counts: pl.DataFrame, cause: int = 1, alpha: float = 0.05
) -> pl.DataFrame:
    """:func:`aalen_johansen` from [time, status, count] tallies (a (time, status) may
    repeat): the same curve as from the rows they count."""
    z = _z(alpha)
    return _aalen_johansen_curve(_event_table(_tallies(counts, "codes"), cause=cause), z)


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


# -- summaries of a curve -----------------------------------------------------------------------


def _estimate_column(curve: pl.DataFrame) -> str:
    for name in ("survival", "cumulative_incidence"):
        if name in curve.columns:
            return name
    raise SurvivalDataError(
        f"curve: expected a 'survival' or 'cumulative_incidence' column, got {curve.columns}"
    )


def survival_at(curve: pl.DataFrame, t: float) -> dict[str, float]:
    """The step function's value at ``t`` with its std_error and bounds.

    Works on Kaplan-Meier (survival) and Aalen-Johansen (cumulative incidence) curves; returns
    ``{"time", "value", "std_error", "lower", "upper"}``. Before the first row the value is
    the curve's start (1 for survival, 0 for incidence) with no uncertainty.
    """
    column = _estimate_column(curve)
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
    z = _z(alpha)
    value_a, se_a = rmst(curve_a, horizon)
    value_b, se_b = rmst(curve_b, horizon)
    diff, se = value_a - value_b, math.hypot(se_a, se_b)
    return diff, diff - z * se, diff + z * se


# -- comparing two samples ----------------------------------------------------------------------


def logrank(
    time_a: ArrayLike, event_a: ArrayLike, time_b: ArrayLike, event_b: ArrayLike
) -> tuple[float, float]:
    """Two-sample log-rank test: ``(chi-square statistic, p value)`` on 1 degree of freedom.

    Hypergeometric variance, as lifelines.statistics.logrank_test.
    """
    return logrank_from_counts(_counted(time_a, event_a), _counted(time_b, event_b))


def _counted(time: ArrayLike, event: ArrayLike) -> pl.DataFrame:
    """Checked binary survival rows as [time, status, count] tallies."""
    return (
        _frame(time, event, "binary")
        .group_by("time", "status")
        .agg(pl.len().cast(pl.Int64).alias("count"))
    )


def logrank_from_counts(counts_a: pl.DataFrame, counts_b: pl.DataFrame) -> tuple[float, float]:
    """:func:`logrank` from the two samples' [time, status, count] tallies (status 1 event)."""
    a, b = _tallies(counts_a, "binary"), _tallies(counts_b, "binary")
    n_total_a = int(a.get_column("count").sum())
    pooled = pl.concat(
        [a.with_columns(pl.lit(1, pl.Int64).alias("in_a")),
         b.with_columns(pl.lit(0, pl.Int64).alias("in_a"))]
    )
    weight = pl.col("count")
    table = (
        pooled.lazy()
        .sort("time")
        .group_by("time", maintain_order=True)
        .agg(
            weight.sum().alias("removed"),
            (weight * pl.col("in_a")).sum().alias("removed_a"),
            (weight * pl.col("status")).sum().alias("d"),
            (weight * pl.col("status") * pl.col("in_a")).sum().alias("d_a"),
        )
        .with_columns(
            (pl.col("removed").sum() - pl.col("removed").cum_sum().shift(1, fill_value=0))
            .alias("n"),
            (n_total_a - pl.col("removed_a").cum_sum().shift(1, fill_value=0)).alias("n_a"),
        )
        .filter(pl.col("d") > 0)
        .collect()
    )
    n = table.get_column("n").to_numpy().astype(np.float64)
    n_a = table.get_column("n_a").to_numpy().astype(np.float64)
    d = table.get_column("d").to_numpy().astype(np.float64)
    d_a = table.get_column("d_a").to_numpy().astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tie_factor = np.where(n > 1, (n - d) / (n - 1), 1.0)
    observed_minus_expected = float(np.sum(d_a - d * n_a / n))
    variance = float(np.sum(tie_factor * d * n_a * (n - n_a) / n**2))
    if variance <= 0:
        raise SurvivalDataError("logrank: no information (no events, or one group is empty)")
    statistic = observed_minus_expected**2 / variance
    return statistic, float(stats.chi2.sf(statistic, 1))


def _step_values(curve: pl.DataFrame, column: str, at: np.ndarray) -> np.ndarray:
    times = curve.get_column("time").to_numpy()
    values = curve.get_column(column).to_numpy()
    rows = np.searchsorted(times, at, side="right") - 1
    start = 1.0 if column == "survival" else 0.0
    return np.where(rows >= 0, values[np.maximum(rows, 0)], start)


def max_vertical_distance(
    curve_a: pl.DataFrame, curve_b: pl.DataFrame, horizon: float | None = None
) -> float:
    """sup over t <= horizon of |S_a(t) - S_b(t)| (or of two incidence curves).

    Both are right-continuous step functions, so the supremum is reached at one of the
    union of their jump times; those are where the curves are compared.
    """
    column = _estimate_column(curve_a)
    if _estimate_column(curve_b) != column:
        raise SurvivalDataError("max_vertical_distance: curves of different kinds")
    at = np.union1d(curve_a.get_column("time").to_numpy(), curve_b.get_column("time").to_numpy())
    if horizon is not None:
        at = at[at <= horizon]
    if at.size == 0:
        return 0.0
    return float(np.max(np.abs(_step_values(curve_a, column, at) -
                                _step_values(curve_b, column, at))))


def _pooled_cells(frame: pl.DataFrame, horizon: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the pooled tallies' distinct (time, status) cells, and which are events.

    Cells are ordered by time and, within a time, the event cell first, so that the draws
    in earlier cells are exactly those that left before that time. Rows beyond ``horizon``
    are merged into one last censored cell: they only ever count as at risk.
    """
    if horizon is not None:
        beyond = pl.col("time") > horizon
        frame = frame.with_columns(
            pl.when(beyond).then(math.inf).otherwise(pl.col("time")).alias("time"),
            pl.when(beyond).then(0).otherwise(pl.col("status")).alias("status"),
        )
    cells = (
        frame.lazy()
        .group_by("time", "status")
        .agg(pl.col("count").sum())
        .filter(pl.col("count") > 0)
        .sort(["time", "status"], descending=[False, True])
        .collect()
    )
    return cells.get_column("count").to_numpy().astype(np.int64), (
        cells.get_column("status").to_numpy() == 1
    )


class _CellBootstrap:
    """Kaplan-Meier curves of samples drawn with replacement from pooled cell counts.

    A sample of size n is a multinomial(n, counts / total) vector over the cells: drawn with
    numpy's multinomial when there are few cells per draw (O(cells)), otherwise as n uniform
    picks of pooled rows counted per cell (O(n)) - the same distribution. Curves are computed
    for ``size`` replicates at once into buffers reused across chunks (big arrays allocated
    afresh for every replicate cost more in page faults than in arithmetic).
    """

    def __init__(self, counts: np.ndarray, is_event: np.ndarray, chunk: int) -> None:
        self.counts, self.cells = counts, counts.size
        self.event_cells = np.flatnonzero(is_event)
        self.row_cell: np.ndarray | None = None  # one entry per pooled row: built when needed
        self.offsets = (np.arange(chunk, dtype=np.int64) * self.cells)[:, None]
        self.cumulative = np.zeros((chunk, self.cells + 1), dtype=np.int64)
        self.at_risk = np.empty((chunk, self.event_cells.size), dtype=np.int64)
        self.deaths = np.empty((chunk, self.event_cells.size), dtype=np.int64)

    def _draw(self, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
        if 5 * self.cells < n:
            return rng.multinomial(n, self.counts / self.counts.sum(), size=size)
        if self.row_cell is None:
            self.row_cell = np.repeat(np.arange(self.cells, dtype=np.int64), self.counts)
        picks = np.take(self.row_cell, rng.integers(0, self.row_cell.size, size=(size, n)))
        picks += self.offsets[:size]
        return np.bincount(picks.ravel(), minlength=size * self.cells).reshape(size, -1)

    def survival(
        self, rng: np.random.Generator, n: int, size: int, out: np.ndarray
    ) -> np.ndarray:
        """Each replicate's survival at the event cells, written into ``out[:size]``."""
        counts = self._draw(rng, n, size)
        cumulative = self.cumulative[:size]
        np.cumsum(counts, axis=1, out=cumulative[:, 1:])
        # event cells come first within their time: drawn before the cell = left before it
        at_risk = np.take(cumulative, self.event_cells, axis=1, out=self.at_risk[:size])
        np.subtract(n, at_risk, out=at_risk)
        np.maximum(at_risk, 1, out=at_risk)  # no one at risk means no deaths either
        deaths = np.take(counts, self.event_cells, axis=1, out=self.deaths[:size])
        curve = np.divide(deaths, at_risk, out=out[:size])
        np.subtract(1.0, curve, out=curve)
        return np.cumprod(curve, axis=1, out=curve)


def distance_threshold(
    time_a: ArrayLike,
    event_a: ArrayLike,
    time_b: ArrayLike,
    event_b: ArrayLike,
    alpha: float = 0.05,
    n_boot: int = 200,
    *,
    rng: np.random.Generator,
    horizon: float | None = None,
) -> float:
    """Critical value of :func:`max_vertical_distance` between the two Kaplan-Meier curves
    under the null that both samples come from one distribution (a pooled bootstrap).

    Each replicate draws samples of sizes n_a and n_b with replacement from the pooled data
    and records the sup distance of their curves up to ``horizon``. Drawing rows with
    replacement is the same as drawing multinomial counts over the pooled distinct
    (time, status) cells, and that is what is done: each replicate's curves are computed from
    cell counts on the shared cell grid (cumulative sums, no per-person work), in chunks of
    replicates. Returns the ceil((1 - alpha)(n_boot + 1))-th smallest replicate distance (the
    Monte Carlo test rule): reject "same distribution" when the observed distance exceeds it.
    Cost per replicate is O(distinct times + n_a + n_b): 1M vs 10k persons with continuous
    times take seconds for 200 replicates; far less with tied (e.g. whole-day) times.
    """
    return distance_threshold_from_counts(
        _counted(time_a, event_a), _counted(time_b, event_b), alpha, n_boot, rng=rng,
        horizon=horizon)


def distance_threshold_from_counts(
    counts_a: pl.DataFrame,
    counts_b: pl.DataFrame,
    alpha: float = 0.05,
    n_boot: int = 200,
    *,
    rng: np.random.Generator,
    horizon: float | None = None,
) -> float:
    """:func:`distance_threshold` from the two samples' [time, status, count] tallies: the
    same critical value as from the rows they count (the bootstrap only ever sees cells)."""
    if n_boot < 1:
        raise SurvivalDataError(f"n_boot must be >= 1, got {n_boot}")
    _z(alpha)
    a, b = _tallies(counts_a, "binary"), _tallies(counts_b, "binary")
    n_a, n_b = int(a.get_column("count").sum()), int(b.get_column("count").sum())
    if n_a == 0 or n_b == 0:
        raise SurvivalDataError("distance_threshold: one sample is empty")
    counts, is_event = _pooled_cells(pl.concat([a, b]), horizon)
    if not is_event.any():
        return 0.0
    # a replicate holds a count per cell, or (few cells, small n) one pick per row
    per_replicate = max(counts.size, min(max(n_a, n_b), 5 * counts.size))
    chunk = max(1, min(n_boot, 2_000_000 // per_replicate))
    bootstrap = _CellBootstrap(counts, is_event, chunk)
    curves = np.empty((2, chunk, int(is_event.sum())))
    distances = []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        curve_a = bootstrap.survival(rng, n_a, size, curves[0])
        curve_b = bootstrap.survival(rng, n_b, size, curves[1])
        np.subtract(curve_a, curve_b, out=curve_a)
        distances.append(np.abs(curve_a, out=curve_a).max(axis=1))
    ordered = np.sort(np.concatenate(distances))
    rank = min(n_boot, math.ceil((1 - alpha) * (n_boot + 1)))
    return float(ordered[rank - 1])


# -- Cox ----------------------------------------------------------------------------------------


def design_matrix(
    frame: pl.DataFrame,
    covariates: Sequence[str],
    reference_levels: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Numeric design columns for a regression on ``covariates`` of ``frame``.

    Numbers and booleans are kept (as floats); other types are one-hot encoded as
    ``name[level]`` without the reference level (sorted first, unless ``reference_levels``
    names it). Raises :class:`SurvivalDataError` for a missing, null or constant covariate.
    """
    reference_levels = reference_levels or {}
    columns = []
    for name in covariates:
        if name not in frame.columns:
            raise SurvivalDataError(f"covariate {name!r}: no such column; have {frame.columns}")
        column = frame.get_column(name)
        if column.null_count():
            raise SurvivalDataError(
                f"covariate {name!r}: {column.null_count()} null value(s); none allowed"
            )
        if column.n_unique() < 2:
            raise SurvivalDataError(
                f"covariate {name!r} is constant ({column[0]!r} for every row); "
                "its hazard ratio cannot be estimated, leave it out"
            )
        if column.dtype.is_numeric() or column.dtype == pl.Boolean:
            columns.append(column.cast(pl.Float64))
            continue
        text = column.cast(pl.String)
        levels = sorted(text.unique().to_list())
        reference = reference_levels.get(name, levels[0])
        if reference not in levels:
            raise SurvivalDataError(
                f"covariate {name!r}: reference level {reference!r} not among {levels}"
            )
        columns += [
            (text == level).cast(pl.Float64).alias(f"{name}[{level}]")
            for level in levels
            if level != reference
        ]
    return pl.DataFrame(columns)


def cox_hazard_ratios(
    frame: pl.DataFrame,
    duration_col: str,
    event_col: str,
    covariates: Sequence[str],
    *,
    alpha: float = 0.05,
    reference_levels: Mapping[str, str] | None = None,
    max_rows: int = COX_MAX_ROWS,
    seed: int = 0,
) -> pl.DataFrame:
    """Cox proportional hazards fit (lifelines CoxPHFitter, Efron ties) of the covariates.

    ``event_col`` == 1 is the event; 0 and any other code (2 = competing event) count as
    censored, which gives cause-specific hazard ratios. String/categorical covariates are
    one-hot encoded without the reference level (sorted first, or ``reference_levels``),
    named like ``arm[treatment]``. Frames larger than ``max_rows`` are fitted on a random
    subsample of ``max_rows`` rows drawn with ``seed`` (see :data:`COX_MAX_ROWS`).
    Columns: covariate, log_hr, std_error, lower, upper (1 - alpha bounds of the hazard
    ratio), hazard_ratio, p.
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    z = _z(alpha)
    for name in (duration_col, event_col):
        if name not in frame.columns:
            raise SurvivalDataError(f"column {name!r} missing; have {frame.columns}")
    if frame.height > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(frame.height, max_rows, replace=False))
        frame = frame[rows]
    checked = _frame(frame.get_column(duration_col), frame.get_column(event_col), "codes")
    design = design_matrix(frame, covariates, reference_levels)
    data = design.with_columns(
        checked.get_column("time").alias("_duration"),
        (checked.get_column("status") == 1).cast(pl.Int64).alias("_event"),
    ).to_pandas()
    try:
        fitted = CoxPHFitter(alpha=alpha).fit(data, "_duration", "_event")
    except (ConvergenceError, np.linalg.LinAlgError, ArithmeticError) as error:
        raise CoxConvergenceError(
            f"Cox model on {list(covariates)} did not converge (collinear covariates, a "
            "level without events, or a covariate that separates events perfectly?): "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None
    log_hr = fitted.params_.to_numpy()
    se = fitted.standard_errors_.to_numpy()
    if not (np.all(np.isfinite(log_hr)) and np.all(np.isfinite(se))):
        raise CoxConvergenceError(
            f"Cox model on {list(covariates)} did not converge: non-finite log hazard ratios "
            "or standard errors")
    return pl.DataFrame(
        {
            "covariate": list(design.columns),
            "log_hr": log_hr,
            "std_error": se,
            "lower": np.exp(log_hr - z * se),
            "upper": np.exp(log_hr + z * se),
            "hazard_ratio": np.exp(log_hr),
            "p": fitted.summary["p"].to_numpy(),
        }
    )
