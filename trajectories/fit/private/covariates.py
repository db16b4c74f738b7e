"""Private covariate model: bounds, marginals and copula from noisy counts, and the scaled
design the private hazards use.

- Bounds of a number: :func:`~trajectories.fit.private.mechanisms.release_ranges` (noisy
  octave counts, then quarter-octaves at the ends), rounded inward for whole numbers.
- Marginals per site: level or value counts (categorical, and whole numbers with at most
  ``DISCRETE_MAX_VALUES`` values in their bounds) or a tree histogram on the bounds
  (``quantiles``), each made consistent with the site's released count; the pooled marginal is
  their mixture. A site keeps its own marginals only when its count is at least
  ``OWN_NOISE_SDS`` noise sds (and ``OWN_MARGINALS_MIN`` persons).
- Copula: every person's normal scores under the released marginals (mid-point scores of a
  level or value, Phi^-1 of the released distribution function of a number), clipped to
  +-``SCORE_CLIP``; the noisy sums of their pairwise products give the correlation after the
  marginals' exact means, sds and attenuation (E[Z g] / sd(g), Stein's lemma for a clipped
  normal: P(|Z| < c)) are taken out, then made positive definite as in
  :func:`trajectories.fit.covariates.copula_table`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats
from scipy.special import ndtri

from trajectories.fit.covariates import CovariateSpec, check_level_names, positive_definite
from trajectories.fit.private.accounting import Budget
from trajectories.fit.private.effects import Design
from trajectories.fit.private.mechanisms import (
    Leaves,
    Mechanisms,
    age_edges,
    integer_edges,
    mixture,
    octave_edges,
    release_ranges,
    simplex_projection,
    tree_histogram,
)
from trajectories.fit.synthesis import (
    DISCRETE_MAX_VALUES,
    OWN_MARGINALS_MIN,
    CovariateModel,
    Marginal,
)

OWN_NOISE_SDS = 20.0
"""A site's own distributions need a released count of at least this many noise sds."""
QUANTILE_KNOTS = 21
BRANCHING = (16, 8)
SCORE_CLIP = 2.0
COPULA_MAX_SD = 0.05
"""The copula is released only when its correlations' predicted noise sd is below this."""
SITE = "site"


@dataclass(frozen=True)
class Schema:
    """What is public about a covariate: its name, kind, level set, whole-number flag."""

    name: str
    kind: str  # "numeric" | "categorical"
    levels: tuple[str, ...] = ()
    integer: bool = False


def public_schema(rows: pl.DataFrame, names: Sequence[str]) -> list[Schema]:
    """The covariates' public schema as the reference's columns declare it (levels sorted,
    the first the reference level, as the exact fit codes them)."""
    out = []
    for name in names:
        column = rows.get_column(name)
        if column.dtype.is_numeric() or column.dtype == pl.Boolean:
            values = column.cast(pl.Float64).to_numpy()
            out.append(Schema(name, "numeric", integer=bool(np.all(values == np.round(values)))))
        else:
            levels = sorted(column.cast(pl.String).unique().to_list())
            check_level_names(name, levels)
            out.append(Schema(name, "categorical", levels=tuple(levels)))
    return out


def copula_sd(n: int, q: int, sigma_of: float) -> float:
    """Predicted noise sd of a released correlation (``sigma_of``: the release's noise sd per
    unit of sensitivity)."""
    sensitivity = 2 * math.sqrt(q * (q - 1) / 2) * SCORE_CLIP**2
    return sensitivity * sigma_of / max(n, 1)


@dataclass
class _Fitted:
    schema: Schema
    low: float = 0.0
    high: float = 0.0
    cells: Sequence[float] = ()  # discrete values (or level names' positions)
    site_leaves: list[Leaves] | None = None  # quantiles
    site_probabilities: np.ndarray | None = None  # (sites, cells) categorical / discrete

    @property
    def kind(self) -> str:
        if self.schema.kind == "categorical":
            return "categorical"
        return "quantiles" if self.site_leaves is not None else "discrete"


