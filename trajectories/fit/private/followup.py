"""Private structure and follow-up: persons per site and initial state, how paths end, the
follow-up horizon, and per site the index-date and censoring quantile knots
(:class:`~trajectories.fit.empirical.EmpiricalFit`) from noisy histograms.

Index dates: a tree histogram on the public calendar 1900-2100 (years, then 16ths of a year,
then about a day). Censoring: the life-table (actuarial) estimate of the censoring distribution
(Cutler and Ederer 1958, "Maximum utilization of the life table method in analyzing
survival", J Chronic Dis 8:699-712), the reverse Kaplan-Meier of the exact fit on released
intervals: censorings are its events, deaths and absorptions leave the risk set halfway
through their interval; from a tree histogram of follow-up ends per (site, censored or not) on
[0, horizon]. Both read quantile knots as :mod:`trajectories.fit.empirical` does (evenly
spaced levels, at most one knot per ten persons).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort
from trajectories.fit.censoring import CENSORED_EXITS
from trajectories.fit.empirical import EPOCH, EmpiricalFit, knot_count
from trajectories.fit.private.accounting import Budget
from trajectories.fit.private.mechanisms import (
    Leaves,
    Mechanisms,
    day_edges,
    mixture,
    release_ranges,
    simplex_projection,
    tree_histogram,
)

CALENDAR = (dt.date(1900, 1, 1), dt.date(2100, 1, 1))
"""The public range of index dates (earlier or later ones are clipped to it)."""
CALENDAR_BRANCHING = (200, 16, 23)
FOLLOWUP_BRANCHING = (16, 16, 8)
OWN_NOISE_SDS = 20.0
ENDINGS = ("death", "absorbed", "censored")


@dataclass(frozen=True)
class Structure:
    """Released persons per site (consistent with the public n), per initial state, and the
    counts of paths ending in each state by death, absorption or censoring."""

    site_counts: np.ndarray
    initial_counts: np.ndarray
    endings: np.ndarray  # (states, 3)


def release_structure(mechanisms: Mechanisms, budget: Budget, cohort: Cohort,
                      site_index: np.ndarray, n_sites: int, states: list[str]) -> Structure:
    """One release of the (site, initial state) and (final state, ending) counts; a person
    is one count in each, so replacing one moves two counts in each: sensitivity 2."""
    code = {s: i for i, s in enumerate(states)}
    n, k = cohort.n_persons, len(states)
    paths = (cohort.events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
             .group_by("person_id", maintain_order=True)
             .agg(pl.col("code").first().alias("first"), pl.col("code").last().alias("last")))
    persons = cohort.persons.select("person_id", "exit").join(paths, on="person_id",
                                                              how="left", maintain_order="left")
    first = np.array([code[c.removeprefix(STATE_PREFIX)] for c in persons["first"].to_list()])
    last = np.array([code[c.removeprefix(STATE_PREFIX)] for c in persons["last"].to_list()])
    exits = persons.get_column("exit").to_list()
    ending = np.array([0 if e == "death" else 1 if e == "absorbed" else 2 for e in exits])
    start = np.bincount(site_index * k + first, minlength=n_sites * k).astype(float)
    end = np.bincount(last * 3 + ending, minlength=k * 3).astype(float)
    noisy, _ = mechanisms.gaussian("persons per site and initial state; paths per final state "
                                   "and ending", np.concatenate([start, end]), 2.0,
                                   budget.share("structure"))
    start = simplex_projection(noisy[:start.size], n).reshape(n_sites, k)
    endings = simplex_projection(noisy[start.size:], n).reshape(k, 3)
    return Structure(start.sum(axis=1), simplex_projection(start.sum(axis=0), n), endings)


def release_horizon(mechanisms: Mechanisms, budget: Budget, followup: np.ndarray) -> float:
    """The follow-up horizon: the released upper end of follow-up (days, at least 1)."""
    ((_, high),) = release_ranges(mechanisms, "follow-up ends on the range grid", [followup],
                                  [False], budget.share("horizon"), followup.size,
                                  grids=[day_edges()])
    return max(float(high), 1.0)


def _own(site_counts: np.ndarray, sigma: float) -> list[bool]:
    if site_counts.size < 2:
        return [True]
    return [bool(c >= max(11, OWN_NOISE_SDS * sigma)) for c in site_counts]


def release_followup(
    mechanisms: Mechanisms, budget: Budget, cohort: Cohort, site_index: np.ndarray,
    sites: list[str], site_counts: np.ndarray, horizon: float, notes: list[str],
) -> dict[str, EmpiricalFit]:
    """Per site the EmpiricalFit of released index-date and censoring histograms (a site
    under ``OWN_NOISE_SDS`` noise sds takes the pooled ones)."""
    persons = cohort.persons
    n_sites = len(sites)
    epoch = EPOCH.toordinal()
    low, high = (d.toordinal() - epoch for d in CALENDAR)
    day = persons.get_column("index_date").cast(pl.Int64).to_numpy().astype(float)
    share = budget.share("index_dates")
    sigma = mechanisms.accountant.sigma(math.sqrt(2), share / len(CALENDAR_BRANCHING))
    own = _own(site_counts, sigma)
    index_leaves = tree_histogram(mechanisms, "index dates per site", day, site_index,
                                  site_counts, low, high, CALENDAR_BRANCHING, share,
                                  sparse=True)

    followup = persons.get_column("followup_end").to_numpy().astype(float)
    censored = persons.get_column("exit").is_in(CENSORED_EXITS).to_numpy()
    group = site_index * 2 + censored
    share = budget.share("censoring")
    counts = np.bincount(group, minlength=2 * n_sites).astype(float)
    noisy, _ = mechanisms.gaussian("persons per site, censored or not", counts, math.sqrt(2),
                                   share / 3)
    totals = np.concatenate([simplex_projection(noisy[2 * i:2 * i + 2], site_counts[i])
                             for i in range(n_sites)])
    leaves = tree_histogram(mechanisms, "follow-up ends per site, censored or not", followup,
                            group, totals, 0.0, horizon, FOLLOWUP_BRANCHING, share * 2 / 3)
    pooled_index = mixture(index_leaves, site_counts)
    pooled_ended = mixture(leaves[0::2], totals[0::2])
    pooled_censored = mixture(leaves[1::2], totals[1::2])
    n = float(site_counts.sum())
    pooled = _empirical(pooled_index, pooled_ended, pooled_censored, n,
                        float(totals[1::2].sum()), horizon)
    fits = {}
    for i, site in enumerate(sites):
        if own[i]:
            fits[site] = _empirical(index_leaves[i], leaves[2 * i], leaves[2 * i + 1],
                                    float(site_counts[i]), float(totals[2 * i + 1]), horizon)
        else:
            fits[site] = EmpiricalFit(pooled.index_dates, pooled.levels, pooled.days,
                                      pooled.max_days, int(round(site_counts[i])),
                                      int(round(totals[2 * i + 1])),
                                      ["index_dates", "censoring"])
            notes.append(f"site {site!r}: released count {site_counts[i]:.0f} under "
                         f"{OWN_NOISE_SDS:g} noise sds: takes the pooled index dates and "
                         "censoring")
    return fits


def _empirical(index: Leaves, ended: Leaves, censored: Leaves, n: float, n_censored: float,
               horizon: float) -> EmpiricalFit:
    k = knot_count(int(n))
    days = index.quantiles(np.linspace(0.0, 1.0, k))
    dates = [EPOCH + dt.timedelta(days=int(np.floor(v + 0.5))) for v in days]
    dates = [max(dates[: i + 1]) for i in range(len(dates))]
    levels, knots, max_days = _censoring_knots(ended, censored, n_censored, horizon)
    return EmpiricalFit(dates, levels, knots, max_days, int(round(n)), int(round(n_censored)))


def _censoring_knots(ended: Leaves, censored: Leaves, n_censored: float,
                     horizon: float) -> tuple[list[float], list[float], float]:
    """Levels, days and max_days of the life-table censoring distribution."""
    end = round(max(horizon, 1e-3), 2)
    if censored.total <= 0 or n_censored < 1:
        return [0.0], [end], end
    edges = np.unique(np.concatenate([ended.low, ended.high, censored.low, censored.high,
                                      [0.0, horizon]]))
    c = np.diff(censored.cdf(edges) * censored.total) if censored.total > 0 else 0
    o = np.diff(ended.cdf(edges) * ended.total) if ended.total > 0 else np.zeros(edges.size - 1)
    c, o = np.clip(c, 0.0, None), np.clip(o, 0.0, None)
    # At risk at an interval's start: those whose follow-up ends there or later, summed from
    # the end (every follow-up ends by the horizon), so the noise piles up where many are
    # at risk, not at the last censorings.
    at_risk = np.cumsum((c + o)[::-1])[::-1]
    hazard = np.clip(c / np.maximum(at_risk - o / 2, np.maximum(c, 1e-12)), 0.0, 1.0)
    survival = np.cumprod(1.0 - hazard)
    mass = np.concatenate([[1.0], survival[:-1]]) - survival
    distribution = Leaves(edges[:-1], edges[1:], mass)
    top = float(mass.sum())
    if top <= 1e-9:
        return [0.0], [end], end
    levels = np.linspace(0.0, top, knot_count(int(n_censored)))
    values = distribution.quantiles(levels / top)
    levels = [round(float(p), 6) for p in levels]
    days = [float(round(v)) for v in np.maximum.accumulate(values)]  # whole days: an atom
    # of the tree's finest cells (an administrative end of follow-up) stays an atom
    keep = [0] + [i for i in range(1, len(levels)) if levels[i] > levels[i - 1]]
    levels, days = [levels[i] for i in keep], [days[i] for i in keep]
    # The mass beyond the last censoring goes to it: past the largest released censoring
    # time the estimate says nothing (the exact fit uses the largest follow-up instead).
    return levels, days, max(days[-1], 1.0)
