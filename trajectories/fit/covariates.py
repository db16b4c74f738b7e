"""Baseline covariates of a reference cohort: one row per person (and the scenario's
``[baseline]`` table pointing to them, for ``covariate_draw='resample'``), how each column
enters the hazard models (centred number or dummy-coded levels), and the normal-scores
correlation that joins the synthesised marginals (the scenario's ``[copula]``; the marginals
themselves: :mod:`trajectories.fit.synthesis`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy import optimize, stats
from scipy.special import ndtri

from trajectories.cohort import Cohort
from trajectories.errors import CovariateError
from trajectories.simulate.population import DAYS_PER_YEAR

LEVEL_NAME = r"^[A-Za-z][A-Za-z0-9_.\-]*$"
"""Scenario names (pattern of trajectories.scenario.schema.Name): categorical levels must match."""


@dataclass(frozen=True)
class CovariateSpec:
    """How one covariate enters the hazards: numeric (value - center) or categorical levels
    (dummies for every level but ``levels[0]``, the reference)."""

    name: str
    kind: str  # "numeric" | "categorical"
    center: float = 0.0
    levels: tuple[str, ...] = ()

    def columns(self) -> list[tuple[str, str | None]]:
        """(covariate, level) per design column; level None for a number."""
        if self.kind == "numeric":
            return [(self.name, None)]
        return [(self.name, level) for level in self.levels[1:]]


def column_label(name: str, level: str | None) -> str:
    """Design-column label as validation's Cox models write it: ``age``, ``arm[treatment]``."""
    return name if level is None else f"{name}[{level}]"


def baseline_rows(cohort: Cohort, covariates: Sequence[str] | None = None) -> pl.DataFrame:
    """person_id, site and the baseline covariates of every person (one row each).

    ``covariates=None`` takes the cohort's covariate columns, plus ``age`` (years at index,
    from birth_date) when the cohort has no age column but every birth date, plus ``sex`` when
    no person's sex is missing.
    """
    persons = cohort.persons
    names = list(cohort.covariates) if covariates is None else list(covariates)
    derived = []
    if "age" not in persons.columns and persons.get_column("birth_date").null_count() == 0 and (
            covariates is None or "age" in names):
        derived.append(((pl.col("index_date") - pl.col("birth_date")).dt.total_days()
                        / DAYS_PER_YEAR).alias("age"))
        if "age" not in names:
            names.append("age")
    if covariates is None and persons.get_column("sex").null_count() == 0 and persons.height:
        names.append("sex")
    rows = persons.with_columns(derived)
    missing = [n for n in names if n not in rows.columns]
    if missing:
        raise CovariateError(
            f"reference cohort: no covariate column(s) {missing}; it has {cohort.covariates}"
        )
    for name in names:
        nulls = rows.get_column(name).null_count()
        if nulls:
            raise CovariateError(
                f"reference cohort: covariate {name!r} is missing for {nulls} person(s); "
                "impute it or leave it out (covariates=[...], --covariates A,B)"
            )
    return rows.select("person_id", "site", *names)


def describe(
    rows: pl.DataFrame, names: Sequence[str], centers: Mapping[str, float] | None = None
) -> list[CovariateSpec]:
    """A spec per covariate: numbers centred at ``centers`` (default: their mean); text as
    levels in sorted order, the first the reference (as validation's Cox models code them)."""
    centers = dict(centers or {})
    specs = []
    for name in names:
        column = rows.get_column(name)
        if column.dtype.is_numeric() or column.dtype == pl.Boolean:
            values = column.cast(pl.Float64)
            center = centers.get(name, float(values.mean()))
            specs.append(CovariateSpec(name, "numeric", center=float(center)))
            continue
        levels = sorted(column.cast(pl.String).unique().to_list())
        check_level_names(name, levels)
        specs.append(CovariateSpec(name, "categorical", levels=tuple(levels)))
    return specs


def check_level_names(name: str, levels: Sequence[str]) -> None:
    """Raise CovariateError unless every level of categorical ``name`` is a scenario name."""
    bad = [lv for lv in levels if not re.fullmatch(LEVEL_NAME, lv) or len(lv) > 64]
    if bad:
        raise CovariateError(
            f"reference cohort: covariate {name!r} has level(s) {bad[:5]} that are not "
            "usable names in a scenario (a letter, then letters, digits, '_', '.', '-'); "
            "recode them"
        )


def design(rows: pl.DataFrame, specs: Sequence[CovariateSpec]) -> tuple[np.ndarray, list]:
    """Design matrix (rows, columns) and the (covariate, level) of each column."""
    columns, keys = [], []
    for spec in specs:
        column = rows.get_column(spec.name)
        if spec.kind == "numeric":
            columns.append(column.cast(pl.Float64).to_numpy() - spec.center)
        else:
            text = column.cast(pl.String)
            columns += [(text == level).cast(pl.Float64).to_numpy() for level in spec.levels[1:]]
        keys += spec.columns()
    x = np.column_stack(columns) if columns else np.zeros((rows.height, 0))
    return x, keys


# -- the copula ------------------------------------------------------------------------------------


COPULA_MAX_CORRELATION = 0.999
"""Estimated correlations are clipped to +-this (a perfectly tied pair has no density)."""
COPULA_MIN_EIGENVALUE = 1e-3
"""Smallest eigenvalue kept (a rounded matrix must stay positive definite)."""
SITE_COLUMN = "site"
COARSE_VALUES = 10
"""A covariate with at most this many values is coarse: a pair of them takes the polychoric."""
FAR = 10.0
"""Normal thresholds beyond +-this stand for infinity in the bivariate-normal CDF."""


