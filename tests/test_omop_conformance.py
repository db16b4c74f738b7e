"""OMOP conformance checks: an export passes them all; each injected fault fails exactly the
checks it should, with the right count."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from conftest import OMOP_ONCOLOGY, named

from trajectories.io.omop import (
    EXPORT_TABLES,
    OmopError,
    check_omop_duckdb,
    check_omop_parquet,
    failures,
    write_duckdb,
    write_parquet,
)
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator

# The OMOP oncology scenario with two equal sites, two visit types, LDH only, no concepts.
SCENARIO = named(OMOP_ONCOLOGY, "omop_conformance_test")
del SCENARIO["concepts"]
SCENARIO.update({
    "sites": [{"name": "A", "share": 0.5}, {"name": "B", "share": 0.5}],
    "visits": [
        {"type": "outpatient", "rates_per_year": {"stable": 6.0, "progressed": 12.0}},
        {"type": "inpatient", "rates_per_year": {"progressed": 2.0}, "mean_duration_days": 5.0},
    ],
    "measurements": [{"name": "ldh", "unit": "U/L", "mean": {"stable": 200.0, "progressed": 300.0},
                      "noise_sd": 20.0, "min": 0.0, "decimals": 0}],
})

DQD_STRUCTURE = {"cdmTable", "cdmField", "cdmDatatype", "isRequired", "isPrimaryKey",
                 "isForeignKey"}
TEMPORAL = {"plausibleStartBeforeEnd", "plausibleAfterBirth", "plausibleBeforeDeath",
            "noEventAfterDeath", "withinObservationPeriod", "withinVisitDates",
            "measurePersonCompleteness", "measureObservationPeriodOverlap",
            "deathOncePerPerson", "plausibleAge", "plausibleValueLow", "plausibleValueHigh",
            "plausibleTemporalAfter", "conceptIdNotNull", "unmappedWithoutSourceValue",
            "cdmFieldOrder", "varcharLength"}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    scenario = scenario_from_dict(SCENARIO, source="<conformance test>")
    cohort = MarkovSimulator(scenario).simulate(1200, seed=11)
    root = tmp_path_factory.mktemp("conformance")
    write_duckdb(cohort, root / "cdm.duckdb", batch_size=500)
    write_parquet(cohort, root / "parquet", batch_size=500)
    return root


@pytest.fixture
def faulty(export, tmp_path):
    """A fresh copy of the export to damage, and a function running SQL on it."""
    path = tmp_path / "faulty.duckdb"
    shutil.copy(export / "cdm.duckdb", path)

    def run(*statements: str):
        with duckdb.connect(str(path)) as con:
            rows = [con.execute(sql).fetchall() for sql in statements]
        return rows[-1]

    return path, run


def failed(path: Path, thresholds: str = "strict") -> dict[tuple, int]:
    return {(r.check, r.table, r.field): r.failing
            for r in failures(check_omop_duckdb(path, thresholds=thresholds))}


def test_export_passes_every_check_in_duckdb_and_parquet(export):
    results = check_omop_duckdb(export / "cdm.duckdb")
    assert failures(results) == []
    names = {r.check for r in results}
    assert names == DQD_STRUCTURE | TEMPORAL
    structural = [r for r in results if r.check == "cdmField"]
    assert len(structural) == 175  # every column of the 12 tables, present
    visits = next(r for r in results if r.check == "withinVisitDates"
                  and r.table == "measurement")
    assert visits.total > 10_000 and visits.failing == 0 and visits.passed
    parquet = check_omop_parquet(export / "parquet")
    assert failures(parquet) == []
    assert [(r.check, r.table, r.field, r.failing, r.total) for r in parquet] == [
        (r.check, r.table, r.field, r.failing, r.total) for r in results]


def test_event_after_death_fails_with_the_right_counts(faulty):
    path, run = faulty
    # a dead person's measurement taken at a visit ending near death, moved one day after
    # death: still within DQD's 60-day grace and within a week of its visit
    person, measurement, gap = run(
        "SELECT m.person_id, m.measurement_id, d.death_date - v.visit_end_date AS gap "
        "FROM measurement m JOIN visit_occurrence v USING (visit_occurrence_id) "
        "JOIN death d ON d.person_id = m.person_id ORDER BY gap, m.measurement_id LIMIT 1")[0]
    assert gap <= 6
    run(f"UPDATE measurement SET measurement_date = (SELECT death_date + 1 FROM death "
        f"WHERE person_id = {person}) WHERE measurement_id = {measurement}")
    assert failed(path) == {
        ("noEventAfterDeath", "measurement", "measurement_date"): 1,
        ("withinObservationPeriod", "measurement", "measurement_date"): 1,
    }
    # three months after death: also DQD plausibleBeforeDeath and withinVisitDates
    run(f"UPDATE measurement SET measurement_date = (SELECT death_date + 90 FROM death "
        f"WHERE person_id = {person}) WHERE measurement_id = {measurement}")
    assert failed(path) == {
        ("noEventAfterDeath", "measurement", "measurement_date"): 1,
        ("withinObservationPeriod", "measurement", "measurement_date"): 1,
        ("plausibleBeforeDeath", "measurement", "measurement_date"): 1,
        ("withinVisitDates", "measurement", "measurement_date"): 1,
    }


def test_end_before_start_fails_strict_but_passes_dqd_threshold(faulty):
    path, run = faulty
    total = run(
        "UPDATE drug_exposure SET drug_exposure_end_date = drug_exposure_start_date - 1 "
        "WHERE drug_exposure_id IN (1, 2)",
        "SELECT count(*) FROM drug_exposure")[0][0]
    assert failed(path) == {
        ("plausibleStartBeforeEnd", "drug_exposure", "drug_exposure_start_date"): 2}
    assert 100 * 2 / total < 1.0  # under DQD's 1% threshold for this check
    assert failed(path, thresholds="dqd") == {}


def test_dangling_visit_id_fails_the_foreign_key(faulty):
    path, run = faulty
    run("UPDATE condition_occurrence SET visit_occurrence_id = "
        "(SELECT max(visit_occurrence_id) + 1000 FROM visit_occurrence) "
        "WHERE condition_occurrence_id = 3")
    assert failed(path) == {("isForeignKey", "condition_occurrence", "visit_occurrence_id"): 1}
    assert failed(path, thresholds="dqd") == {
        ("isForeignKey", "condition_occurrence", "visit_occurrence_id"): 1}


def test_two_deaths_for_one_person_fail(faulty):
    path, run = faulty
    run("INSERT INTO death SELECT * FROM death ORDER BY person_id LIMIT 1",
        "INSERT INTO death SELECT * FROM death ORDER BY person_id DESC LIMIT 1")
    assert failed(path) == {("deathOncePerPerson", "death", "person_id"): 2}


def test_birth_after_events_and_implausible_age_fail(faulty):
    path, run = faulty
    # person 1 born the day after entering observation; person 2 born in 1880
    run("UPDATE person SET birth_datetime = NULL, year_of_birth = 1880, month_of_birth = 1, "
        "day_of_birth = 1 WHERE person_id = 2")
    index = run("SELECT observation_period_start_date + 1 FROM observation_period "
                "WHERE person_id = 1")[0][0]
    run(f"UPDATE person SET birth_datetime = TIMESTAMP '{index}', "
        f"year_of_birth = {index.year}, month_of_birth = {index.month}, "
        f"day_of_birth = {index.day} WHERE person_id = 1")
    expected = {("plausibleAge", "person", "year_of_birth"): 1}
    dates = {"observation_period": ["observation_period_start_date",
                                    "observation_period_end_date"],
             "visit_occurrence": ["visit_start_date", "visit_end_date"],
             "condition_occurrence": ["condition_start_date"],
             "drug_exposure": ["drug_exposure_start_date", "drug_exposure_end_date"],
             "measurement": ["measurement_date"], "death": ["death_date"]}
    for table, fields in dates.items():
        for field in fields:
            early = run(f"SELECT count(*) FROM {table} WHERE person_id = 1 AND "
                        f"{field} < DATE '{index}'")[0][0]
            if early:
                expected[("plausibleAfterBirth", table, field)] = early
    assert ("plausibleAfterBirth", "condition_occurrence", "condition_start_date") in expected
    assert failed(path) == expected


def test_structural_faults_fail_the_structure_checks(faulty):
    path, run = faulty
    run("DROP TABLE location",
        "CREATE TABLE care_site_new AS SELECT care_site_name, CAST(care_site_id AS BIGINT) AS "
        "care_site_id, place_of_service_concept_id, location_id, care_site_source_value, "
        "place_of_service_source_value FROM care_site",
        "INSERT INTO care_site_new (care_site_name) VALUES ('nowhere')",
        "DROP TABLE care_site", "ALTER TABLE care_site_new RENAME TO care_site",
        "ALTER TABLE cdm_source DROP COLUMN vocabulary_version",
        "UPDATE person SET person_source_value = repeat('x', 51) WHERE person_id <= 3")
    assert failed(path) == {
        ("cdmTable", "location", None): 1,
        ("cdmFieldOrder", "care_site", None): 2,
        ("cdmDatatype", "care_site", "care_site_id"): 1,
        ("isRequired", "care_site", "care_site_id"): 1,
        ("cdmFieldOrder", "cdm_source", None): 1,
        ("cdmField", "cdm_source", "vocabulary_version"): 1,
        ("varcharLength", "person", "person_source_value"): 3,
    }


def test_results_carry_counts_totals_thresholds_and_a_description(faulty):
    path, run = faulty
    run("UPDATE observation_period SET observation_period_end_date = "
        "observation_period_start_date - 3 WHERE person_id IN (1, 2, 3)")
    results = check_omop_duckdb(path, thresholds="dqd")
    bad = next(r for r in results if r.check == "plausibleStartBeforeEnd"
               and r.table == "observation_period")
    assert (bad.failing, bad.total, bad.threshold, bad.passed) == (3, 1200, 0.0, False)
    assert bad.percent == pytest.approx(0.25)
    assert bad.describe().startswith(
        "FAIL plausibleStartBeforeEnd observation_period.observation_period_start_date: 3 of 1200")
    drug = next(r for r in results if r.check == "plausibleStartBeforeEnd"
                and r.table == "drug_exposure")
    assert drug.threshold == 1.0 and drug.passed


def test_checks_refuse_missing_inputs(tmp_path):
    with pytest.raises(OmopError, match="no such DuckDB file"):
        check_omop_duckdb(tmp_path / "absent.duckdb")
    with pytest.raises(OmopError, match="no such directory"):
        check_omop_parquet(tmp_path / "absent")
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    results = check_omop_duckdb(empty)
    missing = {r.table for r in results if r.check == "cdmTable" and not r.passed}
    assert missing == set(EXPORT_TABLES)
    with pytest.raises(OmopError, match="thresholds"):
        check_omop_duckdb(empty, thresholds="lenient")
