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
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import log_ndtr

from trajectories import hazards
from trajectories.errors import TrajectoriesError


class FitError(TrajectoriesError):
    """A model cannot be fitted to the reference (too few events, unknown family, no data)."""


PARAMETRIC = ("exponential", "weibull", "gompertz", "lognormal", "loglogistic")
"""Families chosen among by AIC with ``families="auto"``."""
SEMI_PARAMETRIC = "cox"
ALL_FAMILIES = (*PARAMETRIC, "piecewise", SEMI_PARAMETRIC)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
THETA_BOUND = 25.0
"""Largest |baseline parameter| on the unit time scale (times / the median event time) taken as
a fit: beyond it the maximisation ran to an edge of the family (a Weibull shape -> 0 with
scale -> 0, say, the limit hazard ~ 1/t that delayed entry allows) and ``exp()`` is about to
underflow or overflow. The piecewise family is exempt: a piece without events has rate 0."""
FIT_FAILURES = (TrajectoriesError, ValueError, ArithmeticError, np.linalg.LinAlgError)
"""What a candidate's fit may raise (pydantic's ValidationError and lifelines'
ConvergenceError are ValueErrors, math.exp overflow an ArithmeticError): that candidate is
excluded from selection, the others go on."""


@dataclass(frozen=True)
class AtRisk:
    """Rows at risk of one transition on its clock: (entry, exit], event flag, design matrix."""

    entry: np.ndarray
    exit: np.ndarray
    event: np.ndarray  # bool
    x: np.ndarray  # (rows, covariates)
    names: list[str]

    @property
    def n_events(self) -> int:
        return int(self.event.sum())

    def scaled(self, scale: float) -> AtRisk:
        return AtRisk(self.entry / scale, self.exit / scale, self.event, self.x, self.names)


# -- baseline families on a unit time scale; theta is unconstrained --------------------------------


