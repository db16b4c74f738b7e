"""Empirical index-date and censoring distributions of a reference cohort, as quantile knots.

The index dates of a site are summarised by their quantile function; the potential censoring
time (days since index) by the quantile function of the reverse Kaplan-Meier estimate, the
Kaplan-Meier estimate with the roles swapped: an end of follow-up by censoring is the event and
a death or absorption censors it (Efron 1967, "The two sample problem with censored data",
Proc. 5th Berkeley Symp. 4:831-853; Schemper and Smith 1996, "A note on quantifying follow-up
in studies of failure time", Control Clin Trials 17:343-346). Unlike the uniform window plus
constant loss of :mod:`trajectories.fit.censoring`, it makes no assumption on the shape.

The quantile function is linear between the persons' Hazen plotting positions (each person
at the middle of its share of the mass: Hazen 1914, Trans ASCE 77:1539-1669; type 5 of
Hyndman and Fan 1996, Am Stat 50:361-365, with Kaplan-Meier masses), so ties keep their atom,
and the knots sit at evenly spaced levels. Small-cell care, so that no knot is one person's
exact value at the extremes: the end knots are the 1% and 99% quantiles (of the mass
reached), never a minimum or maximum held by fewer than ``MIN_CELL`` persons (then halfway to
the next distinct value); a site has at most one knot per ten persons (2 to 51); a site with
fewer than ``MIN_CELL`` persons (or censored persons, for censoring) takes the pooled
distribution of all sites.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from trajectories.disclosure import MIN_CELL

# MIN_CELL: persons a site (or a site's censored persons) needs for its own distribution, and
# that an extreme value needs to be used as an end knot as it is (cells of 1 to 10 are small).
END_LEVEL = 0.01
"""The end knots are the quantiles at this fraction of the mass from either end."""
PERSONS_PER_KNOT = 10
MIN_KNOTS, MAX_KNOTS = 2, 51
EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class ReverseKaplanMeier:
    """The reverse Kaplan-Meier estimate G(t) = P(C > t) at each distinct follow-up end.

    ``times``: the distinct follow-up ends, sorted; ``survival``: G just after each;
    ``at_risk``: persons with follow-up ending at or after it; ``censored``: those censored
    there (the events of this estimate).
    """

    times: np.ndarray
    survival: np.ndarray
    at_risk: np.ndarray
    censored: np.ndarray


def reverse_kaplan_meier(followup: np.ndarray, censored: np.ndarray) -> ReverseKaplanMeier:
    """The Kaplan-Meier estimate of the censoring distribution (Efron 1967; Schemper and Smith
    1996): ``censored`` persons have the event at their follow-up end, the others (deaths and
    absorptions) are censored there. Ties count every person ending at t as at risk at t."""
    t = np.asarray(followup, dtype=float)
    c = np.asarray(censored, dtype=bool)
    times, inverse = np.unique(t, return_inverse=True)
    ending = np.bincount(inverse, minlength=times.size)
    events = np.bincount(inverse, weights=c, minlength=times.size).astype(np.int64)
    at_risk = t.size - np.concatenate([[0], np.cumsum(ending)[:-1]])
    survival = np.cumprod(1.0 - events / np.maximum(at_risk, 1))
    return ReverseKaplanMeier(times, survival, at_risk.astype(np.int64), events)


def knot_count(n: int) -> int:
    """At most one knot per ``PERSONS_PER_KNOT`` persons, between 2 and 51."""
    return int(min(MAX_KNOTS, max(MIN_KNOTS, n // PERSONS_PER_KNOT)))


def quantile_knots(values: np.ndarray, masses: np.ndarray, counts: np.ndarray,
                   knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Levels and values of ``knots`` quantile knots of a discrete distribution.

    ``values``: distinct, sorted; ``masses``: their probabilities (summing to the mass reached,
    ``top`` <= 1: a censoring distribution may be defective); ``counts``: persons at each,
    who share its mass equally. Each person sits at the middle of its share (Hazen), so tied
    persons make a flat stretch and an atom stays an atom; the quantile function is linear
    between those points. The levels are evenly spaced on [0, top]; the values are that
    function at the levels clipped to [top * END_LEVEL, top * (1 - END_LEVEL)], an end moved
    inward, halfway to the next distinct value, when it would return an extreme value held by
    fewer than MIN_CELL persons.
    """
    values, masses = np.asarray(values, dtype=float), np.asarray(masses, dtype=float)
    counts = np.asarray(counts)
    top = float(masses.sum())
    levels = np.linspace(0.0, top, knots)
    share = masses / (2 * counts)
    first = np.cumsum(masses) - masses + share  # the first and last tied person's middles
    last = np.cumsum(masses) - share
    tied = counts > 1
    position = np.sort(np.concatenate([first, last[tied]]))
    at = np.sort(np.concatenate([values, values[tied]]))
    low, high = END_LEVEL * top, (1.0 - END_LEVEL) * top
    if values.size > 1:
        if low <= last[0] and counts[0] < MIN_CELL:
            low = (last[0] + first[1]) / 2  # halfway to the next distinct value
        if high >= first[-1] and counts[-1] < MIN_CELL:
            high = (last[-2] + first[-1]) / 2
    low = min(low, high)
    return levels, np.interp(np.clip(levels, low, high), position, at)


