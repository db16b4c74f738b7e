"""Invalid scenario files each give their own error naming the file, the field and what is wrong."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import polars as pl
import pytest

from trajectories import MarkovSimulator, ScenarioError, load_scenario
from trajectories.scenario import scenario_from_dict

VALID = {
    "name": "mini",
    "initial_state": "well",
    "states": [{"name": "well"}, {"name": "ill"}, {"name": "dead", "absorbing": True}],
    "transitions": [
        {"from": "well", "to": "ill", "hazard": {"family": "exponential", "rate": 0.001},
         "effects": {"arm": {"treated": -0.3}, "age": 0.02}},
        {"from": "well", "to": "dead", "hazard": {"family": "weibull", "shape": 1.1,
                                                  "scale": 3000}},
        {"from": "ill", "to": "dead", "clock": "reset",
         "hazard": {"family": "gompertz", "shape": 0.001, "rate": 0.0005}},
    ],
    "covariates": {"arm": {"kind": "categorical", "levels": {"control": 0.5, "treated": 0.5}}},
    "sites": [{"name": "A", "share": 0.7}, {"name": "B", "share": 0.3,
                                            "hazard_ratios": {"well->dead": 1.3}}],
    "visits": [{"type": "outpatient", "rates_per_year": {"well": 2, "ill": 6}}],
    "measurements": [{"name": "crp", "mean": {"well": 3, "ill": 20}, "noise_sd": 2}],
    "drugs": [{"name": "statin", "on_entry": ["ill"], "duration_days": 90}],
}


def mutated(edit) -> dict:
    data = copy.deepcopy(VALID)
    edit(data)
    return data


def test_valid_scenario_loads_with_default_age_and_sex():
    scenario = scenario_from_dict(VALID)
    assert scenario.state_names == ["well", "ill", "dead"]
    assert set(scenario.covariates) == {"age", "sex", "arm"}
    assert scenario.covariates["sex"].levels == {"F": 0.5, "M": 0.5}
    assert len(scenario.content_hash()) == 64


def test_content_hash_ignores_layout_but_not_values():
    same = scenario_from_dict(copy.deepcopy(VALID))
    other = scenario_from_dict(mutated(lambda d: d["transitions"][0]["hazard"].update(rate=0.002)))
    assert scenario_from_dict(VALID).content_hash() == same.content_hash()
    assert scenario_from_dict(VALID).content_hash() != other.content_hash()


CASES = [
    ("unknown state in a transition",
     lambda d: d["transitions"][0].update(to="illl"),
     r"transitions\[0\] \(well->illl\): unknown state 'illl' in 'to'; expected one of"),
    ("negative rate",
     lambda d: d["transitions"][0]["hazard"].update(rate=-0.1),
     r"transitions\[0\]\.hazard\.exponential\.rate: Input should be greater than or equal to 0 "
     r"\(got -0\.1\)"),
    ("transition out of an absorbing state",
     lambda d: d["transitions"].append(
         {"from": "dead", "to": "well", "hazard": {"family": "exponential", "rate": 0.1}}),
     r"transitions\[3\] \(dead->well\): 'dead' is absorbing; nothing may leave it"),
    ("site shares do not sum to one",
     lambda d: d["sites"][1].update(share=0.2),
     r"sites' shares must sum to 1, got 0\.9"),
    ("level probabilities do not sum to one",
     lambda d: d["covariates"]["arm"]["levels"].update(treated=0.6),
     r"covariates\.arm\.categorical: .*level probabilities must sum to 1, got 1\.1"),
    ("unknown hazard family",
     lambda d: d["transitions"][1]["hazard"].update(family="weibul"),
     r"transitions\[1\]\.hazard: Input tag 'weibul' found using 'family' does not match"),
    ("missing hazard parameter",
     lambda d: d["transitions"][1]["hazard"].pop("scale"),
     r"transitions\[1\]\.hazard\.weibull\.scale: Field required"),
    ("effect on an unknown covariate",
     lambda d: d["transitions"][0]["effects"].update(bmi=0.1),
     r"transitions\[0\] \(well->ill\): effect on unknown covariate 'bmi'"),
    ("effect on the reference level",
     lambda d: d["transitions"][0]["effects"].update(arm={"control": 0.2}),
     r"effect of 'arm' names level 'control'; expected one of the non-reference levels "
     r"\['treated'\]"),
    ("initial state absorbing",
     lambda d: d.update(initial_state="dead"),
     r"initial_state: 'dead' is not a transient state"),
    ("site hazard ratio on an unknown transition",
     lambda d: d["sites"][1]["hazard_ratios"].update({"ill->well": 2.0}),
     r"sites \(B\): unknown transition 'ill->well'"),
    ("visit rate in an absorbing state",
     lambda d: d["visits"][0]["rates_per_year"].update(dead=1.0),
     r"visits \(outpatient\): 'dead' is not a transient state"),
    ("unknown field (typo)",
     lambda d: d["transitions"][0].update(clok="reset"),
     r"transitions\[0\]\.clok: Extra inputs are not permitted"),
    ("bad clock",
     lambda d: d["transitions"][0].update(clock="backwards"),
     r"transitions\[0\]\.clock: Input should be 'forward' or 'reset'"),
    ("duplicate state",
     lambda d: d["states"].append({"name": "ill"}),
     r"states: 'ill' is declared twice"),
    ("mixed shares and sizes",
     lambda d: d["sites"][1].update(share=None, size=100),
     r"give every site a share, or every site a size"),
    ("piecewise lengths",
     lambda d: d["transitions"][1].update(
         hazard={"family": "piecewise", "breakpoints": [100], "rates": [0.1]}),
     r"needs one more rate than breakpoints"),
    ("data cut-off before enrolment ends",
     lambda d: d.update(calendar={"enrolment_start": "2015-01-01",
                                  "enrolment_end": "2016-01-01", "data_cutoff": "2015-06-01"}),
     r"data_cutoff \(2015-06-01\) falls before enrolment ends"),
]


@pytest.mark.parametrize("label, edit, pattern", CASES, ids=[c[0] for c in CASES])
def test_each_invalid_scenario_gives_its_specific_error(label, edit, pattern):
    with pytest.raises(ScenarioError) as raised:
        scenario_from_dict(mutated(edit), source="bad.toml")
    message = str(raised.value)
    assert message.startswith("invalid scenario bad.toml:"), message
    assert re.search(pattern, message), message


def test_file_errors_name_the_file(tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\nstates = [\n')
    with pytest.raises(ScenarioError, match=r"invalid scenario .*broken\.toml: not valid TOML"):
        load_scenario(broken)
    bad_rate = tmp_path / "bad_rate.toml"
    bad_rate.write_text(
        'name = "x"\ninitial_state = "a"\n[[states]]\nname = "a"\n[[states]]\nname = "b"\n'
        'absorbing = true\n[[transitions]]\nfrom = "a"\nto = "b"\n'
        'hazard = { family = "exponential", rate = -1 }\n'
    )
    with pytest.raises(ScenarioError, match=r"bad_rate\.toml:\n  transitions\[0\]\.hazard"):
        load_scenario(bad_rate)
    with pytest.raises(ScenarioError, match="no scenario file 'no_such_scenario'"):
        load_scenario("no_such_scenario")


def test_the_readme_example_scenario_is_valid():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("A complete example", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    scenario = scenario_from_dict(tomllib.loads(block), source="README.md")
    assert scenario.state_names == ["well", "ill", "dead"]
    assert scenario.concept_map()["measurement:crp"]["unit_source_value"] == "mg/L"
    cohort = MarkovSimulator(scenario).simulate(400, seed=1)
    assert set(cohort.persons["site"].unique()) == {"A", "B"}
    assert cohort.events.filter(pl.col("code") == "drug:statin").height > 0
