"""Baseline hazard families of the fit, on a unit time scale with unconstrained parameters:
each gives log h0, H0 and their gradients in theta, its starting values, and the
:mod:`trajectories.hazards` model a fitted theta stands for."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from trajectories import hazards

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


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


class Baseline(ABC):
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


class _Exponential(Baseline):
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


class _Weibull(Baseline):
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


class _Gompertz(Baseline):
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


class _LogNormal(Baseline):
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


class _LogLogistic(Baseline):
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


class PiecewiseBaseline(Baseline):
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


BASELINES: dict[str, type[Baseline]] = {
    "exponential": _Exponential, "weibull": _Weibull, "gompertz": _Gompertz,
    "lognormal": _LogNormal, "loglogistic": _LogLogistic,
}
