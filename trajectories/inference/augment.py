"""A small real cohort augmented by a large synthetic one, validly: prediction-powered
inference with power tuning (PPI++, Angelopoulos, Duchi & Zrnic 2023, "PPI++: Efficient
Prediction-Powered Inference") adapted to a Cox log hazard ratio, a landmark survival and an
RMST.

What plays the role of the predictions. PPI needs, for every real person, a prediction whose
mean over the real persons is known without the real outcomes, from a large set drawn from the
same population. Here the synthetic source predicts, for a person with given baseline
covariates, how much that person moves the estimate: ``h(c)``, the synthetic cohort's mean
influence on its own estimate among its persons in covariate cell ``c`` (numeric covariates
cut at the synthetic quartiles, categorical ones exact), per person. Its mean over the
synthetic persons is zero; its mean over the real persons, ``Delta = mean_real h(c_i) -
mean_syn h(c_j)``, is the first-order difference between the same estimator on a synthetic
sample matched to the real persons' covariates (the matched-sample estimator of Byun et al.
2025, "Valid Inference with Imperfect Synthetic Data", with many matches per person) and on
the whole synthetic cohort. The estimate is

    theta_PP = theta_real - lambda * Delta

with lambda = Cov(theta_real, Delta) / Var(Delta) clipped to [0, 1] (PPI++'s tuning: lambda
= 0 gives the real-only estimate back). Variance: with a_i the real persons' influence terms
(sum a_i = theta_real - theta), Var(theta_real) = n/(n-1) sum (a_i - abar)^2 (the robust /
infinitesimal-jackknife variance), Cov = sum (a_i - abar)(h_i - hbar) / (n - 1), and
Var(Delta) = Var_real(h)/n + Var_syn(h)/N, the two samples being independent, so

    Var(theta_PP) = Var(theta_real) - 2 lambda Cov + lambda^2 Var(Delta).

Why it stays valid when the synthetic source is wrong. E[Delta] = sum_c (p_real(c) -
p_syn(c)) h(c): zero whenever the synthetic covariate mix matches the real one, whatever the
synthetic hazards, effects or hazard ratio are (a wrong outcome model only makes h a worse
predictor, so lambda shrinks towards 0). A synthetic cohort whose covariate mix differs from
the real one breaks this; ``shift_z = Delta / sd(Delta)`` is that departure in standard errors
(|shift_z| > 3: suspect it). Gains come only from what the covariates explain of the estimate:
they are largest for a landmark survival with strongly prognostic covariates and small for a
hazard ratio of a randomised arm. A synthetic cohort simulated from a model fitted to the same
real persons adds nothing (its information is theirs); the use is an external source, e.g. a
natural-history model of a rare disease.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from trajectories.cohort import Cohort
from trajectories.errors import InferenceError
from trajectories.inference.analyses import (
    Analysis,
    choose_endpoint,
    cohort_endpoints,
    known_covariates,
)
from trajectories.inference.replicates import REPLICATE_KEY, read_replicates
from trajectories.inference.rules import interval
from validation.endpoints import endpoint_times

NULL_LEVEL = "<null>"
RULE = "ppi++"


@dataclass(frozen=True)
class AugmentedResult:
    """A PPI++ estimate on the reported scale with its interval, beside the real-only one and
    the naive one (real and synthetic persons pooled as if all were real); ``theta`` and
    ``variance`` are on the working scale."""

    analysis: str
    estimate: float
    ci: tuple[float, float]
    real_estimate: float
    real_ci: tuple[float, float]
    naive_ci: tuple[float, float]
    theta: float
    variance: float
    real_theta: float
    real_variance: float
    synthetic_theta: float
    lam: float
    shift_z: float
    n_real: int
    n_synthetic: int
    match_on: list[str]
    cells: int
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)

    @property
    def rule(self) -> str:
        return RULE

    def as_json(self) -> dict[str, Any]:
        """What ``trajectories analyze REAL --augment SYNTHETIC --json`` prints."""
        return {"estimate": _number(self.estimate), "ci": [_number(x) for x in self.ci],
                "naive_ci": [_number(x) for x in self.naive_ci], "m": 1, "rule": RULE,
                "df": None, "analysis": self.analysis,
                "real_ci": [_number(x) for x in self.real_ci], "lambda": self.lam,
                "shift_z": _number(self.shift_z)}


def prediction_powered(
    real_rows: pl.DataFrame,
    synthetic_rows: pl.DataFrame,
    analysis: Analysis,
    *,
    match_on: Sequence[str],
    bins: int = 4,
    alpha: float = 0.05,
    label: str = "",
) -> AugmentedResult:
    """PPI++ on endpoint rows (time, event, covariates) of the real and the synthetic persons;
    ``analysis`` already bound (:meth:`Analysis.bind`); cells from ``match_on`` (see the module
    docstring for the estimator, its variance and when it is valid)."""
    if bins < 1:
        raise InferenceError(f"bins must be >= 1, got {bins}")
    theta_r, a = analysis.influence(real_rows, "real cohort")
    theta_s, g = analysis.influence(synthetic_rows, "synthetic cohort")
    n, big_n = a.size, g.size
    if n < 2:
        raise InferenceError("real cohort: at least two persons are needed")
    real_cells, synthetic_cells, cells = covariate_cells(real_rows, synthetic_rows, match_on,
                                                         bins)
    counts = np.bincount(synthetic_cells, minlength=cells)
    h_cell = big_n * np.bincount(synthetic_cells, weights=g, minlength=cells) / np.maximum(
        counts, 1)
    h_real, h_syn = h_cell[real_cells], h_cell[synthetic_cells]
    uncovered = int(np.sum(counts[real_cells] == 0))
    notes = [f"{uncovered} real person(s) in covariate cells without synthetic persons "
             "(predicted influence 0 there)"] if uncovered else []
    delta = float(h_real.mean() - h_syn.mean())
    centred = a - a.mean()
    var_real = float(n / (n - 1) * np.sum(centred**2))
    cov = float(np.sum(centred * (h_real - h_real.mean())) / (n - 1))
    var_delta = float(h_real.var(ddof=1) / n + (h_syn.var(ddof=1) / big_n if big_n > 1 else 0))
    lam = float(np.clip(cov / var_delta, 0.0, 1.0)) if var_delta > 0 else 0.0
    theta = theta_r - lam * delta
    variance = var_real - 2 * lam * cov + lam**2 * var_delta
    columns = analysis.columns()
    pooled = pl.concat([real_rows.select(columns), synthetic_rows.select(columns)],
                       how="vertical_relaxed")
    theta_p, pooled_terms = analysis.influence(pooled, "real and synthetic cohorts pooled")
    naive = interval(theta_p, float(np.sum(pooled_terms**2)), alpha)
    return AugmentedResult(
        analysis=label, estimate=analysis.shown(theta),
        ci=analysis.shown_interval(*interval(theta, variance, alpha)),
        real_estimate=analysis.shown(theta_r),
        real_ci=analysis.shown_interval(*interval(theta_r, var_real, alpha)),
        naive_ci=analysis.shown_interval(*naive), theta=theta, variance=variance,
        real_theta=theta_r, real_variance=var_real, synthetic_theta=theta_s, lam=lam,
        shift_z=delta / math.sqrt(var_delta) if var_delta > 0 else math.nan, n_real=n,
        n_synthetic=big_n, match_on=list(match_on), cells=cells, alpha=alpha,
        notes=notes)


def covariate_cells(real_rows: pl.DataFrame, synthetic_rows: pl.DataFrame,
                    match_on: Sequence[str], bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Cell numbers of the real and synthetic rows: categorical covariates exact, numeric ones
    with more than ``bins`` values cut at the synthetic quantiles (coarsened exact matching,
    Iacus, King & Porro 2012). A real category no synthetic person has is an error naming it;
    a combination of categories none has is a cell of its own (its prediction is 0)."""
    n_real = real_rows.height
    codes = []
    for name in match_on:
        for rows, side in ((real_rows, "real"), (synthetic_rows, "synthetic")):
            if name not in rows.columns:
                raise InferenceError(f"match on {name!r}: no such column in the {side} rows; "
                                     f"have {rows.columns}")
        real, synthetic = real_rows.get_column(name), synthetic_rows.get_column(name)
        if _binned(real, synthetic, bins):
            values = synthetic.drop_nulls().to_numpy().astype(np.float64)
            edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
            both = pl.concat([real.cast(pl.Float64), synthetic.cast(pl.Float64)])
            code = np.searchsorted(edges, both.fill_null(np.nan).to_numpy(), side="right")
            codes.append(np.where(both.is_null().to_numpy(), -1, code))
            continue
        text = pl.concat([real.cast(pl.String), synthetic.cast(pl.String)]).fill_null(
            NULL_LEVEL)
        unseen = sorted(set(text[:n_real].to_list()) - set(text[n_real:].to_list()))
        if unseen:
            raise InferenceError(
                f"real persons have {name}={unseen[0]!r}, which no synthetic person has; the "
                f"synthetic cohort does not cover the real covariates: leave {name!r} out of "
                "the matching")
        codes.append(np.unique(np.array(text.to_list()), return_inverse=True)[1].ravel())
    key = np.zeros(n_real + synthetic_rows.height, dtype=np.int64)
    for code in codes:  # one integer per combination of codes (mixed radix)
        shifted = code - code.min()
        key = key * (int(shifted.max()) + 1) + shifted
    cell = np.unique(key, return_inverse=True)[1].ravel()
    return cell[:n_real], cell[n_real:], int(cell.max()) + 1


