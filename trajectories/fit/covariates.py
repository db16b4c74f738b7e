"""Baseline covariates of a reference cohort: the rows to resample (and the scenario's
``[baseline]`` table pointing to them), how each column enters the hazard models (centred
number or dummy-coded levels), and per-site marginal distributions (truncated normals and
categorical levels) that declare the covariates and serve ``covariate_draw='marginal'``,
with the normal-scores correlation that joins them there (the scenario's ``[copula]``).
"""

from __future__ import annotations

import math
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
        bad = [lv for lv in levels if not re.fullmatch(LEVEL_NAME, lv) or len(lv) > 64]
        if bad:
            raise CovariateError(
                f"reference cohort: covariate {name!r} has level(s) {bad[:5]} that are not "
                "usable names in a scenario (a letter, then letters, digits, '_', '.', '-'); "
                "recode them"
            )
        specs.append(CovariateSpec(name, "categorical", levels=tuple(levels)))
    return specs


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


# -- marginals for today's schema ------------------------------------------------------------------


def _truncated_mean(mu: float, sd: float, low: float, high: float) -> float:
    a, b = (low - mu) / sd, (high - mu) / sd
    return float(stats.truncnorm.mean(a, b, loc=mu, scale=sd))


def truncated_normal_location(mean: float, sd: float, low: float, high: float) -> float:
    """The normal's mean parameter whose truncation to [low, high] has mean ``mean``."""
    if not low < mean < high or sd <= 0:
        return mean
    lo, hi = low - 10 * sd - (high - low), high + 10 * sd + (high - low)
    try:
        return float(optimize.brentq(lambda mu: _truncated_mean(mu, sd, low, high) - mean,
                                     lo, hi, xtol=1e-10 * max(1.0, abs(mean))))
    except ValueError:
        return mean


def marginals(
    rows: pl.DataFrame, specs: Sequence[CovariateSpec], sites: Sequence[str]
) -> tuple[dict[str, dict], dict[str, dict[str, float | dict[str, float]]], list[str]]:
    """Scenario ``[covariates]`` tables and each site's ``case_mix``, and notes.

    Numbers become normals truncated to the observed range, with the within-site standard
    deviation and mean parameters solved so that each site's truncated mean equals its sample
    mean (the site's shift is its ``case_mix``); text becomes categorical levels with pooled
    and per-site proportions. Dependence between covariates is not kept (resampling the rows
    keeps it; see :func:`resample_rows`).
    """
    covariates: dict[str, dict] = {}
    case_mix: dict[str, dict] = {site: {} for site in sites}
    notes: list[str] = []
    for spec in specs:
        if spec.kind == "categorical":
            counts = rows.group_by("site", spec.name).len()
            total = rows.height
            pooled = {lv: int(counts.filter(pl.col(spec.name) == lv)["len"].sum()) / total
                      for lv in spec.levels}
            covariates[spec.name] = {"kind": "categorical", "levels": _normalised(pooled),
                                     "reference": spec.levels[0]}
            if len(sites) > 1:
                for site in sites:
                    here = counts.filter(pl.col("site") == site)
                    n = int(here["len"].sum())
                    share = {lv: int(here.filter(pl.col(spec.name) == lv)["len"].sum()) / n
                             for lv in spec.levels}
                    case_mix[site][spec.name] = _normalised(share)
            continue
        values = rows.get_column(spec.name).cast(pl.Float64)
        low, high = float(values.min()), float(values.max())
        if values.n_unique() <= 2:
            notes.append(f"covariate {spec.name!r} takes two values; drawn from a truncated "
                         "normal with its mean (covariate_draw='resample' keeps its values)")
        stats_by_site = rows.group_by("site").agg(
            pl.col(spec.name).cast(pl.Float64).mean().alias("mean"),
            pl.col(spec.name).cast(pl.Float64).var(ddof=0).alias("var"),
            pl.len().alias("n"),
        )
        within = float((stats_by_site["var"] * stats_by_site["n"]).sum() / rows.height)
        sd = math.sqrt(within) if within > 0 else max(1e-6, (high - low) / 100 or 1e-6)
        if high <= low:
            high = low + sd
        mean = float(values.mean())
        location = truncated_normal_location(mean, sd, low, high)
        covariates[spec.name] = {"kind": "normal", "mean": location, "sd": sd, "min": low,
                                 "max": high, "center": spec.center}
        if len(sites) > 1:
            for row in stats_by_site.iter_rows(named=True):
                site_location = truncated_normal_location(row["mean"], sd, low, high)
                case_mix[row["site"]][spec.name] = site_location - location
    return covariates, case_mix, notes


