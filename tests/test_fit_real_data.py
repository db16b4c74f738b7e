"""Real data: models fitted to the Stanford heart transplant and GBSG2 cohorts (shipped with
lifelines), simulated at ten times their size, pass validation against them, and the
transplant and hormone-therapy hazard ratios land in the reference intervals."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from lifelines.datasets import load_gbsg2, load_stanford_heart_transplants

from trajectories.cohort import Cohort
from trajectories.fit import MultiStateModel
from trajectories.fit.references import (
    gbsg2,
    stanford_heart,
    stanford_mstate,
    transplant_hazard_ratio,
)
from validation import compare
from validation.endpoints import Endpoint, endpoint_times
from validation.survival import cox_hazard_ratios


@pytest.fixture(scope="module")
def stanford() -> Cohort:
    return stanford_heart()


@pytest.fixture(scope="module")
def stanford_model(stanford: Cohort) -> MultiStateModel:
    return MultiStateModel().fit(stanford)


@pytest.fixture(scope="module")
def stanford_synthetic(stanford_model: MultiStateModel) -> Cohort:
    return stanford_model.simulate(10 * 103, seed=1)


def test_stanford_loader_keeps_every_path():
    raw = load_stanford_heart_transplants()
    cohort = stanford_heart()
    moves = cohort.state_spells().group_by("state", "next_state").len()
    count = {(r["state"], r["next_state"]): r["len"] for r in moves.iter_rows(named=True)}
    transplanted = int((raw["transplant"] == 1).sum())
    assert cohort.n_persons == raw["id"].nunique() == 103
    assert count[("waiting", "transplanted")] == transplanted == 69
    assert count[("transplanted", "dead")] == int(raw.loc[raw["transplant"] == 1, "event"].sum())
    assert count[("waiting", "dead")] == int(raw.loc[raw["transplant"] == 0, "event"].sum())
    # mstate rows: two per waiting interval (to transplant, to death), one per transplanted one
    assert stanford_mstate().height == 2 * (len(raw) - transplanted) + transplanted
    assert cohort.persons["age"].min() >= 8.0  # lifelines stores age - 48


def test_stanford_fit_finds_the_three_transitions(stanford_model):
    assert [t.key for t in stanford_model.transitions_] == [
        "waiting->dead", "waiting->transplanted", "transplanted->dead"]
    assert stanford_model.initial_ == {"waiting": 1.0}
    dead = next(s for s in stanford_model.states_ if s["name"] == "dead")
    assert dead["absorbing"] and dead["death"]
    for transition in stanford_model.transitions_:
        assert transition.fit.converged
        assert transition.fit.beta_names == ["age", "year", "surgery"]


def test_stanford_synthetic_passes_validation(stanford, stanford_synthetic):
    report = compare(stanford_synthetic, stanford, figures=False)
    assert report.passed, [(c.group, c.name, c.subject, c.metric) for c in report.failures]
    judged = {(c.group, c.subject) for c in report.checks if c.verdict == "pass"}
    assert ("survival", "overall_survival") in judged
    assert ("transitions", "sojourn in transplanted") in judged


def test_stanford_transplant_hazard_ratio_in_reference_interval(stanford, stanford_synthetic):
    reference = transplant_hazard_ratio(stanford)
    synthetic = transplant_hazard_ratio(stanford_synthetic)
    assert reference["lower"] <= synthetic["hazard_ratio"] <= reference["upper"]
    # ten times the persons: the synthetic interval is about sqrt(10) times narrower
    assert synthetic["std_error"] < reference["std_error"] / 2


@pytest.fixture(scope="module")
def breast() -> Cohort:
    return gbsg2()


@pytest.fixture(scope="module")
def breast_model(breast: Cohort) -> MultiStateModel:
    return MultiStateModel().fit(breast)


RFS = Endpoint(name="recurrence_free_survival", events=["recurrence_or_death"])


def test_gbsg2_one_transition_with_hormone_therapy(breast, breast_model):
    assert breast.n_persons == len(load_gbsg2()) == 686
    (transition,) = breast_model.transitions_
    assert transition.key == "disease_free->recurrence_or_death"
    assert transition.fit.n_events == int(load_gbsg2()["cens"].sum()) == 299
    # the model's own hormone-therapy log HR agrees with a Cox model of the reference
    cox = cox_hazard_ratios(endpoint_times(breast, RFS), "time", "event",
                            ["horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec",
                             "estrec"])
    row = cox.filter(pl.col("covariate") == "horTh[yes]").row(0, named=True)
    log_hr, se = transition.fit.log_hazard_ratios()["horTh[yes]"]
    assert np.log(row["lower"]) <= log_hr <= np.log(row["upper"])
    assert abs(log_hr - row["log_hr"]) < 2 * se


def test_gbsg2_synthetic_passes_validation_and_keeps_the_hormone_effect(breast, breast_model):
    synthetic = breast_model.simulate(10 * 686, seed=1)
    report = compare(synthetic, breast, endpoints=[RFS], figures=False)
    assert report.passed, [(c.group, c.name, c.subject, c.metric) for c in report.failures]
    check = next(c for c in report.checks if c.name == "log HR horTh[yes]")
    low, high = check.details["reference_interval"]
    assert low <= check.details["hazard_ratio_synthetic"] <= high
    assert check.details["hazard_ratio_synthetic"] < 1  # therapy protects, as in the trial