def _binned(real: pl.Series, synthetic: pl.Series, bins: int) -> bool:
    return (real.dtype.is_numeric() and synthetic.dtype.is_numeric()
            and synthetic.n_unique() > bins)


def default_match_on(real: Cohort, synthetic: Cohort, bins: int = 4) -> tuple[list[str],
                                                                             list[str]]:
    """Covariates of both cohorts on which every real person has synthetic counterparts (for
    categories: every real value occurs among the synthetic persons), and notes on those left
    out."""
    theirs = set(known_covariates(synthetic))
    chosen, notes = [], []
    for name in known_covariates(real):
        if name not in theirs:
            continue
        column, other = real.persons.get_column(name), synthetic.persons.get_column(name)
        if not _binned(column, other, bins):
            unseen = set(column.cast(pl.String).fill_null(NULL_LEVEL).to_list()) - set(
                other.cast(pl.String).fill_null(NULL_LEVEL).to_list())
            if unseen:
                notes.append(f"not matched on {name!r}: real value(s) "
                             f"{sorted(unseen)[:3]} absent from the synthetic cohort")
                continue
        chosen.append(name)
    return chosen, notes


def augment(
    real: Cohort | str | Path,
    synthetic: Cohort | str | Path,
    analysis: Analysis,
    *,
    match_on: Sequence[str] | None = None,
    bins: int = 4,
    alpha: float = 0.05,
) -> AugmentedResult:
    """PPI++ estimate of ``analysis`` for the real cohort, powered by the synthetic one (module
    docstring). Endpoints are the real cohort's defaults; ``match_on`` defaults to the
    covariates both cohorts share (:func:`default_match_on`)."""
    real_cohort, where = _one_cohort(real, "real"), f"real cohort {_name(real)}"
    synthetic_cohort = _one_cohort(synthetic, "synthetic")
    if (real_cohort.manifest.model_extra or {}).get(REPLICATE_KEY) is not None:
        raise InferenceError(f"{where}: its manifest has a '{REPLICATE_KEY}' key, it is "
                             "synthetic; augment a real cohort")
    endpoint = choose_endpoint(cohort_endpoints(real_cohort), analysis.endpoint, analysis,
                               where)
    real_rows = endpoint_times(real_cohort, endpoint)
    bound = analysis.bind(real_rows, known_covariates(real_cohort), where)
    notes: list[str] = []
    if match_on is None:
        match_on, notes = default_match_on(real_cohort, synthetic_cohort, bins)
    synthetic_rows = endpoint_times(synthetic_cohort, endpoint)
    for name in match_on:
        if name not in real_rows.columns or name not in synthetic_rows.columns:
            raise InferenceError(f"match on {name!r}: not a covariate of both cohorts; the "
                                 f"real one has {', '.join(known_covariates(real_cohort))}")
    columns = list(dict.fromkeys([*bound.columns(), *match_on]))
    result = prediction_powered(real_rows.select(columns), synthetic_rows.select(columns),
                                bound, match_on=match_on, bins=bins, alpha=alpha,
                                label=bound.label(endpoint.name))
    return replace(result, notes=notes + result.notes)


def _one_cohort(source: Cohort | str | Path, what: str) -> Cohort:
    if isinstance(source, Cohort):
        return source
    replicates = read_replicates(source)
    if replicates.folder:
        raise InferenceError(f"{what} cohort {source}: a folder of {replicates.m} replicates; "
                             "give one cohort directory")
    return replicates.cohorts[0]


def _name(source: Cohort | str | Path) -> str:
    return "(in memory)" if isinstance(source, Cohort) else str(source)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None
