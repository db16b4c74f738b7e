"""OMOP CDM v5.4 on PostgreSQL: the export reads back equal to the DuckDB export, its column
types are the specification's, the conformance checks give the DuckDB results, failures leave
nothing behind, overwrite replaces only CDM tables, and names are only ever names."""

from __future__ import annotations

import datetime as dt
import math
import shutil

import duckdb
import polars as pl
import psycopg
import pytest
from pg_server import drop_schema, postgres_url, scratch_schema, unique_schema
from polars.testing import assert_frame_equal
from psycopg import sql

import trajectories.io.omop.postgres_writer as writer_module
from trajectories.io.omop import (
    EXPORT_TABLES,
    OmopError,
    check_omop_duckdb,
    failures,
    omop_blocks,
    write_duckdb,
)
from trajectories.io.omop.postgres import (
    check_omop_postgres,
    check_schema,
    check_url,
    read_omop_postgres,
)
from trajectories.io.omop.postgres_writer import write_postgres
from trajectories.io.omop.spec import cdm_spec, conform
from trajectories.simulate import MarkovSimulator

N_PERSONS = 2000
BLOCK = 700
"""Persons per block: 2000 persons make three blocks (plus the reference tables' block)."""
PG_TYPES = {"integer": "integer", "float": "double precision", "date": "date",
            "datetime": "timestamp without time zone", "varchar(max)": "text"}


@pytest.fixture(scope="module")
def url() -> str:
    return postgres_url()


@pytest.fixture(scope="module")
def cohort():
    return MarkovSimulator("oncology_nsclc_two_arm").simulate(N_PERSONS, seed=1)


@pytest.fixture(scope="module")
def small():
    return MarkovSimulator("oncology_nsclc_two_arm").simulate(300, seed=2)


@pytest.fixture(scope="module")
def exported(url, cohort, tmp_path_factory):
    """The cohort in a PostgreSQL schema and in a DuckDB file (reference)."""
    root = tmp_path_factory.mktemp("omop_pg")
    with scratch_schema(url, "omop_pg") as schema:
        counts_pg = write_postgres(cohort, url, schema, batch_size=BLOCK)
        counts_db = write_duckdb(cohort, root / "cdm.duckdb")
        with duckdb.connect(str(root / "cdm.duckdb"), read_only=True) as con:
            tables = {t: con.sql(f'SELECT * FROM "{t}"').pl() for t in EXPORT_TABLES}
        yield {"schema": schema, "duckdb": root / "cdm.duckdb", "tables": tables,
               "counts_pg": counts_pg, "counts_db": counts_db}


def pg(url: str, query: sql.Composable | str, params: list | None = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as con:
        cur = con.execute(query, params)
        return cur.fetchall() if cur.description else []


def schema_exists(url: str, schema: str) -> bool:
    return bool(pg(url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]))


def person_count(url: str, schema: str) -> int:
    return pg(url, sql.SQL("SELECT count(*) FROM {}.person").format(sql.Identifier(schema)))[0][0]


def failing_after(n_blocks: int, error: Exception, damage=None):
    """A stand-in for omop_blocks: the real blocks, ``damage``-d, then ``error`` after
    ``n_blocks`` of them."""
    def blocks(cohort, block_size):
        for i, block in enumerate(omop_blocks(cohort, block_size)):
            if i == n_blocks:
                raise error
            yield damage(block) if damage and i == n_blocks - 1 else block
    return blocks


# -- the export ----------------------------------------------------------------------------------


def test_every_table_reads_back_equal_to_the_duckdb_export(url, exported):
    counts = exported["counts_pg"]
    assert counts == exported["counts_db"]
    assert counts["person"] == counts["observation_period"] == N_PERSONS
    assert counts["visit_occurrence"] > 10 * N_PERSONS and counts["measurement"] > 0
    assert counts["location"] == counts["procedure_occurrence"] == 0  # empty tables exist too
    for table in EXPORT_TABLES:
        frame = read_omop_postgres(url, exported["schema"], table)
        assert frame.height == counts[table], table
        # same columns, order, dtypes (Int32, Float64, Date, Datetime[us], String), values
        assert_frame_equal(frame, exported["tables"][table], check_exact=True)


def test_tables_have_the_spec_columns_types_and_not_null(url, exported):
    rows = pg(url, "SELECT table_name, column_name, data_type, character_maximum_length, "
                   "is_nullable FROM information_schema.columns WHERE table_schema = %s "
                   "ORDER BY table_name, ordinal_position", [exported["schema"]])
    found: dict[str, list[tuple]] = {}
    for table, *column in rows:
        found.setdefault(table, []).append(tuple(column))
    assert set(found) == set(EXPORT_TABLES)
    for table in EXPORT_TABLES:
        expected = []
        for field in cdm_spec()[table]:
            if field.datatype in PG_TYPES:
                kind, length = PG_TYPES[field.datatype], None
            else:
                kind, length = "character varying", int(field.datatype[8:-1])
            expected.append((field.name, kind, length, "NO" if field.required else "YES"))
        assert found[table] == expected, table


