"""validation.integrity: a simulated cohort passes every rule; each injected fault fails the
rule that names it, with the exact persons at fault."""

from __future__ import annotations

import polars as pl
import pytest

from trajectories.cohort import Cohort
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator
from validation.integrity import DATA_MODEL_RULES, SHOWN_IDS, check_integrity, failed
from validation.transitions import infer_absorbing_states

SCENARIO = {
    "name": "integrity",
    "initial_state": "stable",
    "states": [{"name": "stable"}, {"name": "progressed"}, {"name": "death", "absorbing": True}],
    "transitions": [
        {"from": "stable", "to": "progressed", "hazard": {"family": "exponential", "rate": 3e-3}},
        {"from": "stable", "to": "death", "hazard": {"family": "exponential", "rate": 1e-3}},
        {"from": "progressed", "to": "death", "hazard": {"family": "exponential", "rate": 4e-3}},
    ],
    "covariates": {"arm": {"kind": "categorical", "levels": {"control": 0.5, "treat": 0.5}}},
    "followup": {"max_days": 1200.0, "loss_to_followup_per_year": 0.1},
    "visits": [
        {"type": "outpatient", "rates_per_year": {"stable": 4.0, "progressed": 8.0}},
        {"type": "inpatient", "rates_per_year": {"progressed": 2.0}, "mean_duration_days": 6.0},
    ],
    "measurements": [{"name": "ldh", "mean": {"stable": 200.0, "progressed": 300.0},
                      "noise_sd": 20.0}],
    "drugs": [{"name": "drug_a", "on_entry": ["stable"], "when": {"arm": ["treat"]},
               "duration_days": 400.0, "duration_cv": 0.5}],
}
EXTRA_NAMES = ["single_initial_state", "repeated_state", "age_at_index", "end_after_followup",
               "after_absorbing", "path_after_absorbing", "exit_without_absorbing_state",
               "absorbing_without_exit"]
FAULTY = 7  # persons given each fault: more than the SHOWN_IDS listed


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return MarkovSimulator(scenario_from_dict(SCENARIO)).simulate(400, seed=21)


def _by_name(results):
    return {r.name: r for r in results}


def _rebuild(cohort: Cohort, persons=None, events=None) -> Cohort:
    events = cohort.events if events is None else events
    return Cohort(cohort.persons if persons is None else persons, events, cohort.manifest,
                  check=False)


def _add_events(cohort: Cohort, extra: pl.DataFrame) -> Cohort:
    """``extra`` (person_id, time, code) appended after each person's rows at the same time."""
    extra = extra.select(
        "person_id", "time", pl.lit(None, dtype=pl.Float64).alias("end_time"), "code",
        pl.lit(None, dtype=pl.Float64).alias("value"),
    )
    events = pl.concat([cohort.events, extra]).sort("person_id", "time", maintain_order=True)
    return _rebuild(cohort, events=events)


def _pick(frame: pl.DataFrame, n: int = FAULTY) -> list[int]:
    ids = frame.get_column("person_id").unique().sort()
    assert ids.len() >= n
    return ids.head(n).to_list()


def _dead(cohort: Cohort) -> list[int]:
    return _pick(cohort.persons.filter(pl.col("exit") == "death"))


def _assert_fails(results, name: str, ids: list[int]) -> None:
    result = _by_name(results)[name]
    assert not result.passed, f"{name} should fail"
    assert result.n_persons == len(ids)
    assert result.first_person_ids == ids[:SHOWN_IDS]


def test_a_simulated_cohort_passes_every_rule(cohort):
    results = check_integrity(cohort)
    names = [r.name for r in results]
    assert names == list(DATA_MODEL_RULES) + EXTRA_NAMES
    assert failed(results) == []
    assert all(r.n_persons == 0 and r.first_person_ids == [] for r in results)
    assert all(r.description and r.rule for r in results)
    assert infer_absorbing_states(cohort) == {"death"}
    row = results[0].to_dict()
    assert set(row) == {"name", "description", "passed", "n_persons", "first_person_ids", "rule"}


