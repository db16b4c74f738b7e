"""Two-sample comparisons of survival data: the log-rank test (Mantel 1966; Peto & Peto
1972), the sup distance between two Kaplan-Meier curves with its pooled-bootstrap critical
value (a Kolmogorov-Smirnov-type test, Efron 1981), and the z-test of two independent
estimates. Each takes rows or their [time, event, count] tallies
(:func:`validation.survival_data.tally`).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats

from trajectories.errors import SurvivalDataError
from validation.survival_data import (
    ArrayLike,
    checked_tallies,
    estimate_column,
    survival_rows,
    z_critical,
)


def z_test_p(difference: float, se_a: float, se_b: float) -> float:
    """Two-sided p-value of ``difference`` between two independent estimates with standard
    errors ``se_a`` and ``se_b`` (normal approximation)."""
    se = math.hypot(se_a, se_b)
    if not math.isfinite(difference):
        return 0.0
    if se == 0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * stats.norm.sf(abs(difference) / se))


def logrank(
    time_a: ArrayLike, event_a: ArrayLike, time_b: ArrayLike, event_b: ArrayLike
) -> tuple[float, float]:
    """Two-sample log-rank test: ``(chi-square statistic, p value)`` on 1 degree of freedom.

    Hypergeometric variance, as lifelines.statistics.logrank_test.
    """
    return logrank_from_counts(_counted(time_a, event_a), _counted(time_b, event_b))


def _counted(time: ArrayLike, event: ArrayLike) -> pl.DataFrame:
    """Checked binary survival rows as [time, event, count] tallies."""
    return (
        survival_rows(time, event, "binary")
        .group_by("time", "event")
        .agg(pl.len().cast(pl.Int64).alias("count"))
    )


def logrank_from_counts(counts_a: pl.DataFrame, counts_b: pl.DataFrame) -> tuple[float, float]:
    """:func:`logrank` from the two samples' [time, event, count] tallies (event 1, censored 0)."""
    a, b = checked_tallies(counts_a, "binary"), checked_tallies(counts_b, "binary")
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
            (weight * pl.col("event")).sum().alias("d"),
            (weight * pl.col("event") * pl.col("in_a")).sum().alias("d_a"),
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
    column = estimate_column(curve_a)
    if estimate_column(curve_b) != column:
        raise SurvivalDataError("max_vertical_distance: curves of different kinds")
    at = np.union1d(curve_a.get_column("time").to_numpy(), curve_b.get_column("time").to_numpy())
    if horizon is not None:
        at = at[at <= horizon]
    if at.size == 0:
        return 0.0
    return float(np.max(np.abs(_step_values(curve_a, column, at) -
                                _step_values(curve_b, column, at))))


def _pooled_cells(frame: pl.DataFrame, horizon: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the pooled tallies' distinct (time, event) cells, and which are events.

    Cells are ordered by time and, within a time, the event cell first, so that the draws
    in earlier cells are exactly those that left before that time. Rows beyond ``horizon``
    are merged into one last censored cell: they only ever count as at risk.
    """
    if horizon is not None:
        beyond = pl.col("time") > horizon
        frame = frame.with_columns(
            pl.when(beyond).then(math.inf).otherwise(pl.col("time")).alias("time"),
            pl.when(beyond).then(0).otherwise(pl.col("event")).alias("event"),
        )
    cells = (
        frame.lazy()
        .group_by("time", "event")
        .agg(pl.col("count").sum())
        .filter(pl.col("count") > 0)
        .sort(["time", "event"], descending=[False, True])
        .collect()
    )
    return cells.get_column("count").to_numpy().astype(np.int64), (
        cells.get_column("event").to_numpy() == 1
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
    (time, event) cells, and that is what is done: each replicate's curves are computed from
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
    """:func:`distance_threshold` from the two samples' [time, event, count] tallies: the
    same critical value as from the rows they count (the bootstrap only ever sees cells)."""
    if n_boot < 1:
        raise SurvivalDataError(f"n_boot must be >= 1, got {n_boot}")
    z_critical(alpha)
    a, b = checked_tallies(counts_a, "binary"), checked_tallies(counts_b, "binary")
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