def test_text_nulls_floats_and_times_survive_the_round_trip(url, small, monkeypatch):
    """COPY's CSV keeps NULL apart from '' and keeps quotes, commas, newlines, '\\N' and
    non-ASCII text; floats come back bit for bit, timestamps to the microsecond."""
    texts = ['a, "quoted"\nsecond line', "", "\\N", "ünïcødé 🫁 \\ backslash", "\\."]
    source = conform(pl.DataFrame({
        "cdm_source_name": texts,
        "cdm_source_abbreviation": ["", "x", "y", "z", "w"],
        "cdm_holder": ["h"] * 5,
        "source_description": [None, "", "d", None, "\n"],
        "source_release_date": [dt.date(1900, 1, 1), dt.date(2999, 12, 31)] * 2
        + [dt.date(1970, 1, 1)],
        "cdm_release_date": [dt.date(2024, 2, 29)] * 5,
        "cdm_version_concept_id": [0, -1, 2**31 - 1, -(2**31), 756265],
        "vocabulary_version": ["v"] * 5,
    }), "cdm_source")
    values = [0.1, 1 / 3, 1e-300, 1.7976931348623157e308, -0.0, 5e-324, math.pi, None]
    n = len(values)
    measurement = conform(pl.DataFrame({
        "measurement_id": range(1, n + 1),
        "person_id": [1] * n,
        "measurement_concept_id": [0] * n,
        "measurement_date": [dt.date(2020, 1, 1)] * n,
        "measurement_datetime": [dt.datetime(1969, 12, 31, 23, 59, 59, 999_999),
                                 dt.datetime(2020, 1, 1, 0, 0, 0, 1),
                                 dt.datetime(2020, 6, 30, 12, 34, 56, 123_456), None] * 2,
        "measurement_type_concept_id": [32817] * n,
        "value_as_number": values,
    }), "measurement")

    def blocks(cohort, block_size):
        yield {"cdm_source": source, "measurement": measurement}

    monkeypatch.setattr(writer_module, "omop_blocks", blocks)
    with scratch_schema(url, "omop_text") as schema:
        counts = write_postgres(small, url, schema)
        assert counts["cdm_source"] == 5 and counts["measurement"] == n
        back = read_omop_postgres(url, schema, "cdm_source")
        assert back["cdm_source_name"].to_list() == texts
        assert back["source_description"].to_list() == [None, "", "d", None, "\n"]
        assert_frame_equal(back, source, check_exact=True)
        assert_frame_equal(read_omop_postgres(url, schema, "measurement"), measurement,
                           check_exact=True)


# -- conformance ---------------------------------------------------------------------------------


def outcome(results) -> list[tuple]:
    return [(r.check, r.table, r.field, r.failing, r.total, r.threshold, r.passed)
            for r in results]


def test_conformance_checks_pass_with_the_duckdb_results(url, exported):
    results = check_omop_postgres(url, exported["schema"])
    assert failures(results) == []
    assert len([r for r in results if r.check == "cdmField"]) == 175
    visits = next(r for r in results if r.check == "withinVisitDates"
                  and r.table == "measurement")
    assert visits.total == exported["counts_pg"]["measurement"] and visits.failing == 0
    assert outcome(results) == outcome(check_omop_duckdb(exported["duckdb"]))
    dqd = check_omop_postgres(url, exported["schema"], thresholds="dqd")
    assert outcome(dqd) == outcome(check_omop_duckdb(exported["duckdb"], thresholds="dqd"))