def test_time_reversal_fails_time_order(cohort):
    events = cohort.events.with_row_index("row")
    last = events.group_by("person_id").agg(
        pl.col("row").max(), pl.col("time").sort().tail(2).first().alias("previous")
    )
    chosen = last.filter(pl.col("previous") > 1).sort("person_id").head(FAULTY)
    ids = chosen["person_id"].to_list()
    events = events.join(chosen.select("row", "previous"), on="row", how="left").with_columns(
        pl.when(pl.col("previous").is_not_null()).then(pl.col("previous") - 0.5)
        .otherwise(pl.col("time")).alias("time")
    ).drop("row", "previous")
    results = check_integrity(_rebuild(cohort, events=events))
    _assert_fails(results, "time_order", ids)


def test_event_after_death_fails_after_death_and_after_absorbing(cohort):
    ids = _dead(cohort)
    extra = cohort.persons.filter(pl.col("person_id").is_in(ids)).select(
        "person_id", (pl.col("followup_end") + 10).alias("time"),
        pl.lit("visit:outpatient").alias("code"),
    )
    results = check_integrity(_add_events(cohort, extra))
    _assert_fails(results, "after_death", ids)
    _assert_fails(results, "after_absorbing", ids)
    assert _by_name(results)["path_after_absorbing"].passed


def test_birth_after_index_fails_both_date_rules(cohort):
    ids = _pick(cohort.persons.filter(pl.col("person_id") % 3 == 0))
    persons = cohort.persons.with_columns(
        pl.when(pl.col("person_id").is_in(ids))
        .then(pl.col("index_date") + pl.duration(days=10))
        .otherwise(pl.col("birth_date")).alias("birth_date")
    )
    results = check_integrity(_rebuild(cohort, persons=persons))
    _assert_fails(results, "birth_after_index", ids)
    _assert_fails(results, "age_at_index", ids)


def test_age_150_fails_age_at_index_only(cohort):
    ids = _pick(cohort.persons.filter(pl.col("person_id") % 5 == 1))
    persons = cohort.persons.with_columns(
        pl.when(pl.col("person_id").is_in(ids))
        .then(pl.col("index_date") - pl.duration(days=round(150 * 365.25)))
        .otherwise(pl.col("birth_date")).alias("birth_date")
    )
    results = check_integrity(_rebuild(cohort, persons=persons))
    _assert_fails(results, "age_at_index", ids)
    assert [r.name for r in failed(results)] == ["age_at_index"]
    # The range is the caller's: 150 passes a wide enough one, and 60-ish fails a narrow one.
    assert _by_name(check_integrity(_rebuild(cohort, persons=persons), age_range=(0, 151)))[
        "age_at_index"].passed
    ages = (cohort.persons["index_date"] - cohort.persons["birth_date"]).dt.total_days() / 365.25
    narrow = _by_name(check_integrity(cohort, age_range=(0, 60)))["age_at_index"]
    assert narrow.n_persons == int((ages > 60).sum())


def test_double_initial_state_fails_single_initial_state(cohort):
    ids = _pick(cohort.persons)
    extra = pl.DataFrame({"person_id": ids, "time": [0.0] * len(ids),
                          "code": ["state:progressed"] * len(ids)})
    results = check_integrity(_add_events(cohort, extra))
    _assert_fails(results, "single_initial_state", ids)
    assert _by_name(results)["initial_state_time"].passed


def test_state_after_absorbing_fails_path_after_absorbing(cohort):
    ids = _dead(cohort)
    # A state event at the very time of death, after it: no event is later in time, but the
    # path goes on after the absorbing state.
    extra = cohort.persons.filter(pl.col("person_id").is_in(ids)).select(
        "person_id", pl.col("followup_end").alias("time"), pl.lit("state:stable").alias("code")
    )
    faulty = _add_events(cohort, extra)
    assert infer_absorbing_states(faulty) == {"death"}
    results = check_integrity(faulty)
    _assert_fails(results, "path_after_absorbing", ids)
    _assert_fails(results, "exit_without_absorbing_state", ids)
    assert _by_name(results)["after_absorbing"].passed
    assert _by_name(results)["after_death"].passed


