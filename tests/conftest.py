"""Shared fixtures: scenarios built from small dicts, and a one-call simulator."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from trajectories.cohort import Cohort
from trajectories.scenario import Scenario, scenario_from_dict
from trajectories.simulate import MarkovSimulator

NO_CENSORING_DAYS = 1.0e7
"""Follow-up so long that no history with the hazards used in tests is still open at its end."""

FULL_SCENARIO: dict[str, Any] = {
    "name": "full",
    "description": "every feature of the schema at once: sites, frailty, processes, drugs",
    "initial_state": "stable",
    "states": [
        {"name": "stable"},
        {"name": "progressed"},
        {"name": "death", "absorbing": True},
    ],
    "transitions": [
        {
            "from": "stable",
            "to": "progressed",
            "hazard": {"family": "weibull", "shape": 1.2, "scale": 300.0},
            "effects": {"arm": {"treatment": -0.5}, "age": 0.01},
        },
        {"from": "stable", "to": "death", "hazard": {"family": "exponential", "rate": 3e-4}},
        {
            "from": "progressed",
            "to": "death",
            "clock": "reset",
            "hazard": {"family": "lognormal", "mu": 5.5, "sigma": 0.9},
        },
    ],
    "covariates": {
        "arm": {"kind": "categorical", "levels": {"control": 0.5, "treatment": 0.5}},
    },
    "sites": [
        {"name": "A", "share": 0.6, "case_mix": {"age": 5.0}},
        {
            "name": "B",
            "share": 0.4,
            "followup_days": 1000.0,
            "loss_to_followup_per_year": 0.1,
            "hazard_ratios": {"stable->death": 1.5},
            "frailty": {"stable->progressed": {"variance": 0.5}},
        },
    ],
    "visits": [
        {"type": "outpatient", "rates_per_year": {"stable": 6.0, "progressed": 12.0}},
        {"type": "inpatient", "rates_per_year": {"progressed": 2.0}, "mean_duration_days": 5.0},
    ],
    "measurements": [
        {
            "name": "ldh",
            "mean": {"stable": 200.0, "progressed": 300.0},
            "trend_per_year": {"progressed": 50.0},
            "noise_sd": 20.0,
            "person_sd": 10.0,
            "min": 0.0,
            "decimals": 0,
        }
    ],
    "drugs": [
        {
            "name": "pembrolizumab",
            "on_entry": ["stable"],
            "when": {"arm": ["treatment"]},
            "duration_days": 365.0,
            "duration_cv": 0.5,
        }
    ],
}


def build_scenario(
    transitions: list[dict[str, Any]],
    states: list[dict[str, Any]] | None = None,
    initial_state: str | dict[str, float] = "a",
    **extra: Any,
) -> Scenario:
    """A validated scenario from transitions (``from``/``to``/``hazard``...) and optional parts.

    States default to those named by the transitions, absorbing when nothing leaves them;
    follow-up defaults to practically unlimited with no loss, so closed forms apply uncensored.
    """
    if states is None:
        names = list(dict.fromkeys(n for t in transitions for n in (t["from"], t["to"])))
        sources = {t["from"] for t in transitions}
        states = [{"name": n, "absorbing": n not in sources} for n in names]
    data: dict[str, Any] = {
        "name": extra.pop("name", "test"),
        "states": states,
        "initial_state": initial_state,
        "transitions": transitions,
        "followup": {"max_days": NO_CENSORING_DAYS, "loss_to_followup_per_year": 0.0},
    }
    data.update(extra)
    return scenario_from_dict(data, source="<test>")


@pytest.fixture
def make_scenario() -> Callable[..., Scenario]:
    """Factory: ``make_scenario(transitions, states=None, initial_state="a", **extra)``."""
    return build_scenario


@pytest.fixture
def simulate() -> Callable[..., Cohort]:
    """Factory: ``simulate(scenario, n, seed, block_size=...)`` -> Cohort."""

    def run(scenario: Scenario, n: int, seed: int, block_size: int = 50_000) -> Cohort:
        return MarkovSimulator(scenario, block_size=block_size).simulate(n, seed)

    return run


@pytest.fixture
def full_scenario_dict() -> dict[str, Any]:
    """A fresh deep copy of a scenario using every feature (tests may edit it)."""
    return copy.deepcopy(FULL_SCENARIO)


@pytest.fixture
def full_scenario(full_scenario_dict: dict[str, Any]) -> Scenario:
    """The every-feature scenario, validated."""
    return scenario_from_dict(full_scenario_dict, source="<full>")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models gain nothing from threads, and the suite runs two workers on two cores:
    one torch thread each avoids oversubscription (restored afterwards)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


OMOP_ONCOLOGY: dict[str, Any] = {
    "name": "omop_oncology",
    "initial_state": "stable",
    "states": [{"name": "stable"}, {"name": "progressed"}, {"name": "death", "absorbing": True}],
    "transitions": [
        {"from": "stable", "to": "progressed",
         "hazard": {"family": "weibull", "shape": 1.2, "scale": 300.0}},
        {"from": "stable", "to": "death", "hazard": {"family": "exponential", "rate": 3e-4}},
        {"from": "progressed", "to": "death", "clock": "reset",
         "hazard": {"family": "lognormal", "mu": 5.5, "sigma": 0.9}},
    ],
    "covariates": {"arm": {"kind": "categorical",
                           "levels": {"control": 0.5, "treatment": 0.5}}},
    "sites": [{"name": "A", "share": 0.6}, {"name": "B", "share": 0.4, "followup_days": 1000.0,
                                            "loss_to_followup_per_year": 0.1}],
    "visits": [
        {"type": "outpatient", "rates_per_year": {"stable": 6.0, "progressed": 12.0}},
        {"type": "inpatient", "rates_per_year": {"progressed": 2.0}, "mean_duration_days": 5.0},
        {"type": "telemonitoring", "rates_per_year": {"stable": 1.0}},
        {"type": "infusion", "rates_per_year": {"progressed": 3.0}, "mean_duration_days": 0.2},
    ],
    "measurements": [
        {"name": "ldh", "unit": "U/L", "visit_types": ["outpatient", "inpatient"],
         "mean": {"stable": 200.0, "progressed": 300.0}, "noise_sd": 20.0, "min": 0.0,
         "decimals": 0},
        {"name": "ecog", "visit_types": ["outpatient"], "mean": {"stable": 1.0, "progressed": 2.0},
         "noise_sd": 0.5, "min": 0.0, "max": 4.0, "decimals": 0},
    ],
    "drugs": [{"name": "pembrolizumab", "on_entry": ["stable"], "when": {"arm": ["treatment"]},
               "duration_days": 365.0, "duration_cv": 0.5}],
    "concepts": {
        "measurement:ldh": {"concept_id": 3016436, "unit_concept_id": 8645},
        "measurement:ecog": {"domain": "observation", "concept_id": 4172738},
        "state:progressed": {"concept_id": 4163261, "source_value": "NSCLC progression"},
        "drug:pembrolizumab": {"concept_id": 45775965, "type_concept_id": 32838},
        "visit:infusion": {"domain": "procedure", "concept_id": 4273629},
    },
}
"""The oncology scenario of the OMOP export and import tests: every domain, concepts mapped
(LDH, ECOG as an observation, progression, pembrolizumab, infusion as a procedure)."""


WELL_ILL_DEAD: dict[str, Any] = {
    "name": "well_ill_dead",
    "initial_state": "well",
    "states": [{"name": "well"}, {"name": "ill"}, {"name": "dead", "absorbing": True}],
    "transitions": [
        {"from": "well", "to": "ill", "hazard": {"family": "exponential", "rate": 0.002}},
        {"from": "well", "to": "dead", "hazard": {"family": "exponential", "rate": 0.001}},
        {"from": "ill", "to": "dead", "hazard": {"family": "exponential", "rate": 0.004}},
    ],
    "visits": [{"type": "outpatient", "rates_per_year": {"well": 2, "ill": 6}}],
    "followup": {"max_days": 1000},
}
"""A small illness-death scenario with visits, for data-model tests."""


def named(scenario: dict[str, Any], name: str) -> dict[str, Any]:
    """A deep copy of ``scenario`` named ``name`` (name first, as written by hand)."""
    return {"name": name, **{k: v for k, v in copy.deepcopy(scenario).items() if k != "name"}}