def _sample_knots(values: np.ndarray, knots: int) -> tuple[np.ndarray, np.ndarray]:
    distinct, counts = np.unique(np.asarray(values, dtype=float), return_counts=True)
    return quantile_knots(distinct, counts / counts.sum(), counts, knots)


def robust_maximum(values: np.ndarray) -> float:
    """The 99% (Hazen) quantile, or halfway below a maximum held by fewer than MIN_CELL."""
    _, knot_values = _sample_knots(values, 2)
    return float(knot_values[-1])


@dataclass(frozen=True)
class EmpiricalFit:
    """One site's empirical index-date and censoring distributions, as scenario knots.

    ``index_dates``: dates at evenly spaced levels 0..1; ``levels``, ``days``, ``max_days``:
    the potential censoring time's knots and the time of the mass above the last level;
    ``pooled``: which of the two came from all sites pooled (a small site).
    """

    index_dates: list[dt.date]
    levels: list[float]
    days: list[float]
    max_days: float
    n_persons: int
    n_censored: int
    pooled: list[str] = field(default_factory=list)

    def index_table(self) -> dict:
        """The scenario's ``index_dates`` table."""
        return {"quantiles": list(self.index_dates)}

    def censoring_table(self) -> dict:
        """The scenario's ``censoring`` table."""
        return {"levels": list(self.levels), "days": list(self.days),
                "max_days": self.max_days}


def index_date_knots(index_day: np.ndarray) -> list[dt.date]:
    """Quantile knots (dates) of index dates given as days since 1970-01-01."""
    _, values = _sample_knots(index_day, knot_count(np.asarray(index_day).size))
    return [EPOCH + dt.timedelta(days=int(np.floor(v + 0.5))) for v in values]


def censoring_knots(followup: np.ndarray, censored: np.ndarray
                    ) -> tuple[list[float], list[float], float]:
    """Levels, days and max_days of the reverse Kaplan-Meier quantile function.

    The knots span the mass the estimate reaches (all of it when the longest follow-up ends by
    censoring); the rest lies beyond the last censoring and goes to ``max_days``, the robust
    maximum follow-up (:func:`robust_maximum`), or the last knot if later. With nobody
    censored, every potential censoring time is ``max_days``.
    """
    followup = np.asarray(followup, dtype=float)
    censored = np.asarray(censored, dtype=bool)
    longest = robust_maximum(followup) if followup.size else 1.0
    if not censored.any():
        end = round(max(longest, 1e-3), 2)
        return [0.0], [end], end
    km = reverse_kaplan_meier(followup, censored)
    before = np.concatenate([[1.0], km.survival[:-1]])
    jump = km.censored > 0
    masses = (before - km.survival)[jump]
    levels, values = quantile_knots(km.times[jump], masses, km.censored[jump],
                                    knot_count(int(censored.sum())))
    levels = [round(float(p), 6) for p in levels]
    days = [round(float(v), 2) for v in values]
    # Rounding can merge the last levels of a nearly flat top; keep them strictly increasing.
    keep = [0] + [i for i in range(1, len(levels)) if levels[i] > levels[i - 1]]
    levels, days = [levels[i] for i in keep], [days[i] for i in keep]
    return levels, days, max(round(max(longest, 1e-3), 2), days[-1])


def fit_site(index_day: np.ndarray, followup: np.ndarray, censored: np.ndarray,
             pooled: EmpiricalFit | None = None) -> EmpiricalFit:
    """One site's distributions; with ``pooled`` given, a part with too few persons (index
    dates: fewer than MIN_CELL persons; censoring: 1 to MIN_CELL - 1 censored persons, or a
    small site) takes the pooled fit's instead."""
    n, n_censored = int(np.asarray(index_day).size), int(np.asarray(censored).sum())
    taken: list[str] = []
    small = pooled is not None and n < MIN_CELL
    if small:
        dates = list(pooled.index_dates)
        taken.append("index_dates")
    else:
        dates = index_date_knots(index_day)
    if pooled is not None and (small or 0 < n_censored < MIN_CELL):
        levels, days, max_days = list(pooled.levels), list(pooled.days), pooled.max_days
        taken.append("censoring")
    else:
        levels, days, max_days = censoring_knots(followup, censored)
    return EmpiricalFit(dates, levels, days, max_days, n, n_censored, taken)
