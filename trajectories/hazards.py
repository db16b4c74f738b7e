"""Parametric hazard families, vectorised over persons.

Every family is a small pydantic model (so scenario files validate it) with numpy methods for
the hazard, the cumulative hazard H and its inverse. Covariates act proportionally on the hazard:
a person with multiplier ``m`` has cumulative hazard ``m * H(t)``. Times are days.

Sampling an exit conditioned on the time already on the clock ``u0`` uses
``H(u) = H(u0) + E / m`` with ``E ~ Exp(1)``; :meth:`Hazard.exit_clock` solves it for ``u``.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import cached_property
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import log_ndtr, ndtr, ndtri_exp

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Family(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @abstractmethod
    def hazard(self, t: np.ndarray) -> np.ndarray:
        """Instantaneous hazard h(t) per day."""

    @abstractmethod
    def cumulative_hazard(self, t: np.ndarray) -> np.ndarray:
        """H(t) = integral of h from 0 to t."""

    @abstractmethod
    def inverse_cumulative_hazard(self, y: np.ndarray) -> np.ndarray:
        """The time t with H(t) = y (``inf`` when H never reaches y)."""

    def survival(self, t: np.ndarray) -> np.ndarray:
        """S(t) = exp(-H(t))."""
        return np.exp(-self.cumulative_hazard(np.asarray(t, dtype=float)))

    def quantile(self, p: np.ndarray) -> np.ndarray:
        """Time by which a fraction ``p`` has left (inverse of 1 - S)."""
        return self.inverse_cumulative_hazard(-np.log1p(-np.asarray(p, dtype=float)))

    def exit_clock(self, u0: np.ndarray, increment: np.ndarray) -> np.ndarray:
        """Clock time u with H(u) = H(u0) + increment (increment = E / multiplier)."""
        return self.inverse_cumulative_hazard(self.cumulative_hazard(u0) + increment)


class Exponential(_Family):
    """Constant hazard ``rate`` per day: H(t) = rate * t."""

    family: Literal["exponential"] = "exponential"
    rate: NonNegative

    def hazard(self, t):
        return np.full_like(np.asarray(t, dtype=float), self.rate)

    def cumulative_hazard(self, t):
        return self.rate * np.asarray(t, dtype=float)

    def inverse_cumulative_hazard(self, y):
        with np.errstate(divide="ignore"):
            return np.asarray(y, dtype=float) / self.rate

    def exit_clock(self, u0, increment):
        with np.errstate(divide="ignore"):
            return u0 + increment / self.rate


class Weibull(_Family):
    """H(t) = (t / scale) ** shape, as lifelines' WeibullFitter (lambda_ = scale, rho_ = shape)."""

    family: Literal["weibull"] = "weibull"
    shape: Positive
    scale: Positive

    def hazard(self, t):
        t = np.asarray(t, dtype=float)
        with np.errstate(divide="ignore"):
            return self.shape / self.scale * (t / self.scale) ** (self.shape - 1.0)

    def cumulative_hazard(self, t):
        return (np.asarray(t, dtype=float) / self.scale) ** self.shape

    def inverse_cumulative_hazard(self, y):
        return self.scale * np.asarray(y, dtype=float) ** (1.0 / self.shape)


class Gompertz(_Family):
    """h(t) = rate * exp(shape * t); shape < 0 gives a hazard that dies out (a cured fraction)."""

    family: Literal["gompertz"] = "gompertz"
    shape: Finite
    rate: Positive

    def hazard(self, t):
        return self.rate * np.exp(self.shape * np.asarray(t, dtype=float))

    def cumulative_hazard(self, t):
        t = np.asarray(t, dtype=float)
        if self.shape == 0:
            return self.rate * t
        return self.rate / self.shape * np.expm1(self.shape * t)

    def inverse_cumulative_hazard(self, y):
        y = np.asarray(y, dtype=float)
        if self.shape == 0:
            return y / self.rate
        arg = self.shape * y / self.rate
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.log1p(arg) / self.shape
        return np.where(arg <= -1.0, np.inf, t)