def test_faults_fail_the_same_checks_on_postgresql_and_duckdb(url, exported, tmp_path):
    """The same damage to both databases: the dialects' SQL (birth dates from year, month and
    day included) must count the same failures."""
    path = tmp_path / "faulty.duckdb"
    shutil.copy(exported["duckdb"], path)
    start = exported["tables"]["observation_period"].filter(pl.col("person_id") == 4)
    born = start["observation_period_start_date"][0] + dt.timedelta(days=1)
    statements = [
        # Feb 30 is no date, month 13 none either: no birth date, so no age or after-birth fault
        "UPDATE person SET birth_datetime = NULL, year_of_birth = 2100, month_of_birth = 2, "
        "day_of_birth = 30 WHERE person_id = 1",
        "UPDATE person SET birth_datetime = NULL, year_of_birth = 1880, month_of_birth = 2, "
        "day_of_birth = 29 WHERE person_id = 2",
        "UPDATE person SET birth_datetime = NULL, month_of_birth = 13 WHERE person_id = 3",
        f"UPDATE person SET birth_datetime = NULL, year_of_birth = {born.year}, "
        f"month_of_birth = {born.month}, day_of_birth = {born.day} WHERE person_id = 4",
        "UPDATE drug_exposure SET drug_exposure_end_date = drug_exposure_start_date - 1 "
        "WHERE drug_exposure_id IN (1, 2)",
        "UPDATE condition_occurrence SET visit_occurrence_id = 999999999 "
        "WHERE condition_occurrence_id = 3",
        "INSERT INTO death SELECT * FROM death WHERE person_id = (SELECT min(person_id) "
        "FROM death)",
        "UPDATE measurement SET measurement_date = measurement_date + 400 "
        "WHERE measurement_id = 5",
    ]
    source = exported["schema"]
    with scratch_schema(url, "omop_faulty") as schema:
        copies = [sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema))]
        for table in EXPORT_TABLES:
            new, old = (sql.SQL("{}.{}").format(sql.Identifier(s), sql.Identifier(table))
                        for s in (schema, source))
            copies.append(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(new, old))
            copies.append(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(new, old))
        with psycopg.connect(url, autocommit=True) as con:
            for statement in copies:
                con.execute(statement)
            con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            for statement in statements:
                con.execute(statement)
        with duckdb.connect(str(path)) as con:
            for statement in statements:
                con.execute(statement)
        on_pg = failures(check_omop_postgres(url, schema))
        on_duckdb = failures(check_omop_duckdb(path))
    assert outcome(on_pg) == outcome(on_duckdb)
    failed = {(r.check, r.table, r.field): r.failing for r in on_pg}
    assert failed[("plausibleValueHigh", "person", "year_of_birth")] == 1
    assert failed[("plausibleValueHigh", "person", "month_of_birth")] == 1
    assert failed[("plausibleAge", "person", "year_of_birth")] == 1
    assert failed[("plausibleStartBeforeEnd", "drug_exposure", "drug_exposure_start_date")] == 2
    assert failed[("isForeignKey", "condition_occurrence", "visit_occurrence_id")] == 1
    assert failed[("deathOncePerPerson", "death", "person_id")] == 1  # persons
    assert failed[("plausibleAfterBirth", "condition_occurrence", "condition_start_date")] >= 1
    assert failed[("plausibleAfterBirth", "observation_period",
                   "observation_period_start_date")] == 1


# -- all or nothing ------------------------------------------------------------------------------


def test_an_exception_mid_export_leaves_no_schema_and_no_table(url, cohort, monkeypatch):
    schema = unique_schema("omop_fail")
    monkeypatch.setattr(writer_module, "omop_blocks",
                        failing_after(3, RuntimeError("injected after two blocks of persons")))
    try:
        with pytest.raises(RuntimeError, match="injected"):
            write_postgres(cohort, url, schema, batch_size=BLOCK)
        assert not schema_exists(url, schema)
    finally:
        drop_schema(url, schema)


