"""Estimates with each person's influence on them: Kaplan-Meier landmark survival, RMST, Cox.

``influence[i]`` is person i's term in the linearisation ``estimate - truth ~ sum_i
influence[i]`` (so the terms sum to about zero and their squares to a variance). The
augmented estimators of :mod:`trajectories.inference.augment` need them per person; they are
numpy code on sorted times, a few milliseconds for thousands of persons.

- Kaplan-Meier (Kaplan & Meier 1958): on log S(t), the derivative of the estimate in person
  i's weight (the infinitesimal jackknife, Efron 1982): dN_i(t_k) / (n_k - d_k) less
  d_k / (n_k (n_k - d_k)) summed over the times t_k <= min(T_i, t) it is at risk, negated;
  the squares sum to about Greenwood's variance;
- RMST up to tau: the same, weighted by the area A(t_k) under the curve from t_k to tau;
- Cox (Breslow 1974 ties, Newton-Raphson): dfbeta, the score residuals times the inverse
  information (Therneau & Grambsch 2000, 7.3); their cross-products give the robust variance
  of Lin & Wei (1989). With distinct times it equals lifelines' Efron fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trajectories.errors import CoxConvergenceError, SurvivalDataError


@dataclass(frozen=True)
class _Risk:
    """Distinct times with at-risk and event counts, and each person's position in them."""

    times: np.ndarray  # distinct times, ascending
    at_risk: np.ndarray
    events: np.ndarray
    position: np.ndarray  # per person: index of their own time in ``times``


def _risk_table(time: np.ndarray, event: np.ndarray) -> _Risk:
    times, position, counts = np.unique(time, return_inverse=True, return_counts=True)
    events = np.bincount(position, weights=event, minlength=times.size)
    at_risk = time.size - np.concatenate([[0], np.cumsum(counts)[:-1]])
    return _Risk(times, at_risk.astype(np.float64), events, position)


def _checked(time, event) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event)
    if t.ndim != 1 or t.shape != e.shape or t.size == 0:
        raise SurvivalDataError(f"time and event must be two equal non-empty vectors, got "
                                f"shapes {t.shape} and {e.shape}")
    if not np.all(t >= 0):
        raise SurvivalDataError("time: values must be >= 0 days from origin")
    return t, (e == 1).astype(np.float64)  # other codes (2 = competing) count as censored


def _hazard_terms(risk: _Risk, horizon: float, weight: np.ndarray | None = None) -> tuple:
    """Per distinct time t_k <= horizon: w_k / (n_k - d_k), what an event at t_k adds to a
    person's influence, and the cumulative sum of w_k d_k / (n_k (n_k - d_k)), what being at
    risk through t_k takes away: the derivatives of log(1 - d_k / n_k) in the person's weight
    (times where the curve drops to 0, n_k = d_k, are left out)."""
    n, d = risk.at_risk, risk.events
    open_ = (risk.times <= horizon) & (n > d)
    w = np.ones_like(n) if weight is None else weight
    gap = np.where(open_, n - d, 1.0)
    jump = np.where(open_, w / gap, 0.0)
    return jump, np.cumsum(np.where(open_, w * d / (n * gap), 0.0))


def km_log_survival(time, event, t: float) -> tuple[float, np.ndarray]:
    """log S(t) of the Kaplan-Meier curve and each person's influence on it.

    Raises SurvivalDataError where S(t) is 0 (log S undefined)."""
    t_arr, e = _checked(time, event)
    risk = _risk_table(t_arr, e)
    within = risk.times <= t
    factors = 1 - risk.events[within] / risk.at_risk[within]
    if np.any(factors <= 0):
        raise SurvivalDataError(f"Kaplan-Meier survival reaches 0 by day {t:g}: no "
                                "log-scale estimate")
    log_s = float(np.log(factors).sum())
    jump, lost = _hazard_terms(risk, t)
    own = risk.position
    last = np.searchsorted(risk.times, np.minimum(t_arr, t), side="right") - 1
    influence = -(e * jump[own] - np.where(last >= 0, lost[np.maximum(last, 0)], 0.0))
    return log_s, influence


def km_rmst(time, event, horizon: float) -> tuple[float, np.ndarray]:
    """Restricted mean survival time up to ``horizon`` (area under the Kaplan-Meier step
    function, as :func:`validation.survival.rmst`) and each person's influence on it."""
    if not horizon > 0 or not math.isfinite(horizon):
        raise SurvivalDataError(f"rmst: horizon must be a finite number of days > 0, got "
                                f"{horizon}")
    t_arr, e = _checked(time, event)
    risk = _risk_table(t_arr, e)
    with np.errstate(divide="ignore"):
        log_factors = np.log(np.maximum(1 - risk.events / risk.at_risk, 0.0))
    survival = np.exp(np.cumsum(log_factors))  # S just after each distinct time
    starts = np.concatenate([[0.0], risk.times])
    values = np.concatenate([[1.0], survival])
    ends = np.minimum(np.append(starts[1:], horizon), horizon)
    pieces = values * np.maximum(ends - starts, 0.0)
    value = float(pieces.sum())
    # A(t_k): the area from t_k to the horizon, the pieces from t_k on
    area = np.maximum(value - np.cumsum(pieces)[:-1], 0.0)
    jump, lost = _hazard_terms(risk, horizon, weight=area)
    last = np.searchsorted(risk.times, np.minimum(t_arr, horizon), side="right") - 1
    influence = -(e * jump[risk.position] - np.where(last >= 0, lost[np.maximum(last, 0)], 0.0))
    return value, influence


