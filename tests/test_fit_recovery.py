"""Recovery: a MultiStateModel fitted to 20,000 persons simulated from a known scenario finds its
families and clocks, its parameters and log hazard ratios within their confidence intervals,
and simulates cohorts that pass validation against the reference."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from conftest import build_scenario
from scipy import stats

from trajectories.cohort import Cohort
from trajectories.fit import MultiStateModel
from trajectories.fit.censoring import CENSORED_EXITS, fit_censoring
from trajectories.scenario import load_scenario
from trajectories.simulate import MarkovSimulator
from validation import compare

N = 20_000
TRANSITIONS = [
    {"from": "a", "to": "b", "hazard": {"family": "weibull", "shape": 1.5, "scale": 400.0},
     "effects": {"arm": {"treatment": -0.5}, "age": 0.02}},
    {"from": "a", "to": "d", "hazard": {"family": "exponential", "rate": 4e-4},
     "effects": {"age": 0.03}},
    {"from": "b", "to": "d", "clock": "reset",
     "hazard": {"family": "gompertz", "shape": 2e-3, "rate": 1.5e-3},
     "effects": {"arm": {"treatment": -0.3}}},
]
COVARIATES = {
    "arm": {"kind": "categorical", "levels": {"control": 0.5, "treatment": 0.5}},
    "age": {"kind": "normal", "mean": 60.0, "sd": 10.0, "min": 18.0, "max": 95.0,
            "center": 60.0},
}
SITES = [{"name": "A", "share": 0.6},
         {"name": "B", "share": 0.4, "hazard_ratios": {"a->b": 1.3}, "case_mix": {"age": 3.0}}]
# True values of every estimated parameter: family, clock, baseline and log hazard ratios
# (sex and the zero effects are fitted too, and must come out near 0).
TRUTH = {
    "a->b": ("weibull", "forward", {"log_shape": math.log(1.5), "log_scale": math.log(400.0),
                                    "age": 0.02, "arm[treatment]": -0.5, "sex[M]": 0.0,
                                    "site[B]": math.log(1.3)}),
    "a->d": ("exponential", "forward", {"log_rate": math.log(4e-4), "age": 0.03,
                                        "arm[treatment]": 0.0, "sex[M]": 0.0, "site[B]": 0.0}),
    "b->d": ("gompertz", "reset", {"shape": 2e-3, "log_rate": math.log(1.5e-3), "age": 0.0,
                                   "arm[treatment]": -0.3, "sex[M]": 0.0, "site[B]": 0.0}),
}
N_PARAMETERS = sum(len(p) for _, _, p in TRUTH.values())
Z_BONFERRONI = float(stats.norm.isf(0.05 / (2 * N_PARAMETERS)))


@pytest.fixture(scope="module")
def reference() -> Cohort:
    scenario = build_scenario(
        TRANSITIONS, covariates=COVARIATES, sites=SITES,
        followup={"max_days": 1500.0, "loss_to_followup_per_year": 0.05})
    return MarkovSimulator(scenario).simulate(N, seed=11)


@pytest.fixture(scope="module")
def model(reference: Cohort) -> MultiStateModel:
    return MultiStateModel(centers={"age": 60.0}).fit(reference)


def _candidate(model: MultiStateModel, key: str, family: str, clock: str):
    return next(fit for f, c, fit in model.transition(key).candidates
                if f == family and c == clock)


def test_observed_structure(model):
    assert [t.key for t in model.transitions_] == ["a->b", "a->d", "b->d"]
    assert model.initial_ == {"a": 1.0}
    assert [(s["name"], s["absorbing"]) for s in model.states_] == [
        ("a", False), ("b", False), ("d", True)]
    assert model.sites_ == ["A", "B"]


@pytest.mark.parametrize("key", list(TRUTH))
def test_parameters_within_bonferroni_confidence_intervals(model, key):
    family, clock, truth = TRUTH[key]
    fit = _candidate(model, key, family, clock)
    assert fit.converged
    assert sorted(fit.names) == sorted(truth)
    for name, estimate, se in zip(fit.names, fit.estimates, fit.std_errors, strict=True):
        assert abs(estimate - truth[name]) <= Z_BONFERRONI * se, (key, name, estimate, se)


def test_aic_picks_the_true_families_and_clocks(model):
    for key in ("a->b", "b->d"):
        family, clock, _ = TRUTH[key]
        chosen = model.transition(key)
        assert (chosen.fit.family, chosen.clock) == (family, clock)
    # The exponential is nested in the Weibull (shape 1) and the Gompertz (shape 0); a nested
    # family may win AIC by chance, but then its extra parameter must not differ significantly
    # from the exponential's value.
    chosen = model.transition("a->d").fit
    if chosen.family != "exponential":
        null = {"weibull": ("log_shape", 0.0), "gompertz": ("shape", 0.0)}[chosen.family]
        index = chosen.names.index(null[0])
        assert abs(chosen.estimates[index] - null[1]) <= Z_BONFERRONI * chosen.std_errors[index]


def test_censoring_and_covariates_are_recovered(model, reference):
    # Empirical (the default): the reverse Kaplan-Meier knots follow the potential censoring
    # time min(Exp(0.05 / year), 1500 days): each level lies between F(days-) and F(days).
    rate = 0.05 / 365.25
    for site, fit in model.censoring_.items():
        levels, days = np.array(fit.levels), np.array(fit.days)
        assert levels[-1] == 1.0 and fit.max_days == 1500.0, site  # last follow-up: censored
        below = 1 - np.exp(-rate * days)
        at = np.where(days >= 1500.0, 1.0, below)
        clipped = np.clip(levels, 0.01, 0.99)
        persons = reference.persons.filter(pl.col("site") == site)
        at_risk = np.array([(persons["followup_end"] >= d).sum() for d in days])
        tolerance = 5 * np.sqrt(clipped * (1 - clipped) / at_risk) + 1e-9
        assert np.all(clipped >= below - tolerance) and np.all(clipped <= at + tolerance), site
    # Parametric: the window [1500, 1500] and the loss rate.
    for site in model.sites_:
        persons = reference.persons.filter(pl.col("site") == site)
        censoring = fit_censoring(persons["followup_end"].to_numpy(),
                                  persons["exit"].is_in(CENSORED_EXITS).to_numpy())
        assert censoring.window_high == pytest.approx(1500.0, abs=1.0), site
        assert censoring.window_low >= 1490.0
        lost = censoring.n_censored
        assert abs(censoring.loss_per_day * 365.25 - 0.05) < 4 * 0.05 / math.sqrt(lost)
    scenario = model.to_scenario()
    assert scenario.covariates["age"].center == 60.0
    for site, mean, share in (("A", 60.0, 0.6), ("B", 63.0, 0.4)):
        # each site its own quantile knots: the mean of the piecewise-linear quantile function
        # is the trapezoid average of its knots (the ends clipped to the 11th order statistic)
        age = next(s for s in scenario.sites if s.name == site).covariates["age"]
        knots = np.asarray(age.quantiles)
        drawn_mean = (knots[:-1] + knots[1:]).mean() / 2
        assert abs(drawn_mean - mean) < 4 * 10 / math.sqrt(share * N), site
    assert abs(scenario.covariates["arm"].levels["treatment"] - 0.5) < 4 * 0.5 / math.sqrt(N)


def test_fitted_scenario_simulates_cohorts_that_pass_validation(model, reference):
    synthetic = model.simulate(5000, seed=5)
    # 5,000 reference persons keep lifelines' Cox fits inside compare() quick
    first = reference.persons.filter(pl.col("person_id") <= 5000)
    subset = Cohort(first, reference.events.join(first.select("person_id"), on="person_id",
                                                 how="semi"), reference.manifest)
    report = compare(synthetic, subset, figures=False, seed=3)
    assert report.passed, [(c.group, c.name, c.subject, c.metric) for c in report.failures]
    groups = {c.group for c in report.checks if c.verdict == "pass"}
    assert {"survival", "transitions", "hazard ratios"} <= groups


def test_toml_round_trip_simulates_the_same_cohort(model, tmp_path):
    directory = model.save(tmp_path / "model")
    assert sorted(p.name for p in directory.iterdir()) == ["fit.json", "scenario.toml"]
    loaded = load_scenario(directory / "scenario.toml")
    assert loaded.content_hash() == model.to_scenario().content_hash()
    ours = model.simulate(500, seed=2)
    theirs = MarkovSimulator(loaded).simulate(500, seed=2)
    assert ours.persons.equals(theirs.persons) and ours.events.equals(theirs.events)
