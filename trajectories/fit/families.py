"""Proportional-hazards fits of one transition: parametric baselines by maximum likelihood, a Cox
model with the Breslow baseline, and the choice among families by AIC.

Every family is fitted as a proportional-hazards model, as the simulator uses it: cumulative
hazard ``exp(x.b) H0(t)`` with ``H0`` one of :mod:`trajectories.hazards`' families. The
log-likelihood of rows at risk on (entry, exit] (delayed entry for clock-forward, entry 0 for
clock-reset) is ``sum_events [log h0(exit) + x.b] - sum_rows exp(x.b) [H0(exit) - H0(entry)]``,
maximised with analytic gradients (BFGS, then Newton steps); standard errors come from the
Hessian. Internally times are divided by a typical time so that all parameters are of order one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from trajectories import hazards
from trajectories.errors import FitError, TrajectoriesError
from trajectories.fit.baselines import BASELINES, AtRisk, Baseline, PiecewiseBaseline

PARAMETRIC = ("exponential", "weibull", "gompertz", "lognormal", "loglogistic")
"""Families chosen among by AIC with ``families="auto"``."""
SEMI_PARAMETRIC = "cox"
ALL_FAMILIES = (*PARAMETRIC, "piecewise", SEMI_PARAMETRIC)
THETA_BOUND = 25.0
"""Largest |baseline parameter| on the unit time scale (times / the median event time) taken as
a fit: beyond it the maximisation ran to an edge of the family (a Weibull shape -> 0 with
scale -> 0, say, the limit hazard ~ 1/t that delayed entry allows) and ``exp()`` is about to
underflow or overflow. The piecewise family is exempt: a piece without events has rate 0."""
FIT_FAILURES = (TrajectoriesError, ValueError, ArithmeticError, np.linalg.LinAlgError)
"""What a candidate's fit may raise (pydantic's ValidationError and lifelines'
ConvergenceError are ValueErrors, math.exp overflow an ArithmeticError): that candidate is
excluded from selection, the others go on."""


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransitionFit:
    """One fitted hazard: family, baseline (as a hazards object), log hazard ratios, uncertainty.

    ``theta`` are the baseline's unconstrained parameters (``theta_names``: log_shape, mu...)
    for times in days; ``cov`` is the covariance of (theta, beta). ``loglik`` and ``aic`` are
    None for the Cox model, whose partial likelihood is not comparable with the others.
    """

    family: str
    hazard: hazards._Family
    theta: np.ndarray
    theta_names: list[str]
    beta: np.ndarray
    beta_names: list[str]
    cov: np.ndarray
    loglik: float | None
    n_events: int
    n_rows: int
    converged: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return self.theta.size + self.beta.size

    @property
    def aic(self) -> float | None:
        return None if self.loglik is None else 2.0 * self.n_params - 2.0 * self.loglik

    @property
    def std_errors(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    @property
    def names(self) -> list[str]:
        return [*self.theta_names, *self.beta_names]

    @property
    def estimates(self) -> np.ndarray:
        return np.concatenate([self.theta, self.beta])

    @property
    def excluded(self) -> None:
        """None: a fit that happened (see :class:`FailedFit`)."""
        return None

    def log_hazard_ratios(self) -> dict[str, tuple[float, float]]:
        """Covariate -> (log HR, standard error)."""
        se = self.std_errors[self.theta.size:]
        return {n: (float(b), float(s)) for n, b, s in zip(self.beta_names, self.beta, se,
                                                           strict=True)}

    def summary(self) -> dict:
        return {
            "family": self.family,
            "hazard": self.hazard.model_dump(),
            "loglik": self.loglik,
            "aic": self.aic,
            "n_events": self.n_events,
            "n_rows": self.n_rows,
            "converged": self.converged,
            "parameters": [
                {"name": n, "estimate": float(v), "std_error": float(s)}
                for n, v, s in zip(self.names, self.estimates, self.std_errors, strict=True)
            ],
            "cov": np.asarray(self.cov, dtype=float).tolist(),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class FailedFit:
    """A candidate family whose fit failed, diverged or gave parameters out of range: left out
    of the selection, kept among the candidates with ``excluded``, the reason."""

    family: str
    excluded: str
    n_events: int
    n_rows: int
    loglik: None = None
    aic: None = None
    converged: bool = False


# -- maximum likelihood ----------------------------------------------------------------------------


class _Likelihood:
    """Log-likelihood and gradient of a PH model with a parametric baseline, on scaled times."""

    def __init__(self, baseline: Baseline, data: AtRisk) -> None:
        self.baseline, self.data = baseline, data
        self.k = len(baseline.theta_names)
        self.delayed = bool(np.any(data.entry > 0))
        self.events = np.flatnonzero(data.event)
        self.event_exit = data.exit[self.events]
        self.event_x_sum = data.x[self.events].sum(axis=0)
        self.xt = np.ascontiguousarray(data.x.T)

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            return self._evaluate(params)
        except ArithmeticError:  # math.exp overflow at a wild line-search step
            return -np.inf, np.zeros_like(params)

    def _evaluate(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        d, k = self.data, self.k
        theta, beta = params[:k], params[k:]
        with np.errstate(all="ignore"):
            weight = np.exp(np.einsum("kn,k->n", self.xt, beta))
            h_exit, dh_exit = self.baseline.cumulative(theta, d.exit)
            if self.delayed:
                h_entry, dh_entry = self.baseline.cumulative(theta, d.entry)
                h_exit, dh_exit = h_exit - h_entry, dh_exit - dh_entry
            log_h, dlog_h = self.baseline.log_hazard(theta, self.event_exit)
            # einsum rather than BLAS: threaded gemv on long thin arrays only adds overhead.
            weighted = weight * h_exit
            value = log_h.sum() + self.event_x_sum @ beta - weighted.sum()
            grad_theta = dlog_h.sum(axis=1) - np.einsum("kn,n->k", dh_exit, weight)
            grad_beta = self.event_x_sum - np.einsum("kn,n->k", self.xt, weighted)
        grad = np.concatenate([grad_theta, grad_beta])
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            return -np.inf, np.zeros_like(params)
        return float(value), grad

    def hessian(self, params: np.ndarray) -> np.ndarray:
        """Central differences of the analytic gradient, symmetrised."""
        p = params.size
        out = np.empty((p, p))
        for i in range(p):
            step = 1e-5 * max(1.0, abs(params[i]))
            up, down = params.copy(), params.copy()
            up[i] += step
            down[i] -= step
            out[:, i] = (self(up)[1] - self(down)[1]) / (2 * step)
        return (out + out.T) / 2


def _maximise(lik: _Likelihood, start: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, bool]:
    """BFGS on the mean negative log-likelihood, then Newton steps with step halving."""
    n = max(lik.data.exit.size, 1)

    def objective(params):
        value, grad = lik(params)
        if not np.isfinite(value):
            return 1e300, np.zeros_like(params)
        return -value / n, -grad / n

    result = optimize.minimize(objective, start, jac=True, method="BFGS",
                               options={"gtol": 1e-9, "maxiter": 2000})
    params = result.x
    value, grad = lik(params)
    hessian = lik.hessian(params)
    for _ in range(20):
        try:
            step = np.linalg.solve(hessian, grad)
        except np.linalg.LinAlgError:
            break
        factor, improved = 1.0, False
        for _ in range(30):
            candidate = params - factor * step
            new_value, new_grad = lik(candidate)
            if np.isfinite(new_value) and new_value >= value - 1e-10 * abs(value):
                params, value, grad, improved = candidate, new_value, new_grad, True
                break
            factor /= 2
        if not improved:
            break
        hessian = lik.hessian(params)
        if np.max(np.abs(grad)) < 1e-7 * max(1.0, math.sqrt(n)):
            break
    converged = bool(np.isfinite(value) and np.max(np.abs(grad)) < 1e-3 * max(1.0, math.sqrt(n)))
    return params, value, hessian, converged


def _covariance(hessian: np.ndarray) -> tuple[np.ndarray, bool]:
    try:
        cov = np.linalg.inv(-hessian)
    except np.linalg.LinAlgError:
        return np.full(hessian.shape, np.nan), False
    ok = bool(np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0))
    return cov, ok


def time_scale(data: AtRisk) -> float:
    """A typical exit time (the median of event times) used to scale times to order one."""
    times = data.exit[data.event] if data.n_events else data.exit
    positive = times[times > 0]
    return float(np.median(positive)) if positive.size else 1.0


def piecewise_knots(data: AtRisk, pieces: int | None = None) -> np.ndarray:
    """Inner knots at quantiles of event times: ``pieces`` pieces with similar event counts
    (default: one piece per ~10 events, between 1 and 12)."""
    times = np.sort(data.exit[data.event])
    if pieces is None:
        pieces = int(np.clip(times.size // 10, 1, 12))
    knots = np.unique(np.quantile(times, np.linspace(0, 1, pieces + 1)[1:-1])) if times.size else (
        np.zeros(0))
    return knots[knots > 0]


def fit_parametric(
    family: str, data: AtRisk, pieces: int | None = None, knots: Sequence[float] | None = None
) -> TransitionFit:
    """Maximum-likelihood PH fit of one family, or ``piecewise`` on ``knots`` (days; default
    quantiles of the event times making ``pieces`` pieces)."""
    if data.n_events == 0:
        raise FitError(f"family {family!r}: no events to fit")
    scale = time_scale(data)
    scaled = data.scaled(scale)
    if family == "piecewise":
        inner = (piecewise_knots(scaled, pieces) if knots is None
                 else np.asarray(knots, dtype=float) / scale)
        baseline: Baseline = PiecewiseBaseline(inner, scale)
    elif family in BASELINES:
        baseline = BASELINES[family]()
    else:
        raise FitError(f"unknown family {family!r}; expected one of {list(ALL_FAMILIES)}")
    exposure = float(np.sum(scaled.exit - scaled.entry))
    rate = data.n_events / max(exposure, 1e-12)
    start = np.concatenate([baseline.start(rate), np.zeros(data.x.shape[1])])
    lik = _Likelihood(baseline, scaled)
    params, value, hessian, converged = _maximise(lik, start)
    k = len(baseline.theta_names)
    _check_estimates(baseline, params, value, k)
    theta, jacobian = baseline.unscale(params[:k], scale)
    cov, ok = _covariance(hessian)
    full_jacobian = np.concatenate([jacobian, np.ones(data.x.shape[1])])
    cov = cov * np.outer(full_jacobian, full_jacobian)
    loglik = value - data.n_events * math.log(scale)  # density in days, not in scaled time
    try:
        hazard = baseline.hazard(theta)
    except (ValueError, ArithmeticError) as error:
        named = ", ".join(f"{n}={v:.4g}" for n, v in zip(baseline.theta_names, theta, strict=True))
        raise FitError(f"family {family!r}: parameters out of range ({named}): "
                       f"{_first_line(error)}") from None
    notes = [] if ok else ["the Hessian is singular: standard errors are not available"]
    return TransitionFit(
        family=family, hazard=hazard, theta=theta, theta_names=list(baseline.theta_names),
        beta=params[k:], beta_names=list(data.names), cov=cov, loglik=loglik,
        n_events=data.n_events, n_rows=data.exit.size, converged=converged and ok, notes=notes,
    )


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(error).__name__


def _check_estimates(baseline: Baseline, params: np.ndarray, value: float, k: int) -> None:
    """Raise FitError where the maximisation diverged: a non-finite log-likelihood or
    estimate, or a baseline parameter past THETA_BOUND on the unit time scale."""
    if not (np.isfinite(value) and np.all(np.isfinite(params))):
        raise FitError(f"family {baseline.name!r}: the maximisation diverged (non-finite "
                       "log-likelihood or estimates)")
    if baseline.name == "piecewise":
        return
    wild = [(n, float(v)) for n, v in zip(baseline.theta_names, params[:k], strict=True)
            if abs(v) > THETA_BOUND]
    if wild:
        named = ", ".join(f"{n}={v:.4g}" for n, v in wild)
        raise FitError(f"family {baseline.name!r}: the maximisation diverged ({named} on the "
                       f"unit time scale, beyond +-{THETA_BOUND:g}): the likelihood keeps "
                       "rising towards an edge of the family")


# -- Cox with the Breslow baseline -----------------------------------------------------------------


def breslow(data: AtRisk, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct event times and the Breslow cumulative baseline hazard at them (delayed entry
    handled: at risk at t are rows with entry < t <= exit)."""
    weight = np.exp(data.x @ beta)
    times = np.unique(data.exit[data.event])
    deaths = np.bincount(np.searchsorted(times, data.exit[data.event]), minlength=times.size)
    order_entry, order_exit = np.argsort(data.entry), np.argsort(data.exit)
    cum_entry = np.concatenate([[0.0], np.cumsum(weight[order_entry])])
    cum_exit = np.concatenate([[0.0], np.cumsum(weight[order_exit])])
    entered = cum_entry[np.searchsorted(data.entry[order_entry], times, side="left")]
    left = cum_exit[np.searchsorted(data.exit[order_exit], times, side="left")]
    return times, np.cumsum(deaths / (entered - left))


