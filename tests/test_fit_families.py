"""Per-transition fits against lifelines and closed forms: univariate fitters with delayed entry,
Weibull PH against Weibull AFT, exponential rates, Cox and the Breslow baseline, AIC choice,
and the censoring model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from autograd import numpy as anp
from lifelines import (
    CoxPHFitter,
    ExponentialFitter,
    LogLogisticFitter,
    LogNormalFitter,
    NelsonAalenFitter,
    PiecewiseExponentialFitter,
    WeibullAFTFitter,
    WeibullFitter,
)
from lifelines.fitters import ParametricUnivariateFitter

from trajectories import hazards
from trajectories.fit.censoring import fit_censoring
from trajectories.fit.families import (
    AtRisk,
    FitError,
    breslow,
    fit_cox,
    fit_parametric,
    select_family,
)

N = 3000


class GompertzFitter(ParametricUnivariateFitter):
    """lifelines has no Gompertz fitter; its generic machinery fits one from H(t)."""

    _fitted_parameter_names = ["rate_", "shape_"]
    _bounds = [(0, None), (None, None)]

    def _cumulative_hazard(self, params, times):
        rate, shape = params
        return rate / shape * anp.expm1(shape * times)


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    """Weibull PH times with a numeric and a binary covariate, uniform censoring, and delayed
    entry for 30% of the rows."""
    rng = np.random.default_rng(3)
    x, g = rng.normal(size=N), (rng.random(N) < 0.5).astype(float)
    event_time = 300 * rng.weibull(1.4, N) * np.exp(-(0.3 * x - 0.5 * g) / 1.4)
    censor = rng.uniform(100, 900, N)
    exit_time = np.minimum(event_time, censor)
    entry = np.where(rng.random(N) < 0.3, rng.uniform(0, 1, N) * exit_time, 0.0)
    return {"x": x, "g": g, "exit": exit_time, "event": event_time <= censor, "entry": entry}


def _unadjusted(sample, entry=True) -> AtRisk:
    start = sample["entry"] if entry else np.zeros(N)
    return AtRisk(start, sample["exit"], sample["event"], np.zeros((N, 0)), [])


LIFELINES = [
    # family, lifelines fitter, (lifelines parameter -> our log-scale parameter)
    ("weibull", WeibullFitter, {"rho_": "log_shape", "lambda_": "log_scale"}),
    ("exponential", ExponentialFitter, {"lambda_": "minus_log_rate"}),
    ("lognormal", LogNormalFitter, {"mu_": "mu", "sigma_": "log_sigma"}),
    ("loglogistic", LogLogisticFitter, {"alpha_": "log_scale", "beta_": "log_shape"}),
]


@pytest.mark.parametrize(("family", "fitter", "mapping"), LIFELINES)
def test_unadjusted_fits_match_lifelines_univariate_fitters(sample, family, fitter, mapping):
    theirs = fitter().fit(sample["exit"], sample["event"], entry=sample["entry"])
    ours = fit_parametric(family, _unadjusted(sample))
    # the same maximum (ours at least as high: lifelines stops at a looser tolerance)
    assert ours.loglik == pytest.approx(theirs.log_likelihood_, rel=1e-9)
    assert ours.loglik >= theirs.log_likelihood_ - 1e-8
    their_se = np.sqrt(np.diag(theirs.variance_matrix_.loc[list(mapping), list(mapping)]))
    for (name, target), se in zip(mapping.items(), their_se, strict=True):
        value = theirs.params_[name]
        if target == "minus_log_rate":  # lifelines' exponential lambda_ is a mean time
            expected, expected_se, index = -math.log(value), se / value, 0
        elif target.startswith("log_"):
            expected, expected_se = math.log(value), se / value
            index = ours.theta_names.index(target)
        else:
            expected, expected_se, index = value, se, ours.theta_names.index(target)
        assert ours.theta[index] == pytest.approx(expected, rel=1e-4, abs=1e-4)
        assert ours.std_errors[index] == pytest.approx(expected_se, rel=1e-3)


def test_gompertz_matches_a_lifelines_custom_fitter():
    rng = np.random.default_rng(1)
    truth = hazards.Gompertz(shape=0.004, rate=0.002)
    event_time = truth.quantile(rng.random(N))
    censor = rng.uniform(100, 800, N)
    exit_time, event = np.minimum(event_time, censor), event_time <= censor
    entry = np.where(rng.random(N) < 0.3, rng.random(N) * exit_time, 0.0)
    theirs = GompertzFitter().fit(exit_time, event, entry=entry,
                                  initial_point=np.array([0.001, 0.001]))
    ours = fit_parametric("gompertz", AtRisk(entry, exit_time, event, np.zeros((N, 0)), []))
    assert ours.loglik == pytest.approx(theirs.log_likelihood_, rel=1e-9)
    assert ours.hazard.shape == pytest.approx(theirs.params_["shape_"], rel=1e-4)
    assert ours.hazard.rate == pytest.approx(theirs.params_["rate_"], rel=1e-4)
    their_se = np.sqrt(np.diag(theirs.variance_matrix_))
    assert ours.std_errors[0] == pytest.approx(their_se[1], rel=1e-3)  # shape
    assert ours.std_errors[1] == pytest.approx(their_se[0] / theirs.params_["rate_"], rel=1e-3)


def test_piecewise_matches_lifelines_piecewise_exponential(sample):
    knots = [100.0, 200.0, 400.0]
    theirs = PiecewiseExponentialFitter(breakpoints=knots).fit(
        sample["exit"], sample["event"], entry=sample["entry"])
    ours = fit_parametric("piecewise", _unadjusted(sample), knots=knots)
    assert ours.loglik == pytest.approx(theirs.log_likelihood_, rel=1e-9)
    # lifelines' lambda_j are mean times 1 / rate_j
    np.testing.assert_allclose(ours.hazard.rates, 1 / theirs.params_.to_numpy(), rtol=1e-5)
    assert ours.hazard.breakpoints == knots


def test_weibull_ph_equals_weibull_aft_reparameterised(sample):
    frame = pd.DataFrame({"t": sample["exit"], "e": sample["event"].astype(int),
                          "x": sample["x"], "g": sample["g"], "entry": sample["entry"]})
    aft = WeibullAFTFitter().fit(frame, "t", "e", entry_col="entry")
    data = AtRisk(sample["entry"], sample["exit"], sample["event"],
                  np.column_stack([sample["x"], sample["g"]]), ["x", "g"])
    ours = fit_parametric("weibull", data)
    shape = math.exp(aft.params_["rho_"]["Intercept"])
    assert ours.loglik == pytest.approx(aft.log_likelihood_, rel=1e-9)
    assert ours.loglik >= aft.log_likelihood_ - 1e-8
    assert ours.hazard.shape == pytest.approx(shape, rel=1e-4)
    assert ours.hazard.scale == pytest.approx(math.exp(aft.params_["lambda_"]["Intercept"]),
                                              rel=1e-4)
    np.testing.assert_allclose(ours.beta, -shape * aft.params_["lambda_"][["x", "g"]].to_numpy(),
                               rtol=1e-4)
    # and the truth (log HR 0.3, -0.5) within four standard errors
    assert np.all(np.abs(ours.beta - [0.3, -0.5]) < 4 * ours.std_errors[2:])


def test_exponential_with_a_binary_covariate_has_closed_form_rates(sample):
    event, exposure, g = sample["event"], sample["exit"] - sample["entry"], sample["g"]
    rate0 = event[g == 0].sum() / exposure[g == 0].sum()
    rate1 = event[g == 1].sum() / exposure[g == 1].sum()
    data = AtRisk(sample["entry"], sample["exit"], event, g[:, None], ["g"])
    ours = fit_parametric("exponential", data)
    assert ours.hazard.rate == pytest.approx(rate0, rel=1e-7)
    assert ours.beta[0] == pytest.approx(math.log(rate1 / rate0), rel=1e-7)
    # Poisson variance: 1 / events per group
    se = math.sqrt(1 / event[g == 0].sum() + 1 / event[g == 1].sum())
    assert ours.std_errors[1] == pytest.approx(se, rel=1e-4)


def test_cox_and_breslow_match_lifelines(sample):
    frame = pd.DataFrame({"t": sample["exit"], "e": sample["event"].astype(int),
                          "x": sample["x"], "g": sample["g"]})
    theirs = CoxPHFitter().fit(frame, "t", "e")
    x = np.column_stack([sample["x"], sample["g"]])
    data = AtRisk(np.zeros(N), sample["exit"], sample["event"], x, ["x", "g"])
    ours = fit_cox(data)
    np.testing.assert_allclose(ours.beta, theirs.params_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours.std_errors, theirs.standard_errors_.to_numpy(), rtol=1e-6)
    times, cumulative = breslow(data, ours.beta)
    # lifelines reports the baseline at the covariate means
    at_means = cumulative * math.exp(x.mean(axis=0) @ ours.beta)
    np.testing.assert_allclose(
        at_means, theirs.baseline_cumulative_hazard_.iloc[:, 0].reindex(times).to_numpy(),
        rtol=1e-9)
    assert ours.loglik is None and ours.aic is None
    # the piecewise hazard keeps the Breslow cumulative hazard at its knots
    knots = np.asarray(ours.hazard.breakpoints)
    np.testing.assert_allclose(ours.hazard.cumulative_hazard(knots),
                               np.interp(knots, times, cumulative), rtol=1e-9)


def test_breslow_with_delayed_entry_is_nelson_aalen_without_covariates(sample):
    theirs = NelsonAalenFitter(nelson_aalen_smoothing=False).fit(
        sample["exit"], sample["event"], entry=sample["entry"])
    times, cumulative = breslow(_unadjusted(sample), np.zeros(0))
    expected = theirs.cumulative_hazard_.iloc[:, 0].reindex(times).to_numpy()
    np.testing.assert_allclose(cumulative, expected, rtol=1e-9)


@pytest.mark.parametrize("truth", [
    hazards.Weibull(shape=1.6, scale=300.0),
    hazards.Gompertz(shape=0.006, rate=0.001),
    hazards.LogNormal(mu=5.5, sigma=0.7),
    hazards.LogLogistic(scale=250.0, shape=2.5),
])
def test_aic_picks_the_family_that_generated_the_data(truth):
    rng = np.random.default_rng(7)
    event_time = truth.quantile(rng.random(N))
    censor = rng.uniform(200, 1500, N)
    data = AtRisk(np.zeros(N), np.minimum(event_time, censor), event_time <= censor,
                  np.zeros((N, 0)), [])
    best, fits = select_family(data)
    assert best.family == truth.family
    assert {f.family for f in fits} == {"exponential", "weibull", "gompertz", "lognormal",
                                        "loglogistic"}


def test_cox_cannot_be_compared_by_aic(sample):
    with pytest.raises(FitError, match="comparable"):
        select_family(_unadjusted(sample), ["cox", "weibull"])
    with pytest.raises(FitError, match="unknown family 'gamma'"):
        fit_parametric("gamma", _unadjusted(sample))


def test_censoring_window_and_loss_rate_are_recovered():
    n, low, high, loss = 20_000, 400.0, 1400.0, 0.3 / 365.25
    rng = np.random.default_rng(5)
    admin = rng.uniform(low, high, n)
    lost = rng.exponential(1 / loss, n)
    death = rng.exponential(900.0, n)
    censor = np.minimum(admin, lost)
    followup = np.minimum(death, censor)
    fitted = fit_censoring(followup, censor < death)
    n_lost = int(((lost < admin) & (lost < death)).sum())
    assert abs(fitted.loss_per_day - loss) < 4 * loss / math.sqrt(n_lost)
    assert abs(fitted.window_low - low) < 0.02 * (high - low)
    assert fitted.window_high == pytest.approx(followup.max())
    # no censoring at all: everyone followed to the end
    none = fit_censoring(np.array([10.0, 20.0, 30.0]), np.zeros(3, bool))
    assert none.loss_per_day == 0.0 and none.window_low == none.window_high == 30.0
