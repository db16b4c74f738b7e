"""Scenario ``[copula]``: a Gaussian copula joins drawn covariates (numeric and categorical) with
a normal-scores correlation; it is validated with errors naming the field, leaves scenarios
without it drawing what they always drew, and ``MultiStateModel()`` (by default
``covariate_draw='copula'``) estimates it from a reference."""

from __future__ import annotations

import copy
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from trajectories import ScenarioError, load_scenario
from trajectories.errors import PrivacyWarning
from trajectories.fit import MultiStateModel, write_scenario
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.blocks import block_rng
from trajectories.simulate.population import draw_population

N = 20_000
RHO_XY, RHO_XG = 0.6, 0.5
P_HIGH = 0.3

BASE = {
    "name": "copula",
    "initial_state": "well",
    "states": [{"name": "well"}, {"name": "dead", "absorbing": True}],
    "transitions": [{"from": "well", "to": "dead", "effects": {"x": 0.2},
                     "hazard": {"family": "exponential", "rate": 1e-3}}],
    "covariates": {
        "x": {"kind": "normal", "mean": 0.0, "sd": 1.0},
        "y": {"kind": "normal", "mean": 0.0, "sd": 1.0},
        "grade": {"kind": "categorical", "levels": {"low": 1 - P_HIGH, "high": P_HIGH}},
    },
}
COPULA = {"covariates": ["x", "y", "grade"],
          "correlation": [[1.0, RHO_XY, RHO_XG], [RHO_XY, 1.0, 0.0], [RHO_XG, 0.0, 1.0]]}


def scenario(copula: dict | None = COPULA, **extra) -> dict:
    data = copy.deepcopy(BASE)
    if copula is not None:
        data["copula"] = copy.deepcopy(copula)
    data.update(extra)
    return data


def population(data: dict, n: int = N, seed: int = 5):
    simulator = MarkovSimulator(scenario_from_dict(data))
    return draw_population(simulator.plan, 0, n, block_rng(seed, 0))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


# -- drawing -------------------------------------------------------------------------------------


def test_numeric_pair_has_the_copula_correlation_and_none_without_it():
    joined = population(scenario())
    r = pearson(joined.numeric["x"], joined.numeric["y"])
    # untruncated standard normals: the copula correlation is their Pearson correlation, whose
    # sample estimate has sd (1 - rho^2) / sqrt(n)
    assert abs(r - RHO_XY) < 4 * (1 - RHO_XY**2) / math.sqrt(N)
    # marginals are untouched by the copula
    for name in ("x", "y"):
        assert abs(joined.numeric[name].mean()) < 4 / math.sqrt(N)
        assert abs(joined.numeric[name].std() - 1) < 4 * math.sqrt(0.5 / N)
    alone = population(scenario(None))
    assert abs(pearson(alone.numeric["x"], alone.numeric["y"])) < 4 / math.sqrt(N)


def test_categorical_numeric_pair_keeps_its_association():
    joined = population(scenario())
    high = joined.categorical["grade"] == 1
    n_high = int(high.sum())
    assert abs(n_high / N - P_HIGH) < 4 * math.sqrt(P_HIGH * (1 - P_HIGH) / N)
    # high grade <=> latent Z_g > Phi^-1(1 - p): E[x | high] = rho phi(c) / p
    c = stats.norm.ppf(1 - P_HIGH)
    expected = RHO_XG * stats.norm.pdf(c) / P_HIGH
    x_high = joined.numeric["x"][high]
    assert abs(x_high.mean() - expected) < 4 * x_high.std() / math.sqrt(n_high)
    # y is uncorrelated with grade in the copula
    assert abs(joined.numeric["y"][high].mean()) < 4 / math.sqrt(n_high)
    alone = population(scenario(None))
    high = alone.categorical["grade"] == 1
    assert abs(alone.numeric["x"][high].mean()) < 4 / math.sqrt(int(high.sum()))


def test_stream_is_deterministic_and_covariates_before_the_copula_keep_their_draws():
    joined, again = population(scenario(), seed=9), population(scenario(), seed=9)
    for name in ("x", "y", "age"):
        np.testing.assert_array_equal(joined.numeric[name], again.numeric[name])
    alone = population(scenario(None), seed=9)
    # age and sex are declared first and draw before the copula's normals: same person by person
    np.testing.assert_array_equal(joined.site, alone.site)
    np.testing.assert_array_equal(joined.numeric["age"], alone.numeric["age"])
    np.testing.assert_array_equal(joined.categorical["sex"], alone.categorical["sex"])
    assert not np.array_equal(joined.numeric["y"], alone.numeric["y"])


def test_scenarios_without_a_copula_have_no_copula_entry_and_round_trip(tmp_path):
    plain = scenario_from_dict(scenario(None))
    assert plain.copula is None
    assert "[copula]" not in write_scenario(plain, tmp_path / "plain.toml").read_text()
    joined = scenario_from_dict(scenario())
    assert joined.content_hash() != plain.content_hash()
    path = write_scenario(joined, tmp_path / "joined.toml")
    assert "[copula]" in path.read_text()
    back = load_scenario(path)
    assert back.content_hash() == joined.content_hash()
    a = MarkovSimulator(joined).simulate(500, seed=2)
    b = MarkovSimulator(back).simulate(500, seed=2)
    assert a.fingerprint() == b.fingerprint()


