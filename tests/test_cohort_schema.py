"""The cohort data model: schema and temporal rules checked on build, read and write."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import WELL_ILL_DEAD, named

from trajectories import Cohort, CohortSchemaError, MarkovSimulator
from trajectories.scenario import scenario_from_dict

SCENARIO = named(WELL_ILL_DEAD, "schema_test")


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return MarkovSimulator(scenario_from_dict(SCENARIO)).simulate(300, seed=11)


def rebuild(cohort: Cohort, persons=None, events=None) -> Cohort:
    return Cohort(
        cohort.persons if persons is None else persons,
        cohort.events if events is None else events,
        cohort.manifest,
    )


def first_dead(cohort: Cohort) -> int:
    return cohort.persons.filter(pl.col("exit") == "death")["person_id"][0]


def test_simulated_cohort_follows_the_model(cohort: Cohort):
    assert cohort.persons["person_id"].to_list() == list(range(1, 301))
    states = cohort.events.filter(pl.col("code").str.starts_with("state:"))
    initial = states.group_by("person_id").agg(pl.col("code").first(), pl.col("time").first())
    assert initial["code"].unique().to_list() == ["state:well"]
    assert initial["time"].unique().to_list() == [0.0]
    dead = cohort.persons.filter(pl.col("exit") == "death")
    death_events = states.filter(pl.col("code") == "state:dead")
    assert death_events.height == dead.height
    merged = death_events.join(dead, on="person_id")
    assert (merged["time"] == merged["followup_end"]).all()


def test_missing_column_is_named(cohort: Cohort):
    with pytest.raises(CohortSchemaError, match=r"persons: missing column 'followup_end'"):
        rebuild(cohort, persons=cohort.persons.drop("followup_end"))


def test_wrong_type_is_named(cohort: Cohort):
    persons = cohort.persons.with_columns(pl.col("person_id").cast(pl.Int32))
    with pytest.raises(CohortSchemaError, match=r"persons\.person_id: expected type Int64, got "
                                                r"Int32"):
        rebuild(cohort, persons=persons)
    events = cohort.events.with_columns(pl.col("time").cast(pl.String))
    with pytest.raises(CohortSchemaError, match=r"events\.time: expected type Float64, got String"):
        rebuild(cohort, events=events)


def test_time_going_backwards_names_the_person(cohort: Cohort):
    target = cohort.events.filter(pl.col("code") == "visit:outpatient")["person_id"][0]
    row = cohort.events.with_row_index().filter(
        (pl.col("person_id") == target) & (pl.col("code") == "visit:outpatient")
    )["index"][0]
    events = cohort.events.with_columns(
        pl.when(pl.int_range(pl.len()) == row + 1).then(0.0).otherwise("time").alias("time")
    )
    with pytest.raises(CohortSchemaError, match=rf"goes backwards within a person.*1 person\(s\): "
                                                rf"{target}$"):
        rebuild(cohort, events=events)


def test_event_after_death_names_the_person(cohort: Cohort):
    dead = first_dead(cohort)
    end = cohort.persons.filter(pl.col("person_id") == dead)["followup_end"][0]
    extra = pl.DataFrame({"person_id": [dead], "time": [end + 5.0], "end_time": [None],
                          "code": ["visit:outpatient"], "value": [None]},
                         schema=cohort.events.schema)
    events = pl.concat([cohort.events, extra]).sort("person_id", "time", maintain_order=True)
    with pytest.raises(CohortSchemaError, match=rf"event after death; 1 person\(s\): {dead}$"):
        rebuild(cohort, events=events)


def test_other_rules(cohort: Cohort):
    persons = cohort.persons.with_columns(
        pl.when(pl.col("person_id") == 7).then(pl.lit("deceased")).otherwise("exit").alias("exit")
    )
    with pytest.raises(CohortSchemaError, match=r"persons\.exit: values outside.*: 7$"):
        rebuild(cohort, persons=persons)
    events = cohort.events.with_columns(
        pl.when(pl.col("person_id") == 3).then(pl.lit("relapse")).otherwise("code").alias("code")
    )
    with pytest.raises(CohortSchemaError, match=r"events\.code: codes must be namespaced.*: 3$"):
        rebuild(cohort, events=events)
    duplicated = pl.concat([cohort.persons, cohort.persons.head(2)])
    with pytest.raises(CohortSchemaError, match=r"duplicated ids; 2 person\(s\): 1, 2$"):
        rebuild(cohort, persons=duplicated)


def test_unchecked_cohort_keeps_column_checks(cohort: Cohort):
    events = cohort.events.reverse()
    assert Cohort(cohort.persons, events, cohort.manifest, check=False).events.height == (
        cohort.events.height
    )
    with pytest.raises(CohortSchemaError, match="missing column 'code'"):
        Cohort(cohort.persons, events.drop("code"), cohort.manifest, check=False)


def test_write_read_round_trip_and_refusals(cohort: Cohort, tmp_path):
    target = cohort.write(tmp_path / "c")
    back = Cohort.read(target)
    assert back.persons.equals(cohort.persons)
    assert back.events.equals(cohort.events)
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["seed"] == 11 and manifest["n_persons"] == 300
    assert manifest["scenario_name"] == "schema_test"
    assert manifest["generator"] == "MarkovSimulator"
    assert back.fingerprint() == cohort.fingerprint()
    with pytest.raises(CohortSchemaError, match="directory is not empty"):
        cohort.write(target)
    cohort.write(target, overwrite=True)
    with pytest.raises(CohortSchemaError, match="not a cohort directory, persons.parquet missing"):
        Cohort.read(tmp_path / "nothing")


def test_read_reports_a_broken_file_with_its_directory(cohort: Cohort, tmp_path):
    target = cohort.write(tmp_path / "c")
    events = cohort.events.with_columns(pl.col("time").reverse())
    events.write_parquet(target / "events.parquet")
    with pytest.raises(CohortSchemaError, match=rf"^{target}: events\.(end_)?time"):
        Cohort.read(target)


def test_state_spells(cohort: Cohort):
    spells = cohort.state_spells()
    assert spells.height == cohort.events.filter(pl.col("code").str.starts_with("state:")).height
    last = spells.group_by("person_id").agg(pl.col("stop").last()).join(
        cohort.persons.select("person_id", "followup_end"), on="person_id"
    )
    assert (last["stop"] == last["followup_end"]).all()
    assert (spells["stop"] >= spells["start"]).all()
    moved = spells.filter(pl.col("next_state").is_not_null())
    assert set(zip(moved["state"], moved["next_state"], strict=True)) <= {
        ("well", "ill"), ("well", "dead"), ("ill", "dead")
    }


def test_an_unchecked_broken_cohort_is_not_saved(cohort: Cohort, tmp_path):
    broken = Cohort(cohort.persons, cohort.events.reverse(), cohort.manifest, check=False)
    with pytest.raises(CohortSchemaError, match="events"):
        broken.write(tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