def copula_table(rows: pl.DataFrame, specs: Sequence[CovariateSpec]) -> dict[str, object] | None:
    """The scenario's ``[copula]``: the normal-scores correlation of the covariates (None when
    fewer than two vary).

    Each covariate is ranked within its site (numbers by value, categories by their level
    position in ``specs``; ties take the mid-rank): a person spans the normal interval
    (a, b) = Phi^-1 of its rank range / n and scores g = Phi^-1(mid-rank / n). Pearson
    correlations of the scores, pooled over sites (so case-mix is not mistaken for
    dependence), are divided by each score's attenuation E[Z g] / sd(g) (1 without ties,
    E[Z | a < Z < b] = (phi(a) - phi(b)) / (Phi(b) - Phi(a)) with them): exact for a
    number against a category (the polyserial correlation, Olsson, Drasgow & Dorans 1982).
    Two coarse covariates (at most ``COARSE_VALUES`` values each) take instead their
    polychoric correlation, the maximum-likelihood latent correlation of their cross-table
    with each site's thresholds (Olsson 1979, Psychometrika 44:443-460). The matrix is then
    made positive definite.
    """
    scores, attenuation, names, bounds, coarse = [], [], [], [], []
    for spec in specs:
        value = pl.col(spec.name)
        if spec.kind == "categorical":
            value = value.cast(pl.String).replace_strict(
                list(spec.levels), list(range(len(spec.levels))), return_dtype=pl.Int64)
        else:
            value = value.cast(pl.Float64)
        n = pl.len().over(SITE_COLUMN)
        ranks = rows.select(
            ((value.rank("min").over(SITE_COLUMN) - 1) / n).alias("low"),
            (value.rank("max").over(SITE_COLUMN) / n).alias("high"),
        )
        low, high = ranks["low"].to_numpy(), ranks["high"].to_numpy()
        g = ndtri((low + high) / 2)
        if g.size < 3 or np.std(g) == 0:
            continue
        a, b = ndtri(low), ndtri(high)
        inside = (stats.norm.pdf(a) - stats.norm.pdf(b)) / (high - low)
        scores.append(g)
        attenuation.append(float(np.mean(g * inside) / np.std(g)))
        names.append(spec.name)
        bounds.append((a, b))
        coarse.append(rows.get_column(spec.name).n_unique() <= COARSE_VALUES)
    if len(names) < 2:
        return None
    r = np.corrcoef(np.column_stack(scores), rowvar=False) / np.outer(attenuation, attenuation)
    site = rows.get_column(SITE_COLUMN).to_numpy()
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if coarse[i] and coarse[j]:
                r[i, j] = r[j, i] = polychoric(*bounds[i], *bounds[j], site)
    return {"covariates": names, "correlation": positive_definite(r).tolist()}


def positive_definite(r: np.ndarray) -> np.ndarray:
    """A correlation estimate made a valid copula matrix: symmetric, entries clipped to
    +-``COPULA_MAX_CORRELATION``, eigenvalues raised to ``COPULA_MIN_EIGENVALUE`` and rescaled
    to a unit diagonal, rounded to 6 decimals (still positive definite)."""
    r = np.clip((r + r.T) / 2, -COPULA_MAX_CORRELATION, COPULA_MAX_CORRELATION)
    np.fill_diagonal(r, 1.0)
    values, vectors = np.linalg.eigh(r)
    if values[0] < COPULA_MIN_EIGENVALUE:
        r = (vectors * np.maximum(values, COPULA_MIN_EIGENVALUE)) @ vectors.T
        scale = 1 / np.sqrt(np.diag(r))
        r = r * np.outer(scale, scale)
    r = np.round((r + r.T) / 2, 6)
    np.fill_diagonal(r, 1.0)
    return r


def polychoric(a_low: np.ndarray, a_high: np.ndarray, b_low: np.ndarray, b_high: np.ndarray,
               site: np.ndarray) -> float:
    """The latent correlation of two coarse covariates: each person's (a_low, a_high) x
    (b_low, b_high) normal rectangle (its site's thresholds), the correlation maximising the
    bivariate-normal likelihood of the persons' rectangles (Olsson 1979)."""
    cells = pl.DataFrame({"s": site, "al": a_low, "ah": a_high, "bl": b_low, "bh": b_high}) \
        .group_by("s", "al", "ah", "bl", "bh").len()
    count = cells.get_column("len").to_numpy()
    al, ah, bl, bh = (np.clip(cells.get_column(c).to_numpy(), -FAR, FAR)
                      for c in ("al", "ah", "bl", "bh"))
    corners = np.concatenate([np.column_stack(p) for p in ((ah, bh), (al, bh), (ah, bl),
                                                           (al, bl))])

    def minus_loglik(rho: float) -> float:
        cdf = stats.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]]).cdf(corners)
        k = count.size
        p = cdf[:k] - cdf[k:2 * k] - cdf[2 * k:3 * k] + cdf[3 * k:]
        return -float(np.sum(count * np.log(np.maximum(p, 1e-300))))

    bound = COPULA_MAX_CORRELATION
    return float(optimize.minimize_scalar(minus_loglik, bounds=(-bound, bound),
                                          method="bounded", options={"xatol": 1e-5}).x)


def baseline_table(rows_file: str | Path, specs: Sequence[CovariateSpec]) -> dict[str, object]:
    """The scenario's ``[baseline]`` table: new persons take whole rows of ``rows_file`` (as
    written by :func:`baseline_rows`) from their own site, for every covariate in ``specs``."""
    return {"rows": str(rows_file), "site_column": "site",
            "columns": [spec.name for spec in specs]}