def fit_covariates(
    mechanisms: Mechanisms, budget: Budget, rows: pl.DataFrame, schema: list[Schema],
    site_index: np.ndarray, sites: list[str], site_counts: np.ndarray, centers: Mapping[str, float],
    site_effects: bool, notes: list[str],
) -> tuple[list[CovariateSpec], CovariateModel, Design]:
    """Specs, covariate model and scaled design (see the module docstring)."""
    numeric = [s for s in schema if s.kind == "numeric"]
    bounds: dict[str, tuple[float, float]] = {}
    if numeric:
        # age is in years, 0 to 128 at most: public, and a grid of 8 cells instead of ~70
        grids = [age_edges() if s.name == "age" else integer_edges() if s.integer
                 else octave_edges() for s in numeric]
        ranges = release_ranges(mechanisms, "numeric covariates on the range grid",
                                [rows.get_column(s.name).cast(pl.Float64).to_numpy()
                                 for s in numeric], [s.integer for s in numeric],
                                budget.share("covariate_bounds"), rows.height, grids=grids)
        for s, (low, high) in zip(numeric, ranges, strict=True):
            if s.integer:  # the whole numbers in [low, high)
                low, high = math.ceil(low), math.ceil(high) - 1
                high = max(high, low)
            bounds[s.name] = (float(low), float(high))
    share = budget.share("covariate_marginals") / max(len(schema), 1)
    sigma_cell = mechanisms.accountant.sigma(math.sqrt(2), share) if schema else 0.0
    own = [i for i, _ in enumerate(sites) if len(sites) > 1
           and site_counts[i] >= max(OWN_MARGINALS_MIN, OWN_NOISE_SDS * sigma_cell)]
    fitted = [_marginal(mechanisms, rows, s, bounds.get(s.name), site_index, site_counts, share)
              for s in schema]
    marginals, site_marginals = {}, {sites[i]: {} for i in own}
    for f in fitted:
        marginals[f.schema.name] = _as_marginal(f, None, site_counts)
        for i in own:
            site_marginals[sites[i]][f.schema.name] = _as_marginal(f, i, site_counts)
    small = [sites[i] for i in range(len(sites)) if i not in own] if len(sites) > 1 else []
    model_notes = ([f"site(s) {small} draw the pooled covariate marginals (released counts "
                    f"under {OWN_NOISE_SDS:g} noise sds or {OWN_MARGINALS_MIN} persons)"]
                   if small and schema else [])
    correlation = None
    if budget.share("copula") > 0:
        correlation = _copula(mechanisms, budget, rows, fitted, site_index, site_counts, own)
    specs, design = _design(rows, fitted, sites, site_index, centers, site_effects, notes)
    return specs, CovariateModel(marginals, site_marginals, correlation, model_notes), design


def _marginal(mechanisms: Mechanisms, rows: pl.DataFrame, schema: Schema,
              bound: tuple[float, float] | None, site_index: np.ndarray,
              site_counts: np.ndarray, share: float) -> _Fitted:
    column = rows.get_column(schema.name)
    if schema.kind == "categorical":
        position = {lv: i for i, lv in enumerate(schema.levels)}
        cell = np.array([position[v] for v in column.cast(pl.String).to_list()], dtype=np.int64)
        probabilities = _cell_shares(mechanisms, f"levels of {schema.name} per site", cell,
                                     len(schema.levels), site_index, site_counts, share)
        return _Fitted(schema, cells=tuple(range(len(schema.levels))),
                       site_probabilities=probabilities)
    values = column.cast(pl.Float64).to_numpy()
    low, high = bound
    if schema.integer and high - low + 1 <= DISCRETE_MAX_VALUES:
        support = np.arange(low, high + 1)
        cell = (np.clip(np.round(values), low, high) - low).astype(np.int64)
        probabilities = _cell_shares(mechanisms, f"values of {schema.name} per site", cell,
                                     support.size, site_index, site_counts, share)
        return _Fitted(schema, low, high, cells=tuple(float(v) for v in support),
                       site_probabilities=probabilities)
    top = high if high > low else low + 1.0
    leaves = tree_histogram(mechanisms, f"{schema.name} per site", values, site_index,
                            site_counts, low, top, BRANCHING, share)
    return _Fitted(schema, low, high, site_leaves=leaves)


def _cell_shares(mechanisms: Mechanisms, what: str, cell: np.ndarray, cells: int,
                 site_index: np.ndarray, site_counts: np.ndarray, share: float) -> np.ndarray:
    n_sites = site_counts.size
    counts = np.bincount(site_index * cells + cell, minlength=n_sites * cells).astype(float)
    noisy, _ = mechanisms.gaussian(what, counts, math.sqrt(2), share)
    noisy = noisy.reshape(n_sites, cells)
    return np.stack([simplex_projection(noisy[i], site_counts[i]) for i in range(n_sites)])


