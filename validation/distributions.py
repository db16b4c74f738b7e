"""Distributions of a cohort's events: per-person counts, gaps, visit rates and measurements.

Each function reduces a :class:`~trajectories.cohort.Cohort` to a polars DataFrame that can be
set beside the same table of another cohort; :func:`compare_samples` puts two samples of one
quantity side by side (medians, Kolmogorov-Smirnov, Wasserstein).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

from trajectories.cohort import STATE_PREFIX, Cohort, grouped_by_person, same_person_as_previous

DAYS_PER_YEAR = 365.25
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _events(cohort: Cohort, prefix: str | None) -> pl.DataFrame:
    events = cohort.events
    return events if prefix is None else events.filter(pl.col("code").str.starts_with(prefix))


def events_per_person(cohort: Cohort, prefix: str | None = None) -> pl.DataFrame:
    """Events of each person (codes starting with ``prefix`` if given): [person_id, n_events].

    Every person appears, with 0 when they have no such event.
    """
    counts = _events(cohort, prefix).group_by("person_id").agg(
        pl.len().cast(pl.Int64).alias("n_events")
    )
    return (
        cohort.persons.select("person_id")
        .join(counts, on="person_id", how="left", maintain_order="left")
        .with_columns(pl.col("n_events").fill_null(0))
    )


def gaps(cohort: Cohort, prefix: str | None = None) -> pl.DataFrame:
    """Days between consecutive events of a person (codes starting with ``prefix`` if given).

    Columns: person_id, code (of the later event), gap. Events at the same time give gaps of 0;
    pass ``prefix="visit:"`` for the gaps between visits.
    """
    events = grouped_by_person(_events(cohort, prefix).select("person_id", "time", "code"))
    later = same_person_as_previous()
    return (
        events.with_columns(gap=pl.col("time") - pl.col("time").shift(1), later=later)
        .filter(pl.col("later"))
        .select("person_id", "code", "gap")
    )


def _with_state(cohort: Cohort, prefix: str) -> pl.DataFrame:
    """Events with codes starting with ``prefix``, each with the state the person occupies then.

    That state is the one of the person's last state event at or before the event in row order.
    """
    is_state = pl.col("code").str.starts_with(STATE_PREFIX)
    events = grouped_by_person(
        cohort.events.filter(is_state | pl.col("code").str.starts_with(prefix))
    )
    state = pl.when(pl.col("code").str.starts_with(STATE_PREFIX)).then(
        pl.col("code").str.strip_prefix(STATE_PREFIX)
    )
    # Forward fill within a person: a run of rows starts at each person's first row, which
    # holds a state event in a valid cohort; earlier rows get no state.
    first_row = ~same_person_as_previous()
    filled = pl.when(first_row).then(state.fill_null("")).otherwise(state).forward_fill()
    return events.with_columns(pl.when(filled != "").then(filled).alias("state")).filter(
        pl.col("code").str.starts_with(prefix)
    )


def person_years(cohort: Cohort) -> pl.DataFrame:
    """Follow-up time spent in each state, in years: [state, person_years]."""
    return (
        cohort.state_spells()
        .group_by("state")
        .agg(((pl.col("stop") - pl.col("start")).sum() / DAYS_PER_YEAR).alias("person_years"))
        .sort("state")
    )


def visit_rates(cohort: Cohort, prefix: str = "visit:") -> pl.DataFrame:
    """Visits per person-year in each state: [code, state, n_visits, person_years, rate].

    A visit belongs to the state occupied at its start; person-time comes from the state
    spells. Every visit code is crossed with every state that has follow-up time, so a state
    with person-time but no visits of a type shows a rate of 0.
    """
    time = person_years(cohort).filter(pl.col("person_years") > 0)
    visits = _with_state(cohort, prefix)
    counts = visits.group_by("code", "state").agg(pl.len().cast(pl.Int64).alias("n_visits"))
    codes = visits.select("code").unique()
    return (
        codes.join(time, how="cross")
        .join(counts, on=["code", "state"], how="left")
        .with_columns(pl.col("n_visits").fill_null(0))
        .with_columns((pl.col("n_visits") / pl.col("person_years")).alias("rate"))
        .select("code", "state", "n_visits", "person_years", "rate")
        .sort("code", "state")
    )


def measurement_summary(cohort: Cohort, prefix: str = "measurement:") -> pl.DataFrame:
    """Per measurement code and state occupied when taken: n, mean, sd and quantiles of value.

    Quantile columns are q05, q25, q50, q75, q95 (linear interpolation); null values are left
    out.
    """
    values = _with_state(cohort, prefix).filter(pl.col("value").is_not_null())
    quantiles = [
        pl.col("value").quantile(q, interpolation="linear").alias(f"q{round(q * 100):02d}")
        for q in QUANTILES
    ]
    return (
        values.group_by("code", "state")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").std().alias("sd"),
            *quantiles,
        )
        .sort("code", "state")
    )


def compare_samples(a, b) -> dict[str, float | int | None]:
    """Two samples of one quantity compared: sizes, means, medians, KS test, Wasserstein-1.

    ``a`` and ``b`` are anything numpy can read as 1-d numbers (a polars Series, an array);
    nulls and NaNs are dropped. Statistics that need both samples are None when one is empty.
    """
    x, y = (_clean(v) for v in (a, b))
    out: dict[str, float | int | None] = {
        "n_a": int(x.size),
        "n_b": int(y.size),
        "mean_a": float(np.mean(x)) if x.size else None,
        "mean_b": float(np.mean(y)) if y.size else None,
        "median_a": float(np.median(x)) if x.size else None,
        "median_b": float(np.median(y)) if y.size else None,
        "ks_statistic": None,
        "ks_p_value": None,
        "wasserstein": None,
    }
    if x.size and y.size:
        ks = stats.ks_2samp(x, y)
        out["ks_statistic"] = float(ks.statistic)
        out["ks_p_value"] = float(ks.pvalue)
        out["wasserstein"] = float(stats.wasserstein_distance(x, y))
    return out


def _clean(values) -> np.ndarray:
    if isinstance(values, pl.Series):
        values = values.drop_nulls().cast(pl.Float64).to_numpy()
    array = np.asarray(values, dtype=float).reshape(-1)
    return array[~np.isnan(array)]
