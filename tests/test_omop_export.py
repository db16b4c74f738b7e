"""OMOP CDM v5.4 export: the shipped spec, DuckDB and Parquet tables against the upstream
field-level CSV, row counts and values against the cohort, visit linkage, determinism."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import OMOP_ONCOLOGY, named

from trajectories import Cohort, Manifest
from trajectories.cohort import MICROSECONDS_PER_DAY
from trajectories.io.omop import (
    EXPORT_TABLES,
    OmopError,
    duckdb_writer,
    omop_blocks,
    omop_tables,
    visits,
    write_duckdb,
    write_parquet,
)
from trajectories.io.omop.spec import (
    cdm_spec,
    field_level_subset,
    read_field_level,
    shipped_spec_text,
)
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator

SHARED_SPEC = Path("/work/shared/omop/OMOP_CDMv5.4_Field_Level.csv")
N_PERSONS = 1500
LDH, PROGRESSION, PEMBRO, INFUSION, ECOG = 3016436, 4163261, 45775965, 4273629, 4172738

SCENARIO = named(OMOP_ONCOLOGY, "omop_export_test")


def read_text(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.read()


def reference_spec() -> dict[str, list[dict]]:
    """table -> columns in DDL order, parsed independently of the package (upstream file when
    present, else the shipped copy)."""
    text = read_text(SHARED_SPEC) if SHARED_SPEC.is_file() else shipped_spec_text()
    spec: dict[str, list[dict]] = {}
    for row in csv.DictReader(io.StringIO(text, newline="")):
        spec.setdefault(row["cdmTableName"].lower(), []).append({
            "name": row["cdmFieldName"].strip('"').lower(),
            "required": row["isRequired"] == "Yes",
            "type": row["cdmDatatype"].lower(),
        })
    return spec


DUCKDB_TYPES = {"integer": "INTEGER", "float": "DOUBLE", "date": "DATE", "datetime": "TIMESTAMP"}
ARROW_TYPES = {"integer": pa.int32(), "float": pa.float64(), "date": pa.date32(),
               "datetime": pa.timestamp("us")}


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    scenario = scenario_from_dict(SCENARIO, source="<omop test>")
    return MarkovSimulator(scenario).simulate(N_PERSONS, seed=7)


@pytest.fixture(scope="module")
def exported(cohort, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("omop")
    counts_db = write_duckdb(cohort, root / "cdm.duckdb", batch_size=400)
    counts_pq = write_parquet(cohort, root / "parquet", batch_size=400)
    with duckdb.connect(str(root / "cdm.duckdb"), read_only=True) as con:
        tables = {t: con.sql(f'SELECT * FROM "{t}"').pl() for t in EXPORT_TABLES}
        columns = con.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM "
            "information_schema.columns ORDER BY table_name, ordinal_position"
        ).fetchall()
    return {"root": root, "tables": tables, "columns": columns, "counts_db": counts_db,
            "counts_pq": counts_pq}


def events_of(cohort: Cohort, code: str) -> pl.DataFrame:
    return cohort.events.filter(pl.col("code") == code).join(
        cohort.persons.select("person_id", "index_date"), on="person_id", maintain_order="left"
    )


def day(frame: pl.DataFrame, column: str = "time") -> pl.Series:
    """index_date + floor(days), the closed form of every exported date."""
    return frame.select(
        pl.col("index_date") + pl.duration(days=pl.col(column).floor().cast(pl.Int64))
    ).to_series()


# -- the shipped specification -------------------------------------------------------------------


def test_shipped_spec_is_a_verbatim_subset_of_upstream():
    shipped = shipped_spec_text()
    assert shipped.count("\r\n") >= 176 and shipped.endswith("\r\n")  # CRLF rows kept
    tables = {r["cdmTableName"] for r in csv.DictReader(io.StringIO(shipped, newline=""))}
    assert tables == set(EXPORT_TABLES)
    counts = {t: len(cols) for t, cols in reference_spec().items() if t in EXPORT_TABLES}
    assert counts == {"person": 18, "observation_period": 5, "visit_occurrence": 17,
                      "condition_occurrence": 16, "drug_exposure": 23, "procedure_occurrence": 16,
                      "measurement": 23, "observation": 21, "death": 7, "care_site": 6,
                      "location": 12, "cdm_source": 11}
    if SHARED_SPEC.is_file():
        upstream = read_text(SHARED_SPEC)
        assert field_level_subset(upstream) == shipped
        rows = list(csv.DictReader(io.StringIO(upstream, newline="")))
        wanted = [r for r in rows if r["cdmTableName"] in EXPORT_TABLES]
        assert list(csv.DictReader(io.StringIO(shipped, newline=""))) == wanted
        assert upstream.startswith(shipped.split("\r\n", 1)[0] + "\r\n")
        full = read_field_level(SHARED_SPEC)
        assert len(full) == 39
        assert {t: full[t] for t in EXPORT_TABLES} == cdm_spec()


# -- structure ---------------------------------------------------------------------------------


def test_duckdb_tables_have_the_spec_names_order_types_and_not_null(exported):
    spec = reference_spec()
    by_table: dict[str, list[tuple]] = {}
    for table, column, dtype, nullable in exported["columns"]:
        by_table.setdefault(table, []).append((column, dtype, nullable))
    assert set(by_table) == set(EXPORT_TABLES)
    for table in EXPORT_TABLES:
        expected = [
            (c["name"], DUCKDB_TYPES.get(c["type"], "VARCHAR"), "NO" if c["required"] else "YES")
            for c in spec[table]
        ]
        assert by_table[table] == expected, table


def test_parquet_files_have_the_spec_schema(exported):
    spec = reference_spec()
    for table in EXPORT_TABLES:
        schema = pq.read_schema(exported["root"] / "parquet" / f"{table}.parquet")
        assert schema.names == [c["name"] for c in spec[table]], table
        for column in spec[table]:
            field = schema.field(column["name"])
            assert field.type == ARROW_TYPES.get(column["type"], pa.string()), (table, field)
            assert field.nullable == (not column["required"]), (table, field)


def test_every_value_fits_its_spec_type(exported):
    spec = reference_spec()
    for table, frame in exported["tables"].items():
        for column in spec[table]:
            series = frame.get_column(column["name"])
            if column["required"]:
                assert series.null_count() == 0, (table, column["name"])
            if column["type"].startswith("varchar(") and column["type"] != "varchar(max)":
                limit = int(column["type"][8:-1])
                assert (series.str.len_chars().fill_null(0) <= limit).all(), (table, column)
        for name in [c["name"] for c in spec[table] if c["name"] == f"{table}_id"]:
            assert frame.get_column(name).is_unique().all()


def test_duckdb_and_parquet_hold_the_same_rows(exported):
    assert exported["counts_db"] == exported["counts_pq"]
    for table, frame in exported["tables"].items():
        parquet = pl.read_parquet(exported["root"] / "parquet" / f"{table}.parquet")
        assert parquet.equals(frame), table
        assert frame.height == exported["counts_db"][table]


# -- contents ----------------------------------------------------------------------------------


def test_row_counts_equal_the_cohort(cohort, exported):
    t, codes = exported["tables"], cohort.events.get_column("code").value_counts()
    n = dict(zip(codes["code"], codes["count"], strict=True))
    persons = cohort.persons
    assert t["person"].height == t["observation_period"].height == N_PERSONS
    assert t["visit_occurrence"].height == (
        n["visit:outpatient"] + n["visit:inpatient"] + n["visit:telemonitoring"]
    )
    assert t["procedure_occurrence"].height == n["visit:infusion"]
    assert t["condition_occurrence"].height == n["state:stable"] + n["state:progressed"]
    assert t["measurement"].height == n["measurement:ldh"]
    assert t["observation"].height == n["measurement:ecog"]
    assert t["drug_exposure"].height == n["drug:pembrolizumab"]
    assert t["death"].height == (persons["exit"] == "death").sum() == n["state:death"]
    assert t["care_site"].height == 2 and t["location"].height == 0
    assert t["cdm_source"].height == 1


def test_person_and_observation_period(cohort, exported):
    person, period = exported["tables"]["person"], exported["tables"]["observation_period"]
    persons = cohort.persons
    assert person["person_id"].to_list() == persons["person_id"].to_list()
    birth = persons["birth_date"]
    assert person["year_of_birth"].to_list() == birth.dt.year().to_list()
    assert person["month_of_birth"].to_list() == birth.dt.month().to_list()
    assert person["day_of_birth"].to_list() == birth.dt.day().to_list()
    assert person["birth_datetime"].dt.date().to_list() == birth.to_list()
    expected_gender = persons["sex"].replace_strict({"M": 8507, "F": 8532}).to_list()
    assert person["gender_concept_id"].to_list() == expected_gender
    assert person["gender_source_value"].to_list() == persons["sex"].to_list()
    sites = dict(zip(exported["tables"]["care_site"]["care_site_name"],
                     exported["tables"]["care_site"]["care_site_id"], strict=True))
    assert sites == {"A": 1, "B": 2}
    assert person["care_site_id"].to_list() == persons["site"].replace_strict(sites).to_list()
    assert period["observation_period_start_date"].to_list() == persons["index_date"].to_list()
    assert period["observation_period_end_date"].to_list() == day(persons, "followup_end").to_list()
    assert period["observation_period_id"].to_list() == list(range(1, N_PERSONS + 1))
    assert set(period["period_type_concept_id"].to_list()) == {32817}


def test_death_once_per_dead_person_at_end_of_followup(cohort, exported):
    death = exported["tables"]["death"]
    dead = cohort.persons.filter(pl.col("exit") == "death")
    assert death["person_id"].to_list() == dead["person_id"].to_list()
    assert death["death_date"].to_list() == day(dead, "followup_end").to_list()
    micros = (dead["followup_end"] * MICROSECONDS_PER_DAY).floor().cast(pl.Int64)
    expected = dead["index_date"].cast(pl.Datetime("us")) + micros.cast(pl.Duration("us"))
    assert death["death_datetime"].to_list() == expected.to_list()
    assert set(death["death_type_concept_id"].to_list()) == {32817}
    assert set(death["cause_source_value"].to_list()) == {"death"}


def test_measurements_observations_and_drugs_carry_values_dates_and_concepts(cohort, exported):
    t = exported["tables"]
    ldh = events_of(cohort, "measurement:ldh")
    m = t["measurement"]
    assert m["person_id"].to_list() == ldh["person_id"].to_list()
    assert m["measurement_date"].to_list() == day(ldh).to_list()
    np.testing.assert_array_equal(m["value_as_number"].to_numpy(), ldh["value"].to_numpy())
    assert set(m["measurement_concept_id"].to_list()) == {LDH}
    assert set(m["unit_concept_id"].to_list()) == {8645}
    assert set(m["unit_source_value"].to_list()) == {"U/L"}
    assert set(m["measurement_source_value"].to_list()) == {"ldh"}
    assert set(m["measurement_type_concept_id"].to_list()) == {32817}
    seconds = (m["measurement_datetime"] - ldh["index_date"].cast(pl.Datetime("us")))
    np.testing.assert_allclose(seconds.dt.total_microseconds().to_numpy() / MICROSECONDS_PER_DAY,
                               ldh["time"].to_numpy(), atol=1e-9)

    ecog = events_of(cohort, "measurement:ecog")
    o = t["observation"]
    assert o["observation_date"].to_list() == day(ecog).to_list()
    np.testing.assert_array_equal(o["value_as_number"].to_numpy(), ecog["value"].to_numpy())
    assert set(o["observation_concept_id"].to_list()) == {ECOG}

    drugs = events_of(cohort, "drug:pembrolizumab")
    d = t["drug_exposure"]
    assert d["drug_exposure_start_date"].to_list() == day(drugs).to_list()
    assert d["drug_exposure_end_date"].to_list() == day(drugs, "end_time").to_list()
    assert d["verbatim_end_date"].to_list() == day(drugs, "end_time").to_list()
    assert set(d["drug_concept_id"].to_list()) == {PEMBRO}
    assert set(d["drug_type_concept_id"].to_list()) == {32838}

    infusion = events_of(cohort, "visit:infusion")
    p = t["procedure_occurrence"]
    assert p["procedure_date"].to_list() == day(infusion).to_list()
    assert p["procedure_end_date"].to_list() == day(infusion, "end_time").to_list()
    assert set(p["procedure_concept_id"].to_list()) == {INFUSION}


def test_states_become_conditions_and_visits_get_concepts_by_type(cohort, exported):
    t = exported["tables"]
    c = t["condition_occurrence"]
    by_source = dict(c.group_by("condition_source_value").agg(pl.col("condition_concept_id")
                                                              .unique()).iter_rows())
    assert by_source == {"stable": [0], "NSCLC progression": [PROGRESSION]}
    states = cohort.events.filter(pl.col("code").is_in(["state:stable", "state:progressed"]))
    states = states.join(cohort.persons.select("person_id", "index_date"), on="person_id",
                         maintain_order="left")
    assert c["condition_start_date"].to_list() == day(states).to_list()
    v = t["visit_occurrence"]
    concepts = dict(v.group_by("visit_source_value").agg(pl.col("visit_concept_id").unique())
                    .iter_rows())
    assert concepts == {"outpatient": [9202], "inpatient": [9201], "telemonitoring": [0]}
    visits = cohort.events.filter(pl.col("code").is_in(
        ["visit:outpatient", "visit:inpatient", "visit:telemonitoring"]))
    visits = visits.join(cohort.persons.select("person_id", "index_date"), on="person_id",
                         maintain_order="left")
    assert v["visit_start_date"].to_list() == day(visits).to_list()
    assert v["visit_end_date"].to_list() == day(visits, "end_time").to_list()
    assert (v["visit_end_date"] >= v["visit_start_date"]).all()
    previous = v.select(pl.col("visit_occurrence_id").shift(1).over("person_id"))
    assert v["preceding_visit_occurrence_id"].to_list() == previous.to_series().to_list()
    person_site = dict(zip(t["person"]["person_id"], t["person"]["care_site_id"], strict=True))
    assert v["care_site_id"].to_list() == v["person_id"].replace_strict(person_site).to_list()


def test_events_link_to_the_visit_covering_them(cohort, exported):
    """Brute force: every (event, visit) pair of a person; the covering visit that started
    last (then the highest id) is the one the exporter must name, else null."""
    t = exported["tables"]
    visits = t["visit_occurrence"].select(
        "person_id", "visit_occurrence_id",
        pl.col("visit_start_datetime").alias("vs"), pl.col("visit_end_datetime").alias("ve"))
    for table, prefix in (("measurement", "measurement"), ("observation", "observation"),
                          ("condition_occurrence", "condition_start"),
                          ("drug_exposure", "drug_exposure_start"),
                          ("procedure_occurrence", "procedure")):
        frame = t[table].with_row_index("row")
        pairs = frame.select("row", "person_id", pl.col(f"{prefix}_datetime").alias("at")).join(
            visits, on="person_id").filter((pl.col("vs") <= pl.col("at"))
                                           & (pl.col("at") <= pl.col("ve")))
        best = pairs.sort("row", "vs", "visit_occurrence_id").group_by("row").last()
        expected = frame.select("row").join(best, on="row", how="left").sort("row")
        linked = frame["visit_occurrence_id"]
        assert linked.to_list() == expected["visit_occurrence_id"].to_list(), table
    # measurements are taken at visits: all linked, to a visit starting at the same instant
    m = t["measurement"].join(visits, on="visit_occurrence_id", how="left")
    assert m["visit_occurrence_id"].null_count() == 0
    outpatient = m.filter(pl.col("measurement_datetime") == pl.col("vs"))
    assert outpatient.height > 0.5 * m.height


# -- determinism, streaming, unmapped codes, errors -------------------------------------------


def test_ids_and_rows_do_not_depend_on_block_size_or_event_layout(cohort, exported):
    small = omop_tables(cohort, batch_size=97)
    for table, frame in exported["tables"].items():
        assert small[table].equals(frame), table
    # events grouped by person in another order than persons' give the same tables
    shuffled = cohort.events.sort(pl.col("person_id").hash(seed=5), maintain_order=True)
    mixed = Cohort(cohort.persons, shuffled, cohort.manifest)
    assert not mixed.events["person_id"].is_sorted()
    relaid = omop_tables(mixed, batch_size=250)
    for table, frame in exported["tables"].items():
        assert relaid[table].equals(frame), table


def test_unmapped_codes_and_a_cohort_without_concepts_keep_every_row(cohort):
    """A cohort as loaded from real data: no manifest concepts, other namespaces."""
    persons = cohort.persons.head(200)
    events = cohort.events.filter(pl.col("person_id").is_in(persons["person_id"].implode()))
    extra = persons.select(
        "person_id", pl.lit(0.5).alias("time"), pl.lit(None, pl.Float64).alias("end_time"),
        pl.when(pl.col("person_id") % 2 == 0).then(pl.lit("lab:crp"))
        .otherwise(pl.lit("procedure:biopsy")).alias("code"),
        pl.lit(3.5).alias("value"))
    events = pl.concat([events, extra]).sort("person_id", "time", maintain_order=True)
    manifest = Manifest(**{k: v for k, v in cohort.manifest.model_dump().items()
                           if k != "concepts"})
    plain = Cohort(persons, events, manifest)
    t = omop_tables(plain)
    event_rows = sum(t[name].height for name in
                     ("visit_occurrence", "condition_occurrence", "drug_exposure",
                      "procedure_occurrence", "measurement", "observation", "death"))
    deaths = (persons["exit"] == "death").sum()
    # without concepts 'state:death' is an ordinary state (a condition); DEATH comes from exit
    assert t["death"].height == deaths > 0
    assert event_rows == events.height + deaths
    death_states = t["condition_occurrence"].filter(pl.col("condition_source_value") == "death")
    assert death_states["condition_start_date"].to_list() == t["death"]["death_date"].to_list()
    crp = t["observation"].filter(pl.col("observation_source_value") == "crp")
    assert crp.height == (persons["person_id"] % 2 == 0).sum()
    assert set(crp["observation_concept_id"].to_list()) == {0}
    assert set(crp["value_as_number"].to_list()) == {3.5}
    biopsy = t["procedure_occurrence"].filter(pl.col("procedure_source_value") == "biopsy")
    assert biopsy.height == (persons["person_id"] % 2 == 1).sum()
    for table, concept in (("measurement", "measurement_concept_id"),
                           ("drug_exposure", "drug_concept_id")):
        assert set(t[table][concept].to_list()) == {0}
    assert set(t["measurement"]["measurement_source_value"].to_list()) == {"ldh", "ecog"}
    progressed = t["condition_occurrence"].filter(
        pl.col("condition_source_value") == "progressed")
    assert progressed.height == (events["code"] == "state:progressed").sum()
    # visits still get concepts by type name; the infusion code stays a visit without a mapping
    visits = dict(t["visit_occurrence"].group_by("visit_source_value")
                  .agg(pl.col("visit_concept_id").first()).iter_rows())
    assert visits["outpatient"] == 9202 and visits["inpatient"] == 9201
    assert visits["infusion"] == 0


def test_missing_birth_date_uses_age_or_fails_naming_the_person(cohort):
    persons = cohort.persons.head(20).with_columns(
        pl.when(pl.col("person_id") == cohort.persons["person_id"][3]).then(None)
        .otherwise(pl.col("birth_date")).alias("birth_date"))
    events = cohort.events.filter(pl.col("person_id").is_in(persons["person_id"].implode()))
    with_age = persons.with_columns(age=pl.lit(50.0))
    person = omop_tables(Cohort(with_age, events, cohort.manifest))["person"]
    row = person.row(3, named=True)
    index = persons["index_date"][3]
    assert row["year_of_birth"] == (index - dt.timedelta(days=50 * 365.25)).year
    assert row["month_of_birth"] is None and row["birth_datetime"] is None
    without = Cohort(persons.drop("age", strict=False), events, cohort.manifest)
    with pytest.raises(OmopError, match=rf"birth_date: 1 null .*{persons['person_id'][3]}"):
        omop_tables(without)


def test_refusals_and_overwrite(cohort, exported, tmp_path):
    small = Cohort(cohort.persons.head(5), cohort.events.filter(
        pl.col("person_id").is_in(cohort.persons["person_id"].head(5).implode())),
        cohort.manifest)
    target = tmp_path / "cdm.duckdb"
    write_duckdb(small, target)
    with pytest.raises(OmopError, match="file exists"):
        write_duckdb(small, target)
    counts = write_duckdb(small, target, overwrite=True)
    assert counts["person"] == 5 and not (tmp_path / "cdm.duckdb.partial").exists()
    with pytest.raises(OmopError, match="not empty"):
        write_parquet(small, exported["root"] / "parquet")
    big_ids = small.persons.with_columns(pl.col("person_id") + 2**31)
    shifted = small.events.with_columns(pl.col("person_id") + 2**31)
    with pytest.raises(OmopError, match="person_id: 5 id"):
        write_duckdb(Cohort(big_ids, shifted, small.manifest), tmp_path / "big.duckdb")
    assert not (tmp_path / "big.duckdb").exists()
    assert not (tmp_path / "big.duckdb.partial").exists()
    with pytest.raises(OmopError, match="batch_size"):
        omop_tables(small, batch_size=0)


def test_death_domain_events_give_one_death_row_and_keep_the_rest(cohort):
    """A second death-domain event of a person goes to OBSERVATION; DEATH stays one per
    person, dated by exit 'death' (end of follow-up) or else by the death event."""
    persons = cohort.persons.head(300)
    events = cohort.events.filter(pl.col("person_id").is_in(persons["person_id"].implode()))
    even = persons.filter(pl.col("person_id") % 2 == 0)
    marker = even.select("person_id", pl.lit(0.5).alias("time"),
                         pl.lit(None, pl.Float64).alias("end_time"),
                         pl.lit("lab:crp").alias("code"), pl.lit(None, pl.Float64).alias("value"))
    events = pl.concat([events, marker]).sort("person_id", "time", maintain_order=True)
    concepts = {"state:death": {"domain": "death", "concept_id": 0},
                "lab:crp": {"domain": "death", "concept_id": 4306655}}
    fields = {**cohort.manifest.model_dump(), "concepts": concepts}
    t = omop_tables(Cohort(persons, events, Manifest(**fields)))
    dead = persons["exit"] == "death"
    even_dead = (dead & (persons["person_id"] % 2 == 0)).sum()
    death = t["death"]
    assert death["person_id"].is_unique().all()
    assert death.height == (dead | (persons["person_id"] % 2 == 0)).sum()
    assert t["observation"].height == even_dead
    assert set(t["observation"]["observation_source_value"].to_list()) == {"death"}
    alive_even = even.filter(pl.col("exit") != "death")
    alive_rows = death.filter(pl.col("person_id").is_in(alive_even["person_id"].implode()))
    assert alive_rows["death_date"].to_list() == alive_even["index_date"].to_list()
    causes = dict(death.group_by("cause_source_value").len().iter_rows())
    assert causes == {"crp": even.height, "death": (dead & (persons["person_id"] % 2 == 1)).sum()}


# -- streaming from a cohort directory ---------------------------------------------------------


def test_a_cohort_directory_exports_the_tables_of_the_cohort_for_any_block_size(
    cohort, exported, tmp_path, monkeypatch
):
    """Streamed block by block from disk, with DuckDB row groups of 1000 rows so that rows
    wait for the next block several times per table: the same tables, row for row."""
    directory = cohort.write(tmp_path / "cohort")
    for batch_size in (97, 700, 5000):
        streamed = omop_tables(directory, batch_size=batch_size)
        for table, frame in exported["tables"].items():
            assert streamed[table].equals(frame), (batch_size, table)
    monkeypatch.setattr(duckdb_writer, "ROW_GROUP_ROWS", 1000)
    counts = write_duckdb(directory, tmp_path / "cdm.duckdb", batch_size=333)
    assert counts == exported["counts_db"]
    assert counts["visit_occurrence"] > 10 * 1000  # several full row groups, then the rest
    write_parquet(str(directory), tmp_path / "parquet", batch_size=333)
    with duckdb.connect(str(tmp_path / "cdm.duckdb"), read_only=True) as con:
        for table, frame in exported["tables"].items():
            assert con.sql(f'SELECT * FROM "{table}"').pl().equals(frame), table
            assert pl.read_parquet(tmp_path / "parquet" / f"{table}.parquet").equals(frame)


def test_rows_go_to_duckdb_a_whole_row_group_at_a_time_in_order(monkeypatch):
    monkeypatch.setattr(duckdb_writer, "ROW_GROUP_ROWS", 8)
    groups = duckdb_writer._RowGroups()
    sizes, start, handed = [5, 7, 20, 1, 3, 16], 0, []
    for size in sizes:
        handed += groups.add("t", pa.table({"x": np.arange(start, start + size)}))
        start += size
    assert [g.num_rows for g in handed] == [8] * 6 and groups.rest()["t"].num_rows == 4
    rows = pa.concat_tables([*handed, groups.rest()["t"]]).column("x").to_pylist()
    assert rows == list(range(sum(sizes)))
    assert groups.add("u", pa.table({"x": np.arange(3)})) == []
    assert set(groups.rest()) == {"t", "u"}


def test_blocks_built_ahead_or_in_line_are_the_same(cohort):
    ahead = list(omop_blocks(cohort, 400))
    in_line = list(omop_blocks(cohort, 400, ahead=False))
    assert len(ahead) == len(in_line) == 1 + 4
    for first, second in zip(ahead, in_line, strict=True):
        assert first.keys() == second.keys()
        assert all(first[name].equals(second[name]) for name in first)


@pytest.mark.parametrize("shuffle", [False, True])
def test_events_of_persons_absent_from_persons_are_refused(cohort, shuffle):
    """An unchecked cohort whose events name persons it lacks (the first, one at a block
    boundary, the last): the export stops, counting and naming them, whatever the layout."""
    events = cohort.events
    if shuffle:
        events = events.sort(pl.col("person_id").hash(seed=3), maintain_order=True)
    ids = cohort.persons["person_id"]
    for dropped in (ids[0], ids[400], ids[-1]):
        persons = cohort.persons.filter(pl.col("person_id") != dropped)
        unchecked = Cohort(persons, events, cohort.manifest, check=False)
        n = (events["person_id"] == dropped).sum()
        with pytest.raises(OmopError, match=rf"events\.person_id: {n} event\(s\) of persons "
                                            rf"absent from persons \(e\.g\. \[{dropped}\]\)"):
            omop_tables(unchecked, batch_size=400)


def test_visit_search_helpers_agree_with_brute_force():
    """Running maximum per person and 'last visit of the person started at or before t',
    on integer-valued times so that ties are common."""
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 40, size=300)
    person = np.repeat(np.arange(300) * 3, lengths)  # gaps: persons without visits
    start = np.concatenate([np.sort(rng.integers(0, 50, n)) for n in lengths]).astype(float)
    end = start + rng.integers(0, 30, size=start.size)
    longest = visits._running_max(person, end)
    for p in np.unique(person):
        mine = person == p
        np.testing.assert_array_equal(longest[mine], np.maximum.accumulate(end[mine]))
    query_person = np.sort(rng.integers(-1, 3 * 300 + 1, size=2000))
    query_time = rng.integers(-1, 52, size=2000).astype(float)
    found = visits._last_at_or_before(person, start, query_person, query_time)
    for i in range(query_person.size):
        candidates = np.flatnonzero((person == query_person[i]) & (start <= query_time[i]))
        assert found[i] == (candidates[-1] if candidates.size else -1)