COPULA_MAX_CORRELATION = 0.999
"""Estimated correlations are clipped to +-this (a perfectly tied pair has no density)."""
COPULA_MIN_EIGENVALUE = 1e-3
"""Smallest eigenvalue kept (a rounded matrix must stay positive definite)."""
SITE_COLUMN = "site"


def copula_table(rows: pl.DataFrame, specs: Sequence[CovariateSpec]) -> dict[str, object] | None:
    """The scenario's ``[copula]``: the normal-scores correlation of the covariates (None when
    fewer than two vary).

    Each covariate is ranked within its site (numbers by value, categories by their level
    position in ``specs``; ties take the mid-rank): a person spans the normal interval
    (a, b) = Phi^-1 of its rank range / n and scores g = Phi^-1(mid-rank / n). Pearson
    correlations of the scores, pooled over sites (so case-mix is not mistaken for
    dependence), are divided by each score's attenuation E[Z g] / sd(g) (1 without ties,
    E[Z | a < Z < b] = (phi(a) - phi(b)) / (Phi(b) - Phi(a)) with them), which undoes the
    loss of coarse categories to first order; the matrix is then made positive definite.
    """
    scores, attenuation, names = [], [], []
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
    if len(names) < 2:
        return None
    r = np.corrcoef(np.column_stack(scores), rowvar=False) / np.outer(attenuation, attenuation)
    r = np.clip((r + r.T) / 2, -COPULA_MAX_CORRELATION, COPULA_MAX_CORRELATION)
    np.fill_diagonal(r, 1.0)
    values, vectors = np.linalg.eigh(r)
    if values[0] < COPULA_MIN_EIGENVALUE:
        r = (vectors * np.maximum(values, COPULA_MIN_EIGENVALUE)) @ vectors.T
        scale = 1 / np.sqrt(np.diag(r))
        r = r * np.outer(scale, scale)
    r = np.round((r + r.T) / 2, 6)
    np.fill_diagonal(r, 1.0)
    return {"covariates": names, "correlation": r.tolist()}


def _normalised(shares: dict[str, float]) -> dict[str, float]:
    total = sum(shares.values())
    out = {k: v / total for k, v in shares.items()}
    last = next(reversed(out))
    out[last] = max(0.0, 1.0 - sum(v for k, v in out.items() if k != last))
    return out


def baseline_table(rows_file: str | Path, specs: Sequence[CovariateSpec]) -> dict[str, object]:
    """The scenario's ``[baseline]`` table: new persons take whole rows of ``rows_file`` (as
    written by :func:`baseline_rows`) from their own site, for every covariate in ``specs``."""
    return {"rows": str(rows_file), "site_column": "site",
            "columns": [spec.name for spec in specs]}


# -- resampling ------------------------------------------------------------------------------------


def resample_rows(
    rows: pl.DataFrame, sites: np.ndarray, site_names: Sequence[str], rng: np.random.Generator
) -> pl.DataFrame:
    """For each new person (``sites``: index into ``site_names``), a baseline row drawn with
    replacement from the reference rows of the same site; covariates keep their joint law."""
    ordered = rows.sort("site", maintain_order=True)
    labels = ordered.get_column("site").to_numpy()
    names = np.asarray(site_names)
    starts = np.searchsorted(labels, names, side="left")
    counts = np.searchsorted(labels, names, side="right") - starts
    empty = [str(s) for s, c in zip(names, counts, strict=True) if c == 0]
    if empty:
        raise CovariateError(f"resampling baseline rows: no reference rows for site(s) {empty}")
    picks = starts[sites] + np.floor(rng.random(sites.size) * counts[sites]).astype(np.int64)
    return ordered[picks]