def fit_cox(data: AtRisk, pieces: int | None = None) -> TransitionFit:
    """Cox model (lifelines, Efron ties, delayed entry) and its Breslow baseline turned into a
    piecewise-constant hazard on quantile knots of the event times."""
    if data.n_events == 0:
        raise FitError("family 'cox': no events to fit")
    if data.x.shape[1]:
        import pandas as pd
        from lifelines import CoxPHFitter

        frame = pd.DataFrame(data.x, columns=[f"x{i}" for i in range(data.x.shape[1])])
        frame["_entry"], frame["_exit"] = data.entry, data.exit
        frame["_event"] = data.event.astype(int)
        try:
            fitter = CoxPHFitter().fit(frame, "_exit", "_event", entry_col="_entry")
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
            raise FitError(f"family 'cox': the partial likelihood did not converge "
                           f"({_first_line(error)})") from None
        beta = fitter.params_.to_numpy()
        cov = fitter.variance_matrix_.to_numpy()
        if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(cov))):
            raise FitError("family 'cox': the partial likelihood diverged (non-finite "
                           "estimates)")
    else:
        beta, cov = np.zeros(0), np.zeros((0, 0))
    times, cumulative = breslow(data, beta)
    knots = piecewise_knots(data, pieces)
    edges = np.concatenate([[0.0], knots, [times[-1]]])
    at_edges = np.concatenate([[0.0], np.interp(edges[1:], times, cumulative, left=0.0)])
    widths = np.diff(edges)
    rates = np.where(widths > 0, np.diff(at_edges) / np.where(widths > 0, widths, 1.0), 0.0)
    # The last piece (after the last knot) continues with its own average rate.
    hazard = hazards.PiecewiseConstant(breakpoints=[float(k) for k in knots],
                                       rates=[float(r) for r in np.maximum(rates, 0.0)])
    return TransitionFit(
        family=SEMI_PARAMETRIC, hazard=hazard, theta=np.zeros(0), theta_names=[], beta=beta,
        beta_names=list(data.names), cov=cov, loglik=None, n_events=data.n_events,
        n_rows=data.exit.size,
    )


