"""Checked survival data: (time, event) rows and [time, event, count] tallies.

The input rules every estimator and test of :mod:`validation.survival`,
:mod:`validation.two_sample` and :mod:`validation.cox` shares: ``time`` in days >= 0 (+inf
allowed when censored), ``event`` integer codes, no nulls. Inputs are polars Series (numpy
arrays and lists work too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from trajectories.errors import SurvivalDataError

ArrayLike = pl.Series | np.ndarray | Sequence[float]


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


def survival_rows(time: ArrayLike, event: ArrayLike, allowed: str) -> pl.DataFrame:
    """A (time, event) frame after checking lengths, values and event codes.

    Times are days >= 0; +inf is accepted for censored rows only (known to be event-free
    at every finite time, e.g. times coarsened past the last grid point).
    """
    t = _column(time, "time", pl.Float64())
    s = _column(event, "event", pl.Int64())
    if t.len() != s.len():
        raise SurvivalDataError(f"time has {t.len()} values but event has {s.len()}")
    if t.len() == 0:
        raise SurvivalDataError("time: no observations")
    if t.is_nan().any() or t.min() < 0 or (t.is_infinite() & (s != 0)).any():
        raise SurvivalDataError(
            "time: values must be >= 0 days from origin, and finite unless censored"
        )
    if allowed == "binary" and not s.is_in([0, 1]).all():
        raise SurvivalDataError("event: values must be 0 (censored) or 1 (event)")
    if allowed == "codes" and s.min() < 0:
        raise SurvivalDataError("event: values must be 0 (censored) or positive cause codes")
    return pl.DataFrame([t, s])


def checked_tallies(counts: pl.DataFrame, allowed: str) -> pl.DataFrame:
    """A checked [time, event, count] frame: the rules of :func:`survival_rows` plus
    counts >= 0."""
    missing = [c for c in ("time", "event", "count") if c not in counts.columns]
    if missing:
        raise SurvivalDataError(
            f"counts: missing column(s) {missing}; expected time, event, count (see tally)"
        )
    checked = survival_rows(counts.get_column("time"), counts.get_column("event"), allowed)
    count = _column(counts.get_column("count"), "count", pl.Int64())
    if count.min() < 0:
        raise SurvivalDataError("count: values must be >= 0")
    return checked.with_columns(count)


def tally(time: ArrayLike, event: ArrayLike) -> pl.DataFrame:
    """[time, event, count]: how many rows share each (time, event), sorted.

    The additive summary of survival data: the ``*_from_counts`` estimators give the same
    curves from it as the row-level ones, and from tallies of disjoint parts stacked together
    (rows of equal time and event are added up). Compact when times are tied (whole days).
    """
    frame = survival_rows(time, event, "codes")
    return (
        frame.group_by("time", "event")
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort("time", "event")
    )


def z_critical(alpha: float) -> float:
    """The normal quantile of a two-sided 1 - alpha interval."""
    if not 0 < alpha < 1:
        raise SurvivalDataError(f"alpha must be in (0, 1), got {alpha}")
    return float(stats.norm.ppf(1 - alpha / 2))


def estimate_column(curve: pl.DataFrame) -> str:
    """The estimate's column of a Kaplan-Meier or an Aalen-Johansen curve."""
    for name in ("survival", "cumulative_incidence"):
        if name in curve.columns:
            return name
    raise SurvivalDataError(
        f"curve: expected a 'survival' or 'cumulative_incidence' column, got {curve.columns}"
    )