def test_death_without_a_death_state_fails_exit_without_absorbing_state(cohort):
    ids = _dead(cohort)
    events = cohort.events.filter(
        ~(pl.col("person_id").is_in(ids) & (pl.col("code") == "state:death"))
    )
    results = check_integrity(_rebuild(cohort, events=events))
    _assert_fails(results, "exit_without_absorbing_state", ids)
    assert [r.name for r in failed(results)] == ["exit_without_absorbing_state"]


def test_absorbed_but_censored_fails_absorbing_without_exit(cohort):
    ids = _dead(cohort)
    persons = cohort.persons.with_columns(
        pl.when(pl.col("person_id").is_in(ids)).then(pl.lit("administrative_censoring"))
        .otherwise(pl.col("exit")).alias("exit")
    )
    results = check_integrity(_rebuild(cohort, persons=persons))
    _assert_fails(results, "absorbing_without_exit", ids)


def test_end_after_followup_and_repeated_state(cohort):
    drug = cohort.events.filter(pl.col("code") == "drug:drug_a")
    ids = _pick(drug)
    events = cohort.events.join(cohort.persons.select("person_id", "followup_end"),
                                on="person_id").with_columns(
        pl.when(pl.col("person_id").is_in(ids) & (pl.col("code") == "drug:drug_a"))
        .then(pl.col("followup_end") + 5).otherwise(pl.col("end_time")).alias("end_time")
    ).drop("followup_end")
    _assert_fails(check_integrity(_rebuild(cohort, events=events)), "end_after_followup", ids)

    spells = cohort.state_spells().filter((pl.col("state") == "stable")
                                          & (pl.col("stop") > 2))
    repeat_ids = _pick(spells)
    extra = spells.filter(pl.col("person_id").is_in(repeat_ids)).select(
        "person_id", pl.lit(1.0).alias("time"), pl.lit("state:stable").alias("code")
    )
    _assert_fails(check_integrity(_add_events(cohort, extra)), "repeated_state", repeat_ids)


def test_every_fault_at_once_is_reported(cohort):
    dead = _dead(cohort)
    extra = cohort.persons.filter(pl.col("person_id").is_in(dead)).select(
        "person_id", (pl.col("followup_end") + 1).alias("time"),
        pl.lit("visit:outpatient").alias("code"),
    )
    faulty = _add_events(cohort, extra)
    young = _pick(cohort.persons.filter(~pl.col("person_id").is_in(dead)))
    persons = faulty.persons.with_columns(
        pl.when(pl.col("person_id").is_in(young)).then(pl.col("index_date") + pl.duration(days=1))
        .otherwise(pl.col("birth_date")).alias("birth_date"),
        pl.when(pl.col("person_id") == young[0]).then(pl.lit("X")).otherwise(pl.col("sex"))
        .alias("sex"),
    )
    results = check_integrity(_rebuild(faulty, persons=persons))
    assert {r.name for r in failed(results)} == {
        "after_death", "after_absorbing", "birth_after_index", "age_at_index", "sex_value"
    }
    _assert_fails(results, "sex_value", young[:1])


def test_given_absorbing_states_are_used(cohort):
    # Calling "progressed" absorbing: those who left it break the path rule, those censored in
    # it have an absorbing state without an absorbing exit.
    spells = cohort.state_spells().filter(pl.col("state") == "progressed").join(
        cohort.persons.select("person_id", "exit"), on="person_id")
    moved_on = spells.filter(pl.col("next_state").is_not_null())["person_id"].to_list()
    censored = spells.filter(pl.col("exit") != "death")["person_id"].to_list()
    assert moved_on and censored
    results = check_integrity(cohort, absorbing_states={"death", "progressed"})
    _assert_fails(results, "path_after_absorbing", moved_on)
    _assert_fails(results, "absorbing_without_exit", censored)
    assert "progressed" in _by_name(results)["path_after_absorbing"].rule


def test_death_recorded_before_followup_end_fails_exit_without_absorbing_state(cohort):
    ids = _dead(cohort)
    early = pl.col("person_id").is_in(ids) & (pl.col("code") == "state:death")
    events = cohort.events.with_columns(
        pl.when(early).then(pl.col("time") - 1e-6).otherwise(pl.col("time")).alias("time")
    )
    results = check_integrity(_rebuild(cohort, events=events))
    _assert_fails(results, "exit_without_absorbing_state", ids)