class LogNormal(_Family):
    """log T ~ Normal(mu, sigma) with T in days, as lifelines' LogNormalFitter (mu_, sigma_)."""

    family: Literal["lognormal"] = "lognormal"
    mu: Finite
    sigma: Positive

    def _z(self, t):
        with np.errstate(divide="ignore"):
            return (np.log(np.asarray(t, dtype=float)) - self.mu) / self.sigma

    def hazard(self, t):
        t = np.asarray(t, dtype=float)
        z = self._z(t)
        with np.errstate(invalid="ignore", divide="ignore"):
            density = np.exp(-0.5 * z**2) / (np.sqrt(2 * np.pi) * self.sigma * t)
            return np.where(t > 0, density / ndtr(-z), 0.0)

    def cumulative_hazard(self, t):
        return -log_ndtr(-self._z(t))

    def inverse_cumulative_hazard(self, y):
        y = np.asarray(y, dtype=float)
        return np.exp(self.mu - self.sigma * ndtri_exp(-y))


class LogLogistic(_Family):
    """S(t) = 1 / (1 + (t / scale) ** shape), as lifelines' LogLogisticFitter (alpha_, beta_)."""

    family: Literal["loglogistic"] = "loglogistic"
    scale: Positive
    shape: Positive

    def hazard(self, t):
        ratio = np.asarray(t, dtype=float) / self.scale
        with np.errstate(divide="ignore"):
            return self.shape / self.scale * ratio ** (self.shape - 1.0) / (1.0 + ratio**self.shape)

    def cumulative_hazard(self, t):
        return np.log1p((np.asarray(t, dtype=float) / self.scale) ** self.shape)

    def inverse_cumulative_hazard(self, y):
        return self.scale * np.expm1(np.asarray(y, dtype=float)) ** (1.0 / self.shape)


class PiecewiseConstant(_Family):
    """Hazard ``rates[j]`` on [breakpoints[j-1], breakpoints[j]); the last rate runs forever."""

    family: Literal["piecewise"] = "piecewise"
    breakpoints: list[Positive]
    rates: list[NonNegative]

    @model_validator(mode="after")
    def _shape_matches(self) -> PiecewiseConstant:
        if len(self.rates) != len(self.breakpoints) + 1:
            raise ValueError(
                f"needs one more rate than breakpoints: {len(self.breakpoints)} breakpoints, "
                f"{len(self.rates)} rates"
            )
        if any(b <= a for a, b in zip(self.breakpoints, self.breakpoints[1:], strict=False)):
            raise ValueError(f"breakpoints must increase strictly, got {self.breakpoints}")
        return self

    @cached_property
    def _knots(self) -> np.ndarray:
        return np.concatenate([[0.0], self.breakpoints])

    @cached_property
    def _rates(self) -> np.ndarray:
        return np.asarray(self.rates, dtype=float)

    @cached_property
    def _knot_cumhaz(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(np.diff(self._knots) * self._rates[:-1])])

    def hazard(self, t):
        return self._rates[_piece(self._knots, np.asarray(t, dtype=float))]

    def cumulative_hazard(self, t):
        t = np.asarray(t, dtype=float)
        knots = self._knots
        j = _piece(knots, t)
        return self._knot_cumhaz[j] + self._rates[j] * (t - knots[j])

    def inverse_cumulative_hazard(self, y):
        y = np.asarray(y, dtype=float)
        knot_h = self._knot_cumhaz
        j = _piece(knot_h, y)
        # Several knots share one H where a rate is zero; searchsorted(side="right") skips them.
        rate = self._rates[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self._knots[j] + (y - knot_h[j]) / rate
        return np.where(rate > 0, t, np.where(y > knot_h[j], np.inf, self._knots[j]))


def _piece(knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index j of the last knot <= value (0 below the first), for increasing ``knots``.

    With few knots, summed comparisons beat ``np.searchsorted`` several times over; ties of
    equal knots resolve to the last of them, as ``searchsorted(side="right") - 1`` does.
    """
    if knots.size > 16:
        return np.maximum(np.searchsorted(knots, values, side="right") - 1, 0)
    j = np.zeros(values.shape, dtype=np.intp)
    for knot in knots[1:]:
        j += values >= knot
    return j


Hazard = Annotated[
    Exponential | Weibull | Gompertz | LogNormal | LogLogistic | PiecewiseConstant,
    Field(discriminator="family"),
]
"""Any hazard family, chosen in a scenario file by its ``family`` key."""

FAMILIES = ("exponential", "weibull", "gompertz", "lognormal", "loglogistic", "piecewise")