@dataclass(frozen=True)
class CoxFit:
    """A Breslow-ties Cox fit: coefficients, information matrix, per-person dfbeta."""

    beta: np.ndarray
    information: np.ndarray
    dfbeta: np.ndarray  # n x p: each person's influence on beta

    @property
    def robust_covariance(self) -> np.ndarray:
        return self.dfbeta.T @ self.dfbeta

    @property
    def model_covariance(self) -> np.ndarray:
        return np.linalg.inv(self.information)


def cox_fit(time, event, design: np.ndarray, max_iter: int = 50, tol: float = 1e-9) -> CoxFit:
    """Cox proportional hazards by Newton-Raphson on Breslow's partial likelihood, with the
    score residuals behind dfbeta and the robust variance (module docstring)."""
    t_arr, e = _checked(time, event)
    x = np.asarray(design, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] != t_arr.size:
        raise SurvivalDataError(f"design has {x.shape[0]} rows for {t_arr.size} persons")
    if e.sum() == 0:
        raise CoxConvergenceError("Cox model: no events, no hazard ratio")
    x = x - x.mean(axis=0)
    order = np.argsort(t_arr, kind="stable")
    t_s, e_s, x_s = t_arr[order], e[order], x[order]
    first = np.searchsorted(t_s, t_s, side="left")  # start of each person's risk set
    beta = np.zeros(x.shape[1])
    step = np.zeros_like(beta)
    loglik = -np.inf
    for _ in range(max_iter):
        sums = _risk_sums(beta, x_s, first)
        new_loglik = float(np.sum(e_s * (x_s @ beta - np.log(sums[0]))))
        if new_loglik < loglik - 1e-9 * abs(loglik) and np.max(np.abs(step)) > tol:
            step /= 2  # step halving: the last step overshot
            beta = beta - step
            continue
        loglik = new_loglik
        score, information = _score_information(e_s, x_s, sums)
        try:
            step = np.linalg.solve(information, score)
        except np.linalg.LinAlgError:
            raise CoxConvergenceError("Cox model: singular information (a constant or "
                                      "collinear covariate?)") from None
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            break
    else:
        raise CoxConvergenceError("Cox model did not converge (a covariate that separates "
                                  "events perfectly?)")
    if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 30:
        raise CoxConvergenceError(f"Cox model did not converge: log hazard ratios {beta}")
    sums = _risk_sums(beta, x_s, first)
    _, information = _score_information(e_s, x_s, sums)
    residuals = _score_residuals(beta, t_s, e_s, x_s, first, sums)
    dfbeta = np.empty_like(residuals)
    dfbeta[order] = residuals @ np.linalg.inv(information)
    return CoxFit(beta, information, dfbeta)


def _risk_sums(beta: np.ndarray, x: np.ndarray, first: np.ndarray) -> tuple:
    """S0, S1, S2 over each sorted person's risk set {j: T_j >= T_i}."""
    r = np.exp(x @ beta)
    s0 = np.cumsum(r[::-1])[::-1][first]
    s1 = np.cumsum((r[:, None] * x)[::-1], axis=0)[::-1][first]
    outer = r[:, None, None] * x[:, :, None] * x[:, None, :]
    s2 = np.cumsum(outer[::-1], axis=0)[::-1][first]
    return s0, s1, s2


def _score_information(e: np.ndarray, x: np.ndarray, sums: tuple) -> tuple:
    s0, s1, s2 = sums
    mean = s1 / s0[:, None]
    score = (e[:, None] * (x - mean)).sum(axis=0)
    information = (e[:, None, None] * (s2 / s0[:, None, None]
                                       - mean[:, :, None] * mean[:, None, :])).sum(axis=0)
    return score, information


def _score_residuals(beta, t, e, x, first, sums) -> np.ndarray:
    """Per sorted person: delta_i (x_i - xbar(T_i)) - r_i sum_{t_k <= T_i} dLambda_k
    (x_i - xbar_k), the Breslow score residuals (Therneau & Grambsch 2000, 4.6)."""
    s0, s1, _ = sums
    mean = s1 / s0[:, None]
    r = np.exp(x @ beta)
    # per event row: its hazard increment 1/S0 and xbar/S0; summed over rows with t_k <= T_i
    increment = e / s0
    hazard = np.cumsum(increment)
    weighted = np.cumsum(increment[:, None] * mean, axis=0)
    last = np.searchsorted(t, t, side="right") - 1  # last row with time <= T_i (ties included)
    return (e[:, None] * (x - mean)
            - r[:, None] * (x * hazard[last][:, None] - weighted[last]))
