"""Baseline covariates synthesised from aggregates only: per-site marginals joined by a
Gaussian copula, so that no synthetic person is a real person's row.

Each covariate gets a marginal that keeps its type: a categorical covariate its level shares,
a number with few distinct values (a 0/1 flag, a score) its value shares (``discrete``), any
other number its empirical quantile function at evenly spaced knots (``quantiles``, rounded
when every value is a whole number). The copula's correlation of normal scores
(:func:`trajectories.fit.covariates.copula_table`) joins them (Nelsen 2006, "An Introduction to
Copulas", ch. 2; the normal-scores estimate of Klaassen & Wellner 1997). Small-cell rules
(:mod:`trajectories.disclosure`): a value held by fewer than ``MIN_CELL`` persons is merged into
its nearest common neighbour, no knot is a minimum or maximum, a site draws its own
marginals only with at least ``OWN_MARGINALS_MIN`` persons, and a site's level or value count
below ``MIN_CELL`` is replaced by its expected count under the pooled shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from trajectories.cohort import MAX_AGE_YEARS
from trajectories.disclosure import MIN_CELL, robust_range, suppress_small_counts
from trajectories.fit.covariates import CovariateSpec, copula_table

DISCRETE_MAX_VALUES = 10
"""A number with at most this many distinct values gets a ``discrete`` marginal."""
OWN_MARGINALS_MIN = 2 * MIN_CELL
"""Persons a site needs for marginals of its own (else it draws the pooled ones)."""
MIN_KNOTS, MAX_KNOTS = 2, 101
PERSONS_PER_KNOT = MIN_CELL
"""Persons per interval between quantile knots."""
SITE = "site"


@dataclass(frozen=True)
class Marginal:
    """One covariate's marginal: ``categorical`` (levels and probabilities), ``discrete``
    (values and probabilities) or ``quantiles`` (knots at evenly spaced levels 0..1)."""

    kind: str
    levels: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    probabilities: tuple[float, ...] = ()
    integer: bool = False

    def scenario_table(self, center: float = 0.0, reference: str | None = None) -> dict:
        """The scenario's ``[covariates.<name>]`` table for this marginal."""
        if self.kind == "categorical":
            table: dict = {"kind": "categorical",
                           "levels": dict(zip(self.levels, _exact(self.probabilities),
                                              strict=True))}
            return table | ({"reference": reference} if reference else {})
        if self.kind == "discrete":
            return {"kind": "discrete", "values": list(self.values),
                    "probabilities": _exact(self.probabilities), "center": center}
        return {"kind": "quantiles", "quantiles": list(self.values), "integer": self.integer,
                "center": center}


@dataclass
class CovariateModel:
    """What the fit keeps of the reference's covariates: a pooled marginal per covariate, the
    sites' own marginals where they have enough persons, the copula, and notes."""

    marginals: dict[str, Marginal]
    site_marginals: dict[str, dict[str, Marginal]]
    correlation: tuple[list[str], list[list[float]]] | None
    notes: list[str] = field(default_factory=list)

    def scenario_entries(
        self, specs: Sequence[CovariateSpec]
    ) -> tuple[dict[str, dict], dict[str, dict[str, dict]], dict | None]:
        """The scenario's ``[covariates]``, each site's ``covariates`` and the ``[copula]``."""
        by_name = {spec.name: spec for spec in specs}

        def table(name: str, marginal: Marginal) -> dict:
            spec = by_name[name]
            if name == "age" and marginal.kind == "quantiles":  # ages lie in [0, 120] years
                marginal = replace(marginal, values=tuple(
                    min(max(0.0, v), MAX_AGE_YEARS) for v in marginal.values))
            return marginal.scenario_table(spec.center,
                                           spec.levels[0] if spec.levels else None)

        covariates = {name: table(name, m) for name, m in self.marginals.items()}
        sites = {site: {name: table(name, m) for name, m in own.items()}
                 for site, own in self.site_marginals.items()}
        copula = None
        if self.correlation is not None:
            names, matrix = self.correlation
            copula = {"covariates": list(names), "correlation": matrix}
        return covariates, sites, copula