def _as_marginal(f: _Fitted, site: int | None, site_counts: np.ndarray) -> Marginal:
    """The pooled (``site`` None) or a site's marginal."""
    if f.site_leaves is not None:
        leaves = (mixture(f.site_leaves, site_counts) if site is None else f.site_leaves[site])
        knots = leaves.quantiles(np.linspace(0.0, 1.0, QUANTILE_KNOTS))
        knots = np.maximum.accumulate(np.clip(knots, f.low, max(f.high, f.low)))
        return Marginal("quantiles", values=tuple(float(v) for v in knots),
                        integer=f.schema.integer)
    counts = (f.site_probabilities.sum(axis=0) if site is None else f.site_probabilities[site])
    shares = counts / counts.sum() if counts.sum() > 0 else np.full(counts.size,
                                                                     1.0 / counts.size)
    if f.schema.kind == "categorical":
        return Marginal("categorical", levels=f.schema.levels,
                        probabilities=tuple(float(p) for p in shares))
    return Marginal("discrete", values=tuple(f.cells), probabilities=tuple(float(p)
                                                                           for p in shares))


def _scores(f: _Fitted, values: pl.Series, site_index: np.ndarray, own: list[int],
            site_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per person the clipped normal score, and per site the score's mean, second moment and
    attenuation E[Z g] under the released marginal the site draws."""
    n_sites = site_counts.size
    score = np.zeros(values.len())
    mean, second, linear = np.zeros(n_sites), np.zeros(n_sites), np.zeros(n_sites)
    pooled_site = [i if i in own else None for i in range(n_sites)]
    if f.site_leaves is not None:
        pooled = mixture(f.site_leaves, site_counts)
        x = values.cast(pl.Float64).to_numpy()
        tail = 1 - stats.norm.cdf(SCORE_CLIP)
        inside = 1 - 2 * tail
        for i in range(n_sites):
            leaves = pooled if pooled_site[i] is None else f.site_leaves[pooled_site[i]]
            rows = site_index == i
            u = np.clip(leaves.cdf(x[rows]), 1e-6, 1 - 1e-6)
            score[rows] = np.clip(ndtri(u), -SCORE_CLIP, SCORE_CLIP)
            second[i] = inside - 2 * SCORE_CLIP * stats.norm.pdf(SCORE_CLIP) + 2 * tail * (
                SCORE_CLIP**2)
            linear[i] = inside
        return score, mean, second, linear
    if f.schema.kind == "categorical":
        position = {lv: i for i, lv in enumerate(f.schema.levels)}
        cell = np.array([position[v] for v in values.cast(pl.String).to_list()], dtype=np.int64)
    else:
        cell = (np.clip(np.round(values.cast(pl.Float64).to_numpy()), f.low, f.high)
                - f.low).astype(np.int64)
    for i in range(n_sites):
        counts = (f.site_probabilities.sum(axis=0) if pooled_site[i] is None
                  else f.site_probabilities[i])
        p = counts / counts.sum() if counts.sum() > 0 else np.full(counts.size, 1 / counts.size)
        high = np.clip(np.cumsum(p), 0.0, 1.0)
        low = high - p
        g = np.clip(ndtri(np.clip((low + high) / 2, 1e-6, 1 - 1e-6)), -SCORE_CLIP, SCORE_CLIP)
        rows = site_index == i
        score[rows] = g[cell[rows]]
        mean[i], second[i] = float(p @ g), float(p @ g**2)
        linear[i] = float(g @ (stats.norm.pdf(ndtri(np.clip(low, 0, 1)))
                               - stats.norm.pdf(ndtri(np.clip(high, 0, 1)))))
    return score, mean, second, linear


def _copula(mechanisms: Mechanisms, budget: Budget, rows: pl.DataFrame, fitted: list[_Fitted],
            site_index: np.ndarray, site_counts: np.ndarray,
            own: list[int]) -> tuple[list[str], list[list[float]]] | None:
    names, scores, means, seconds, linears = [], [], [], [], []
    for f in fitted:
        score, mean, second, linear = _scores(f, rows.get_column(f.schema.name), site_index, own,
                                              site_counts)
        names.append(f.schema.name)
        scores.append(score)
        means.append(mean)
        seconds.append(second)
        linears.append(linear)
    q = len(names)
    g = np.column_stack(scores)
    upper = np.triu_indices(q, k=1)
    products = (g[:, upper[0]] * g[:, upper[1]]).sum(axis=0)
    noisy, _ = mechanisms.gaussian("products of covariates' normal scores", products,
                                   2 * math.sqrt(q * (q - 1) / 2) * SCORE_CLIP**2,
                                   budget.share("copula"))
    weight = site_counts / max(site_counts.sum(), 1e-12)
    m = np.stack(means)  # (q, sites)
    variance = np.stack(seconds) @ weight - (m**2) @ weight
    sd = np.sqrt(np.maximum(variance, 1e-12))
    attenuation = (np.stack(linears) @ weight) / sd
    usable = (sd > 1e-6) & (np.abs(attenuation) > 1e-6)
    r = np.eye(q)
    n = max(float(site_counts.sum()), 1.0)
    for k, (a, b) in enumerate(zip(*upper, strict=True)):
        covariance = noisy[k] / n - float((m[a] * m[b]) @ weight)
        r[a, b] = r[b, a] = covariance / (sd[a] * sd[b] * attenuation[a] * attenuation[b])
    keep = np.flatnonzero(usable)
    if keep.size < 2:
        return None
    r = positive_definite(r[np.ix_(keep, keep)])
    return [names[i] for i in keep], r.tolist()


def one_hot_bound(levels: int) -> float:
    """Largest ||x||^2 of a level's dummies (all levels but the first) centred at 1 / levels:
    (levels - 1) / levels^2 for the first level, (1 - 1/L)^2 + (L - 2) / L^2 for the others."""
    c = 1.0 / levels
    return max(c * c * (levels - 1), (1 - c) ** 2 + c * c * (levels - 2))


def _design(rows: pl.DataFrame, fitted: list[_Fitted], sites: list[str], site_index: np.ndarray,
            centers: Mapping[str, float], site_effects: bool,
            notes: list[str]) -> tuple[list[CovariateSpec], Design]:
    """Specs and the scaled design: numbers (clip(v) - mid) / half on their released bounds,
    dummies of levels but the first (and of sites but the first, largest) centred at 1 / levels
    (a binary covariate is -1/2 or 1/2: a quarter of the uncentred bound on ||x||^2, and the
    effects unchanged; the baseline moves back to the reference level through ``offset``)."""
    specs, columns, blocks, groups, scale, offset = [], [], [], [], [], []
    q = 0.0
    constant = []
    for f in fitted:
        s = f.schema
        if s.kind == "categorical":
            specs.append(CovariateSpec(s.name, "categorical", levels=s.levels))
            if len(s.levels) < 2:
                constant.append(s.name)
                continue
            text = rows.get_column(s.name).cast(pl.String)
            for level in s.levels[1:]:
                blocks.append((text == level).cast(pl.Float64).to_numpy() - 1 / len(s.levels))
                columns.append((s.name, level))
                groups.append(len(specs))
                scale.append(1.0)
                offset.append(-1 / len(s.levels))
            q += one_hot_bound(len(s.levels))
            continue
        middle, half = (f.low + f.high) / 2, (f.high - f.low) / 2
        center = float(centers.get(s.name, middle))
        specs.append(CovariateSpec(s.name, "numeric", center=center))
        if half <= 0:
            constant.append(s.name)
            continue
        values = rows.get_column(s.name).cast(pl.Float64).to_numpy()
        blocks.append((np.clip(values, f.low, f.high) - middle) / half)
        columns.append((s.name, None))
        groups.append(-1)
        scale.append(half)
        offset.append(center - middle)
        q += 1
    if constant:
        notes.append(f"covariate(s) {constant} have one released value or level: no effect")
    if site_effects and len(sites) > 1:
        for i, site in enumerate(sites[1:], start=1):
            blocks.append((site_index == i).astype(float) - 1 / len(sites))
            columns.append((SITE, site))
            groups.append(len(specs) + 1)
            scale.append(1.0)
            offset.append(-1 / len(sites))
        q += one_hot_bound(len(sites))
    x = np.column_stack(blocks) if blocks else np.zeros((rows.height, 0))
    return specs, Design(x, columns, np.asarray(groups, dtype=np.int64),
                         np.asarray(scale, dtype=float), np.asarray(offset, dtype=float), q)
