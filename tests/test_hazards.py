"""Hazard families against scipy.stats, their own identities, hand computations and validation."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError
from scipy import stats

from trajectories.hazards import (
    FAMILIES,
    Exponential,
    Gompertz,
    Hazard,
    LogLogistic,
    LogNormal,
    PiecewiseConstant,
    Weibull,
)

RTOL = 1e-10
PROBABILITIES = np.array([0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999])

# (our family, the same distribution in scipy.stats)
CASES = [
    (Exponential(rate=0.004), stats.expon(scale=1 / 0.004)),
    (Weibull(shape=1.7, scale=250.0), stats.weibull_min(c=1.7, scale=250.0)),
    (Weibull(shape=0.6, scale=40.0), stats.weibull_min(c=0.6, scale=40.0)),
    (Gompertz(shape=0.003, rate=0.0005), stats.gompertz(c=0.0005 / 0.003, scale=1 / 0.003)),
    (LogNormal(mu=5.5, sigma=0.9), stats.lognorm(s=0.9, scale=np.exp(5.5))),
    (LogNormal(mu=2.0, sigma=0.3), stats.lognorm(s=0.3, scale=np.exp(2.0))),
    (LogLogistic(scale=300.0, shape=2.5), stats.fisk(c=2.5, scale=300.0)),
    (LogLogistic(scale=30.0, shape=0.8), stats.fisk(c=0.8, scale=30.0)),
]
IDS = [f"{h.family}-{i}" for i, (h, _) in enumerate(CASES)]

PIECEWISE = PiecewiseConstant(breakpoints=[10.0, 30.0, 50.0], rates=[0.1, 0.0, 0.05, 0.02])


def _times(reference) -> np.ndarray:
    """Times spanning the bulk of the distribution (0.1% to 99.9% quantiles)."""
    return reference.ppf(np.linspace(0.001, 0.999, 41))


@pytest.mark.parametrize(("hazard", "reference"), CASES, ids=IDS)
def test_survival_matches_scipy(hazard, reference) -> None:
    t = _times(reference)
    np.testing.assert_allclose(hazard.survival(t), reference.sf(t), rtol=RTOL)
    np.testing.assert_allclose(hazard.cumulative_hazard(t), -reference.logsf(t), rtol=RTOL)


@pytest.mark.parametrize(("hazard", "reference"), CASES, ids=IDS)
def test_hazard_matches_scipy(hazard, reference) -> None:
    t = _times(reference)
    np.testing.assert_allclose(hazard.hazard(t), reference.pdf(t) / reference.sf(t), rtol=RTOL)


@pytest.mark.parametrize(("hazard", "reference"), CASES, ids=IDS)
def test_quantile_matches_scipy(hazard, reference) -> None:
    np.testing.assert_allclose(hazard.quantile(PROBABILITIES), reference.ppf(PROBABILITIES),
                               rtol=RTOL)


@pytest.mark.parametrize("hazard", [h for h, _ in CASES] + [PIECEWISE],
                         ids=IDS + ["piecewise"])
def test_inverse_cumulative_hazard_round_trip(hazard) -> None:
    y = np.array([1e-6, 1e-3, 0.05, 0.3, 0.9, 1.0, 1.7, 2.5, 4.0, 9.0])
    np.testing.assert_allclose(hazard.cumulative_hazard(hazard.inverse_cumulative_hazard(y)), y,
                               rtol=RTOL)


@pytest.mark.parametrize("hazard", [h for h, _ in CASES] + [PIECEWISE],
                         ids=IDS + ["piecewise"])
def test_hazard_is_derivative_of_cumulative_hazard(hazard) -> None:
    # Away from the piecewise breakpoints, where H has kinks.
    t = hazard.quantile(np.array([0.02, 0.1, 0.3, 0.45, 0.6, 0.8, 0.95]))
    step = 1e-6 * t
    numeric = (hazard.cumulative_hazard(t + step) - hazard.cumulative_hazard(t - step)) / (2 * step)
    np.testing.assert_allclose(hazard.hazard(t), numeric, rtol=1e-6)


@pytest.mark.parametrize("hazard", [h for h, _ in CASES] + [PIECEWISE],
                         ids=IDS + ["piecewise"])
def test_exit_clock_solves_the_conditional_equation(hazard) -> None:
    u0 = hazard.quantile(np.array([0.0, 0.2, 0.5, 0.7, 0.9]))
    increment = np.array([0.01, 0.5, 1.0, 2.0, 0.3])
    u = hazard.exit_clock(u0, increment)
    assert np.all(u >= u0)
    np.testing.assert_allclose(hazard.cumulative_hazard(u),
                               hazard.cumulative_hazard(u0) + increment, rtol=RTOL)


@pytest.mark.parametrize(("hazard", "reference"), CASES, ids=IDS)
def test_exit_clock_samples_the_conditional_distribution(hazard, reference) -> None:
    """P(T > u0 + s | T > u0) = S(u0 + s) / S(u0) for exits drawn with E ~ Exp(1)."""
    n = 40_000
    rng = np.random.default_rng(11)
    u0 = float(reference.median())
    exits = hazard.exit_clock(np.full(n, u0), rng.standard_exponential(n))
    for p in (0.25, 0.5, 0.75):
        later = float(reference.ppf(1 - (1 - p) * reference.sf(u0)))  # S(later) / S(u0) = 1 - p
        observed = np.mean(exits > later)
        assert abs(observed - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)


def test_exponential_exit_clock_with_zero_rate_never_exits() -> None:
    hazard = Exponential(rate=0.0)
    assert np.all(np.isinf(hazard.exit_clock(np.array([0.0, 5.0]), np.array([0.1, 3.0]))))
    np.testing.assert_array_equal(hazard.survival(np.array([0.0, 1e6])), [1.0, 1.0])


def test_gompertz_zero_shape_is_exponential() -> None:
    t = np.array([0.5, 10.0, 300.0])
    gompertz, exponential = Gompertz(shape=0.0, rate=0.01), Exponential(rate=0.01)
    np.testing.assert_allclose(gompertz.cumulative_hazard(t), exponential.cumulative_hazard(t),
                               rtol=RTOL)
    np.testing.assert_allclose(gompertz.hazard(t), exponential.hazard(t), rtol=RTOL)
    np.testing.assert_allclose(gompertz.inverse_cumulative_hazard(t / 100), t, rtol=RTOL)


def test_gompertz_negative_shape_has_a_plateau_and_infinite_times_beyond() -> None:
    hazard = Gompertz(shape=-0.01, rate=0.02)
    plateau = 0.02 / 0.01  # H(inf) = rate / |shape|
    np.testing.assert_allclose(hazard.cumulative_hazard(np.array([1e5])), [plateau], rtol=RTOL)
    beyond = hazard.inverse_cumulative_hazard(np.array([plateau, plateau + 0.1, 10.0]))
    assert np.all(np.isinf(beyond))
    assert np.isfinite(hazard.inverse_cumulative_hazard(np.array([plateau - 1e-3]))).all()
    cured = np.exp(-plateau)  # the fraction that never leaves
    quantiles = hazard.quantile(np.array([1 - cured - 1e-3, 1 - cured + 1e-3, 0.99]))
    assert np.isfinite(quantiles[0]) and np.all(np.isinf(quantiles[1:]))
    # Once past the plateau, conditioned sampling also never exits.
    assert np.isinf(hazard.exit_clock(np.array([100.0]), np.array([plateau]))).all()


def test_piecewise_against_hand_computation() -> None:
    # rates 0.1 on [0,10), 0 on [10,30), 0.05 on [30,50), 0.02 after 50.
    t = np.array([0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    expected_h = np.array([0.1, 0.1, 0.0, 0.0, 0.05, 0.05, 0.02, 0.02])
    expected_cum = np.array([0.0, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 2.2])
    np.testing.assert_allclose(PIECEWISE.hazard(t), expected_h, rtol=RTOL)
    np.testing.assert_allclose(PIECEWISE.cumulative_hazard(t), expected_cum, rtol=RTOL, atol=0)
    y = np.array([0.0, 0.5, 0.99, 1.2, 2.0, 2.2, 3.0])
    expected_t = np.array([0.0, 5.0, 9.9, 34.0, 50.0, 60.0, 100.0])
    np.testing.assert_allclose(PIECEWISE.inverse_cumulative_hazard(y), expected_t, rtol=RTOL)
    # Just above the zero-rate piece's level the inverse jumps over the whole piece.
    assert PIECEWISE.inverse_cumulative_hazard(np.array([1.0 + 1e-9]))[0] == pytest.approx(30.0)


def test_piecewise_leading_and_trailing_zero_rates() -> None:
    late = PiecewiseConstant(breakpoints=[10.0], rates=[0.0, 0.1])
    np.testing.assert_allclose(late.cumulative_hazard(np.array([5.0, 10.0, 15.0])),
                               [0.0, 0.0, 0.5], atol=1e-15)
    np.testing.assert_allclose(late.inverse_cumulative_hazard(np.array([0.5, 1.0])), [15.0, 20.0],
                               rtol=RTOL)
    ends = PiecewiseConstant(breakpoints=[10.0], rates=[0.1, 0.0])
    np.testing.assert_allclose(ends.inverse_cumulative_hazard(np.array([0.5, 1.0])), [5.0, 10.0],
                               rtol=RTOL)
    assert np.isinf(ends.inverse_cumulative_hazard(np.array([1.0 + 1e-9, 5.0]))).all()
    np.testing.assert_allclose(ends.survival(np.array([1e9])), [np.exp(-1.0)], rtol=RTOL)


def test_piecewise_with_one_piece_is_exponential() -> None:
    t = np.array([0.0, 3.0, 1000.0])
    one = PiecewiseConstant(breakpoints=[], rates=[0.02])
    np.testing.assert_allclose(one.cumulative_hazard(t), 0.02 * t, rtol=RTOL)
    np.testing.assert_allclose(one.inverse_cumulative_hazard(0.02 * t), t, rtol=RTOL)


def test_methods_are_vectorised_and_keep_shape() -> None:
    t = np.linspace(1.0, 500.0, 12).reshape(3, 4)
    for hazard, _ in CASES:
        for method in (hazard.hazard, hazard.cumulative_hazard, hazard.survival):
            assert method(t).shape == (3, 4)


def test_discriminated_union_picks_the_family() -> None:
    adapter = TypeAdapter(Hazard)
    parsed = adapter.validate_python({"family": "lognormal", "mu": 1.0, "sigma": 0.5})
    assert parsed == LogNormal(mu=1.0, sigma=0.5)
    assert {adapter.validate_python(spec).family for spec in (
        {"family": "exponential", "rate": 1.0},
        {"family": "weibull", "shape": 1.0, "scale": 1.0},
        {"family": "gompertz", "shape": -1.0, "rate": 1.0},
        {"family": "lognormal", "mu": 0.0, "sigma": 1.0},
        {"family": "loglogistic", "shape": 1.0, "scale": 1.0},
        {"family": "piecewise", "breakpoints": [1.0], "rates": [1.0, 2.0]},
    )} == set(FAMILIES)


@pytest.mark.parametrize(
    "spec",
    [
        {"family": "exponential", "rate": -0.1},
        {"family": "exponential", "rate": float("inf")},
        {"family": "exponential", "rate": float("nan")},
        {"family": "weibull", "shape": 0.0, "scale": 10.0},
        {"family": "weibull", "shape": 1.0, "scale": -10.0},
        {"family": "gompertz", "shape": 0.1, "rate": 0.0},
        {"family": "gompertz", "shape": float("inf"), "rate": 0.1},
        {"family": "lognormal", "mu": 1.0, "sigma": 0.0},
        {"family": "loglogistic", "shape": -1.0, "scale": 10.0},
        {"family": "piecewise", "breakpoints": [10.0], "rates": [0.1, -0.2]},
        {"family": "piecewise", "breakpoints": [10.0, 20.0], "rates": [0.1, 0.2]},
        {"family": "piecewise", "breakpoints": [10.0], "rates": [0.1, 0.2, 0.3]},
        {"family": "piecewise", "breakpoints": [20.0, 10.0], "rates": [0.1, 0.2, 0.3]},
        {"family": "piecewise", "breakpoints": [10.0, 10.0], "rates": [0.1, 0.2, 0.3]},
        {"family": "piecewise", "breakpoints": [0.0], "rates": [0.1, 0.2]},
        {"family": "exponential", "rate": 0.1, "scale": 3.0},
        {"family": "cauchy", "rate": 0.1},
    ],
    ids=lambda spec: ",".join(f"{k}={v}" for k, v in spec.items()),
)
def test_invalid_parameters_are_rejected(spec) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Hazard).validate_python(spec)


def test_piecewise_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="one more rate than breakpoints"):
        PiecewiseConstant(breakpoints=[1.0, 2.0], rates=[0.1, 0.2])
    with pytest.raises(ValidationError, match="increase strictly"):
        PiecewiseConstant(breakpoints=[2.0, 1.0], rates=[0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("hazard", "limit"),
    [
        (Exponential(rate=0.3), 0.3),
        (Weibull(shape=1.0, scale=10.0), 0.1),
        (Weibull(shape=2.0, scale=10.0), 0.0),
        (Weibull(shape=0.5, scale=10.0), np.inf),
        (Gompertz(shape=0.1, rate=0.2), 0.2),
        (LogNormal(mu=1.0, sigma=1.0), 0.0),
        (LogLogistic(shape=2.0, scale=10.0), 0.0),
        (LogLogistic(shape=1.0, scale=10.0), 0.1),  # h(t) = 1 / (scale + t)
        (LogLogistic(shape=0.5, scale=10.0), np.inf),
        (PIECEWISE, 0.1),
    ],
    ids=["exponential", "weibull-1", "weibull-2", "weibull-0.5", "gompertz", "lognormal",
         "loglogistic-2", "loglogistic-1", "loglogistic-0.5", "piecewise"],
)
def test_hazard_at_time_zero_is_its_limit(hazard, limit) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):
        at_zero = hazard.hazard(np.array([0.0]))[0]
        near_zero = hazard.hazard(np.array([1e-12]))[0]
    assert at_zero == pytest.approx(limit)
    if np.isfinite(limit):
        assert near_zero == pytest.approx(limit, abs=1e-5)