# -- validation ----------------------------------------------------------------------------------

ERRORS = [
    ("unknown covariate", {"covariates": ["x", "bmi"], "correlation": [[1, 0.2], [0.2, 1]]},
     r"copula: covariates names 'bmi', which is not a declared covariate"),
    ("duplicate", {"covariates": ["x", "x"], "correlation": [[1, 0.2], [0.2, 1]]},
     r"copula: covariates names 'x' twice"),
    ("one covariate", {"covariates": ["x"], "correlation": [[1.0]]},
     r"copula: covariates needs at least two covariates"),
    ("not square", {"covariates": ["x", "y"], "correlation": [[1, 0.2], [0.2]]},
     r"copula: correlation must be 2 x 2"),
    ("wrong size", {"covariates": ["x", "y", "grade"], "correlation": [[1, 0.2], [0.2, 1]]},
     r"copula: correlation must be 3 x 3"),
    ("asymmetric", {"covariates": ["x", "y"], "correlation": [[1, 0.2], [0.3, 1]]},
     r"copula: correlation must be symmetric; \[0\]\[1\] = 0\.2 but \[1\]\[0\] = 0\.3"),
    ("diagonal", {"covariates": ["x", "y"], "correlation": [[2, 0.2], [0.2, 1]]},
     r"copula: correlation must have 1 on its diagonal"),
    ("not positive definite",
     {"covariates": ["x", "y", "grade"],
      "correlation": [[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]]},
     r"copula: correlation must be positive definite; its smallest eigenvalue is -0\.8"),
    ("not a number", {"covariates": ["x", "y"], "correlation": [[1, "a"], ["a", 1]]},
     r"copula\.correlation\[0\]\[1\]: Input should be a valid number"),
]


@pytest.mark.parametrize("label, copula, pattern", ERRORS, ids=[e[0] for e in ERRORS])
def test_invalid_copula_names_the_field(label, copula, pattern):
    with pytest.raises(ScenarioError, match=pattern) as raised:
        scenario_from_dict(scenario(copula), source="bad.toml")
    assert str(raised.value).startswith("invalid scenario bad.toml:")


# -- fitting -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    """Two sites with different case-mix (x shifted, grade mix) and the same dependence."""
    data = scenario(sites=[{"name": "A", "share": 0.5},
                           {"name": "B", "share": 0.5,
                            "case_mix": {"x": 1.5, "grade": {"low": 0.3, "high": 0.7}}}])
    data["copula"]["correlation"][1][2] = data["copula"]["correlation"][2][1] = -0.3
    data["covariates"]["y"]["min"] = -2.0  # a truncated marginal: ranks do not care
    return MarkovSimulator(scenario_from_dict(data)).simulate(8_000, seed=11)


def test_marginal_fit_recovers_the_normal_scores_correlation(reference):
    model = MultiStateModel(processes=False, covariates=["x", "y", "grade"]).fit(reference)
    fitted = model.to_scenario()
    assert fitted.baseline is None and fitted.copula is not None
    order = fitted.copula.covariates
    r = np.asarray(fitted.copula.correlation)
    # the fit orders levels by name (high, low): latent grade is flipped, and so its signs
    assert list(fitted.covariates["grade"].levels) == ["high", "low"]
    pairs = {("x", "y"): RHO_XY, ("x", "grade"): -RHO_XG, ("y", "grade"): 0.3}
    n = reference.n_persons
    for (a, b), rho in pairs.items():
        estimate = r[order.index(a), order.index(b)]
        # the estimate's sd is (1 - rho^2) / sqrt(n) for two normals; ranks, truncation and a
        # binary category widen it up to about 1.4 times (measured over 20 references): 6 x
        assert abs(estimate - rho) < 6 * (1 - rho**2) / math.sqrt(n), (a, b, estimate)
    # the fitted scenario draws with it: within a site, x and y correlate as in the reference
    persons = model.simulate(N, seed=4).persons.filter(pl.col("site") == "A")
    ref = reference.persons.filter(pl.col("site") == "A")
    spearman = stats.spearmanr(persons["x"], persons["y"]).statistic
    expected = stats.spearmanr(ref["x"], ref["y"]).statistic
    assert abs(spearman - expected) < 4 * (1 - expected**2) * (1 / math.sqrt(ref.height)
                                                              + 1 / math.sqrt(persons.height))
    # resampling whole rows needs no copula: the rows carry the dependence
    with pytest.warns(PrivacyWarning):
        resampled = MultiStateModel(covariate_draw="resample", processes=False,
                                    covariates=["x", "y"]).fit(reference)
    assert resampled.to_scenario().copula is None