# -- choosing a family -----------------------------------------------------------------------------


def fit_family(family: str, data: AtRisk) -> TransitionFit:
    """Fit one named family (parametric, ``piecewise`` or ``cox``)."""
    if family == SEMI_PARAMETRIC:
        return fit_cox(data)
    return fit_parametric(family, data)


def select_family(
    data: AtRisk, candidates: Sequence[str] = PARAMETRIC
) -> tuple[TransitionFit, list[TransitionFit | FailedFit]]:
    """Fit every candidate; return the converged fit of lowest AIC, and all candidates.

    A candidate whose fit fails or diverges is a :class:`FailedFit` among the candidates and
    a note on the chosen fit; FitError when every candidate failed."""
    candidates = list(candidates)
    if SEMI_PARAMETRIC in candidates and len(candidates) > 1:
        raise FitError("'cox' has no likelihood comparable with the parametric families; use "
                       "it alone, or 'piecewise' among the candidates")
    unknown = [f for f in candidates if f not in ALL_FAMILIES]
    if unknown:
        raise FitError(f"unknown family {unknown[0]!r}; expected one of {list(ALL_FAMILIES)}")
    fits: list[TransitionFit | FailedFit] = []
    for family in candidates:
        try:
            fits.append(fit_family(family, data))
        except FIT_FAILURES as error:
            fits.append(FailedFit(family, _first_line(error), data.n_events, data.exit.size))
    done = [f for f in fits if isinstance(f, TransitionFit)]
    failed = [f for f in fits if isinstance(f, FailedFit)]
    if not done:
        reasons = "; ".join(f.excluded for f in failed)
        raise FitError(reasons if len(failed) == 1 else
                       f"every candidate family failed: {reasons}")
    usable = [f for f in done if f.converged] or done
    best = min(usable, key=lambda f: f.aic) if len(usable) > 1 else usable[0]
    if failed:
        best = dataclasses.replace(best, notes=[
            *best.notes, *(f"left out of the selection: {f.excluded}" for f in failed)])
    return best, fits