def test_a_refused_row_mid_export_rolls_everything_back(url, cohort, monkeypatch):
    """A NULL person_id in the second block of persons breaks measurement's NOT NULL during
    COPY: the error names the table, and neither the schema nor the first block remains."""
    def null_person(block):
        measurement = block["measurement"]
        assert measurement.height > 1
        block["measurement"] = measurement.with_columns(
            pl.when(pl.int_range(pl.len()) == measurement.height // 2).then(None)
            .otherwise(pl.col("person_id")).alias("person_id"))
        return block

    schema = unique_schema("omop_refused")
    monkeypatch.setattr(writer_module, "omop_blocks",
                        failing_after(3, AssertionError("not reached"), null_person))
    try:
        expected = r"(?s)\.measurement.*nothing was written.*null value"
        with pytest.raises(OmopError, match=expected):
            write_postgres(cohort, url, schema, batch_size=BLOCK)
        assert not schema_exists(url, schema)
    finally:
        drop_schema(url, schema)


# -- overwrite -----------------------------------------------------------------------------------


def test_existing_tables_are_refused_and_replaced_only_with_overwrite(
    url, cohort, small, monkeypatch
):
    with scratch_schema(url, "omop_over") as schema:
        write_postgres(small, url, schema)
        before = read_omop_postgres(url, schema, "person")
        assert before.height == 300
        # a table of the user's (a vocabulary, say) shares the schema
        name = sql.Identifier(schema)
        pg(url, sql.SQL("CREATE TABLE {}.concept (concept_id integer)").format(name))
        pg(url, sql.SQL("INSERT INTO {}.concept VALUES (8507)").format(name))

        with pytest.raises(OmopError, match="already holds CDM table.*overwrite"):
            write_postgres(cohort, url, schema)
        assert_frame_equal(read_omop_postgres(url, schema, "person"), before)

        with monkeypatch.context() as patch:
            patch.setattr(writer_module, "omop_blocks",
                          failing_after(2, RuntimeError("injected during the overwrite")))
            with pytest.raises(RuntimeError, match="injected"):
                write_postgres(cohort, url, schema, batch_size=BLOCK, overwrite=True)
        for table in ("person", "death", "measurement"):  # the previous export, untouched
            assert read_omop_postgres(url, schema, table).height > 0
        assert_frame_equal(read_omop_postgres(url, schema, "person"), before)

        counts = write_postgres(cohort, url, schema, batch_size=BLOCK, overwrite=True)
        assert counts["person"] == person_count(url, schema) == N_PERSONS
        assert pg(url, sql.SQL("SELECT concept_id FROM {}.concept").format(name)) == [(8507,)]
        assert failures(check_omop_postgres(url, schema)) == []


def test_overwrite_does_not_replace_a_view(url, small):
    with scratch_schema(url, "omop_view") as schema:
        name = sql.Identifier(schema)
        pg(url, sql.SQL("CREATE SCHEMA {}").format(name))
        pg(url, sql.SQL("CREATE VIEW {}.death AS SELECT 1 AS person_id").format(name))
        with pytest.raises(OmopError, match=r"death \(view\) is not a table"):
            write_postgres(small, url, schema, overwrite=True)
        assert pg(url, sql.SQL("SELECT person_id FROM {}.death").format(name)) == [(1,)]
        assert pg(url, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", [schema]) == [(0,)]


# -- names and URLs ------------------------------------------------------------------------------


def test_a_malicious_schema_name_is_only_a_name(url, small):
    victim = unique_schema("victim")
    schema = f'x"; drop table {victim}; -- %s'  # a placeholder too, for psycopg
    pg(url, sql.SQL("CREATE TABLE public.{} (id integer)").format(sql.Identifier(victim)))
    try:
        counts = write_postgres(small, url, schema)
        assert pg(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND "
                       "tablename = %s", [victim]) == [(1,)]
        tables = pg(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema])
        assert {t for (t,) in tables} == set(EXPORT_TABLES)
        person = read_omop_postgres(url, schema, "person")
        assert person.height == counts["person"] == 300
        assert failures(check_omop_postgres(url, schema)) == []
        with pytest.raises(OmopError, match="no such table"):
            read_omop_postgres(url, schema, f'person"; drop table {victim}; --')
        with pytest.raises(OmopError, match="already holds"):
            write_postgres(small, url, schema)
    finally:
        drop_schema(url, schema)
        pg(url, sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(victim)))


@pytest.mark.parametrize("schema", ["", "a" * 64, "é" * 32, "pg_cdm", "information_schema",
                                    "a\x00b", None])
def test_unusable_schema_names_are_refused(schema):
    with pytest.raises(OmopError, match="schema"):
        check_schema(schema)


def test_accepted_schema_names_keep_their_case_and_punctuation():
    for schema in ("cdm", "CDM", "a" * 63, "é" * 31, "my schema.v5.4", 'x"; drop table y; --'):
        assert check_schema(schema) == schema


@pytest.mark.parametrize("bad", ["", "cdm.duckdb", "mysql://u@h/db", "postgresql://h:port/db",
                                 "host=localhost dbname=x"])
def test_bad_urls_are_refused_before_connecting(bad):
    with pytest.raises(OmopError, match="PostgreSQL URL"):
        check_url(bad)


def test_connection_failures_name_the_url_without_its_password(small, tmp_path):
    dead = "postgresql://someone:s3cret-pw@127.0.0.1:1/cdm?connect_timeout=3"
    for call in (lambda: write_postgres(small, dead, "cdm"),
                 lambda: check_omop_postgres(dead, "cdm"),
                 lambda: read_omop_postgres(dead, "cdm", "person")):
        with pytest.raises(OmopError, match="cannot connect") as caught:
            call()
        message = str(caught.value)
        assert "someone:***@127.0.0.1:1/cdm" in message and "s3cret" not in message


def test_reading_a_missing_table_is_an_error(url, exported):
    with pytest.raises(OmopError, match="no_such_table: no such table"):
        read_omop_postgres(url, exported["schema"], "no_such_table")