def fit_covariate_model(
    rows: pl.DataFrame, specs: Sequence[CovariateSpec], sites: Sequence[str]
) -> CovariateModel:
    """Marginals per covariate (pooled, and per site with at least ``OWN_MARGINALS_MIN``
    persons) and the copula of ``rows`` (one per person: ``site`` and the covariates of
    ``specs``, rare levels already merged)."""
    notes: list[str] = []
    marginals: dict[str, Marginal] = {}
    own_sites = [] if len(sites) < 2 else [
        s for s in sites if rows.filter(pl.col(SITE) == s).height >= OWN_MARGINALS_MIN]
    small = [s for s in sites if s not in own_sites] if len(sites) > 1 else []
    if small:
        notes.append(f"site(s) {small} have fewer than {OWN_MARGINALS_MIN} persons: they draw "
                     "the pooled covariate marginals")
    site_marginals: dict[str, dict[str, Marginal]] = {s: {} for s in own_sites}
    for spec in specs:
        column = rows.get_column(spec.name)
        if spec.kind == "categorical":
            pooled = _categorical(column, spec.levels)
            marginals[spec.name] = pooled
            for site in own_sites:
                here = rows.filter(pl.col(SITE) == site).get_column(spec.name)
                site_marginals[site][spec.name] = _categorical(column, spec.levels, here,
                                                               pooled.probabilities)
            continue
        values = column.cast(pl.Float64).to_numpy()
        distinct = np.unique(values)
        if distinct.size <= DISCRETE_MAX_VALUES:
            pooled = _discrete(values)
            if pooled.values != tuple(distinct.tolist()):
                notes.append(f"covariate {spec.name!r}: values held by fewer than {MIN_CELL} "
                             f"persons are drawn as their nearest common value "
                             f"(released values {list(pooled.values)})")
            marginals[spec.name] = pooled
            for site in own_sites:
                here = rows.filter(pl.col(SITE) == site).get_column(spec.name)
                site_marginals[site][spec.name] = _discrete_on(
                    here.cast(pl.Float64).to_numpy(), pooled)
            continue
        marginals[spec.name] = _quantiles(values)
        for site in own_sites:
            here = rows.filter(pl.col(SITE) == site).get_column(spec.name)
            site_marginals[site][spec.name] = _quantiles(here.cast(pl.Float64).to_numpy())
    copula = copula_table(rows, specs)
    correlation = None if copula is None else (copula["covariates"], copula["correlation"])
    return CovariateModel(marginals, site_marginals, correlation, notes)


# -- marginals ----------------------------------------------------------------------------------


def _categorical(column: pl.Series, levels: Sequence[str], here: pl.Series | None = None,
                 pooled: Sequence[float] | None = None) -> Marginal:
    """Level shares of ``column`` (or of a site's ``here``, its cells below ``MIN_CELL``
    replaced by their expected count under the ``pooled`` shares)."""
    data = column if here is None else here
    counts = data.cast(pl.String).value_counts()
    found = dict(zip(counts.get_column(data.name).to_list(),
                     counts.get_column("count").to_list(), strict=True))
    n = np.array([found.get(level, 0) for level in levels], dtype=float)
    if pooled is not None:
        n = suppress_small_counts(n, pooled, data.len())
    return Marginal("categorical", levels=tuple(levels),
                    probabilities=tuple((n / n.sum()).tolist()))


def _discrete(values: np.ndarray) -> Marginal:
    """Value shares, each value held by fewer than ``MIN_CELL`` persons merged into the
    nearest value that is held by that many (all into the median when none is)."""
    distinct, counts = np.unique(values, return_counts=True)
    common = distinct[counts >= MIN_CELL]
    if common.size == 0:
        middle = float(np.median(values))
        return Marginal("discrete", values=(middle,), probabilities=(1.0,))
    return _discrete_on(values, Marginal("discrete", values=tuple(common.tolist())))


def _discrete_on(values: np.ndarray, support: Marginal) -> Marginal:
    """Shares of ``values`` on ``support``'s values (each value to the nearest one); a count
    below ``MIN_CELL`` is replaced by its expected count under ``support``'s shares."""
    kept = np.asarray(support.values)
    nearest = np.abs(values[:, None] - kept[None, :]).argmin(axis=1)
    n = np.bincount(nearest, minlength=kept.size).astype(float)
    if support.probabilities:
        n = suppress_small_counts(n, support.probabilities, values.size)
    return Marginal("discrete", values=support.values, probabilities=tuple((n / n.sum()).tolist()))


def _quantiles(values: np.ndarray) -> Marginal:
    """The quantile function at one knot per ``MIN_CELL`` persons (2 to 101). Every knot lies
    within the robust range (the ``MIN_CELL``-th smallest and largest values) except the end
    knots, which are never the minimum or maximum: each continues its neighbouring interval's
    width outwards (kept at or above 0 for a covariate with no negative value)."""
    k = int(np.clip(values.size // PERSONS_PER_KNOT + 1, MIN_KNOTS, MAX_KNOTS))
    low, high = robust_range(values)
    knots = np.clip(np.quantile(values, np.linspace(0.0, 1.0, k)), low, high)
    if k >= 4:
        floor = 0.0 if values.min() >= 0 else -np.inf
        knots[0] = max(knots[1] - (knots[2] - knots[1]), floor)
        knots[-1] = knots[-2] + (knots[-2] - knots[-3])
    integer = bool(np.all(values == np.round(values)))
    return Marginal("quantiles", values=tuple(float(v) for v in knots), integer=integer)


def _exact(probabilities: Sequence[float]) -> list[float]:
    """Probabilities that sum to one exactly in floating point (the last takes the rest)."""
    out = [float(p) for p in probabilities]
    out[-1] = max(0.0, 1.0 - sum(out[:-1]))
    return out