class _Baseline(ABC):
    """log h0 and H0 of one family with their gradients in the unconstrained parameters."""

    name: str
    theta_names: tuple[str, ...]

    @abstractmethod
    def start(self, rate: float) -> np.ndarray:
        """Starting values given the crude event rate (events per unit of scaled time)."""

    @abstractmethod
    def log_hazard(self, theta: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log h0(t) and its gradient (parameters, rows); t > 0."""

    @abstractmethod
    def cumulative(self, theta: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """H0(t) and its gradient (parameters, rows); t >= 0."""

    @abstractmethod
    def unscale(self, theta: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Parameters for times in days from those for times / scale, and d(new)/d(old)."""

    @abstractmethod
    def hazard(self, theta: np.ndarray) -> hazards._Family:
        """The :mod:`trajectories.hazards` object (times in days) for unscaled ``theta``."""


def _log(t: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(t)


class _Exponential(_Baseline):
    name, theta_names = "exponential", ("log_rate",)

    def start(self, rate):
        return np.array([math.log(rate)])

    def log_hazard(self, theta, t):
        return np.full(t.size, theta[0]), np.ones((1, t.size))

    def cumulative(self, theta, t):
        value = math.exp(theta[0]) * t
        return value, value[None, :]

    def unscale(self, theta, scale):
        return theta - [math.log(scale)], np.ones(1)

    def hazard(self, theta):
        return hazards.Exponential(rate=math.exp(theta[0]))


class _Weibull(_Baseline):
    """H0 = (t / scale) ** shape."""

    name, theta_names = "weibull", ("log_shape", "log_scale")

    def start(self, rate):
        return np.array([0.0, -math.log(rate)])

    def log_hazard(self, theta, t):
        k, log_s = math.exp(theta[0]), theta[1]
        log_ratio = np.log(t) - log_s
        value = theta[0] - log_s + (k - 1.0) * log_ratio
        return value, np.vstack([1.0 + k * log_ratio, np.full(t.size, -k)])

    def cumulative(self, theta, t):
        k, log_s = math.exp(theta[0]), theta[1]
        with np.errstate(divide="ignore", over="ignore"):
            log_ratio = _log(t) - log_s
            value = np.exp(k * log_ratio)
            d_shape = np.where(t > 0, value * k * log_ratio, 0.0)
        return value, np.vstack([d_shape, -k * value])

    def unscale(self, theta, scale):
        return theta + [0.0, math.log(scale)], np.ones(2)

    def hazard(self, theta):
        return hazards.Weibull(shape=math.exp(theta[0]), scale=math.exp(theta[1]))


def _expm1_over_x(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """phi(x) = expm1(x) / x and phi'(x), with series near 0."""
    small = np.abs(x) < 1e-4
    safe = np.where(small, 1.0, x)
    with np.errstate(over="ignore"):
        phi = np.where(small, 1.0 + x / 2 + x**2 / 6, np.expm1(safe) / safe)
        dphi = np.where(small, 0.5 + x / 3 + x**2 / 8,
                        (safe * np.exp(safe) - np.expm1(safe)) / safe**2)
    return phi, dphi


class _Gompertz(_Baseline):
    """h0 = rate * exp(shape * t); H0 = rate * t * phi(shape * t)."""

    name, theta_names = "gompertz", ("shape", "log_rate")

    def start(self, rate):
        return np.array([0.0, math.log(rate)])

    def log_hazard(self, theta, t):
        return theta[1] + theta[0] * t, np.vstack([t, np.ones(t.size)])

    def cumulative(self, theta, t):
        g, r = theta[0], math.exp(theta[1])
        phi, dphi = _expm1_over_x(g * t)
        value = r * t * phi
        return value, np.vstack([r * t**2 * dphi, value])

    def unscale(self, theta, scale):
        return np.array([theta[0] / scale, theta[1] - math.log(scale)]), np.array(
            [1.0 / scale, 1.0])

    def hazard(self, theta):
        return hazards.Gompertz(shape=float(theta[0]), rate=math.exp(theta[1]))


class _LogNormal(_Baseline):
    """log T ~ N(mu, sigma) for the baseline; H0 = -log Phi(-z), z = (log t - mu) / sigma."""

    name, theta_names = "lognormal", ("mu", "log_sigma")

    def start(self, rate):
        return np.array([-math.log(rate), 0.0])

    def log_hazard(self, theta, t):
        mu, sigma = theta[0], math.exp(theta[1])
        log_t = np.log(t)
        z = (log_t - mu) / sigma
        log_density = -0.5 * z**2 - HALF_LOG_2PI - log_ndtr(-z)
        m = np.exp(log_density)
        value = log_density - theta[1] - log_t
        slope = m - z  # d log h / dz
        return value, np.vstack([-slope / sigma, -slope * z - 1.0])

    def cumulative(self, theta, t):
        mu, sigma = theta[0], math.exp(theta[1])
        positive = t > 0
        z = np.where(positive, (np.log(np.where(positive, t, 1.0)) - mu) / sigma, 0.0)
        log_survival = log_ndtr(-z)
        m = np.where(positive, np.exp(-0.5 * z**2 - HALF_LOG_2PI - log_survival), 0.0)
        value = np.where(positive, -log_survival, 0.0)
        return value, np.vstack([-m / sigma, -m * z])

    def unscale(self, theta, scale):
        return theta + [math.log(scale), 0.0], np.ones(2)

    def hazard(self, theta):
        return hazards.LogNormal(mu=float(theta[0]), sigma=math.exp(theta[1]))


class _LogLogistic(_Baseline):
    """H0 = log(1 + (t / scale) ** shape)."""

    name, theta_names = "loglogistic", ("log_scale", "log_shape")

    def start(self, rate):
        return np.array([-math.log(rate), 0.0])

    def log_hazard(self, theta, t):
        log_a, b = theta[0], math.exp(theta[1])
        log_ratio = np.log(t) - log_a
        with np.errstate(over="ignore"):
            u = np.exp(b * log_ratio)
        inv = 1.0 / (1.0 + u)
        value = theta[1] - log_a + (b - 1.0) * log_ratio - np.log1p(u)
        return value, np.vstack([-b * inv, 1.0 + b * log_ratio * inv])

    def cumulative(self, theta, t):
        log_a, b = theta[0], math.exp(theta[1])
        with np.errstate(divide="ignore", over="ignore"):
            log_ratio = _log(t) - log_a
            u = np.exp(b * log_ratio)
            share = np.where(t > 0, u / (1.0 + u), 0.0)
            d_shape = np.where(t > 0, b * log_ratio * share, 0.0)
        return np.log1p(u), np.vstack([-b * share, d_shape])

    def unscale(self, theta, scale):
        return theta + [math.log(scale), 0.0], np.ones(2)

    def hazard(self, theta):
        return hazards.LogLogistic(scale=math.exp(theta[0]), shape=math.exp(theta[1]))


class _Piecewise(_Baseline):
    """Constant hazard exp(theta[j]) between fixed knots; the last piece runs forever."""

    name = "piecewise"

    def __init__(self, knots: np.ndarray, scale: float = 1.0) -> None:
        self.knots = np.asarray(knots, dtype=float)  # inner breakpoints, increasing, > 0
        self.scale = scale  # days per unit of the (scaled) time the knots are in
        self.theta_names = tuple(f"log_rate_{j}" for j in range(self.knots.size + 1))
        self._edges = np.concatenate([[0.0], self.knots])

    def start(self, rate):
        return np.full(self.knots.size + 1, math.log(rate))

    def _exposure(self, t: np.ndarray) -> np.ndarray:
        widths = np.append(np.diff(self._edges), np.inf)
        return np.clip(t[None, :] - self._edges[:, None], 0.0, widths[:, None])

    def log_hazard(self, theta, t):
        piece = np.searchsorted(self.knots, t, side="right")
        grad = np.zeros((theta.size, t.size))
        grad[piece, np.arange(t.size)] = 1.0
        return theta[piece], grad

    def cumulative(self, theta, t):
        grad = self._exposure(t) * np.exp(theta)[:, None]
        return grad.sum(axis=0), grad

    def unscale(self, theta, scale):
        return theta - math.log(scale), np.ones(theta.size)

    def hazard(self, theta):
        """The hazard for unscaled ``theta`` (log rates per day), knots back in days."""
        return hazards.PiecewiseConstant(
            breakpoints=[float(k) for k in self.knots * self.scale],
            rates=[float(r) for r in np.exp(theta)],
        )


BASELINES: dict[str, type[_Baseline]] = {
    "exponential": _Exponential, "weibull": _Weibull, "gompertz": _Gompertz,
    "lognormal": _LogNormal, "loglogistic": _LogLogistic,
}


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

    def __init__(self, baseline: _Baseline, data: AtRisk) -> None:
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
        baseline: _Baseline = _Piecewise(inner, scale)
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


def _check_estimates(baseline: _Baseline, params: np.ndarray, value: float, k: int) -> None:
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
