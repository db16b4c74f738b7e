"""Conformance checks of an OMOP CDM v5.4 database: structure against the specification and
the OHDSI Data Quality Dashboard (DQD) checks that need no vocabulary.

Everything is SQL, so the checks run on any OMOP database DuckDB can open (a DuckDB file, or
Parquet files seen as views) and on PostgreSQL (``postgres.check_omop_postgres``), not only on
this package's exports; the few dialect differences live in a :class:`Dialect`. Check names
follow DQD v2.8 where a DQD check exists; the few house checks (CDM conventions DQD does not
test) are named in ``HOUSE_CHECKS``. Counts are rows (or persons, for person-level checks)
that break the rule; a check passes when its percentage is at most its threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from trajectories.io.omop.spec import EXPORT_TABLES, CdmField, OmopError, cdm_spec

Thresholds = Literal["strict", "dqd"]

EVENT_DATES: dict[str, tuple[str, str | None]] = {
    "observation_period": ("observation_period_start_date", "observation_period_end_date"),
    "visit_occurrence": ("visit_start_date", "visit_end_date"),
    "visit_detail": ("visit_detail_start_date", "visit_detail_end_date"),
    "condition_occurrence": ("condition_start_date", "condition_end_date"),
    "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
    "procedure_occurrence": ("procedure_date", "procedure_end_date"),
    "device_exposure": ("device_exposure_start_date", "device_exposure_end_date"),
    "measurement": ("measurement_date", None),
    "observation": ("observation_date", None),
    "specimen": ("specimen_date", None),
    "note": ("note_date", None),
    "death": ("death_date", None),
}
"""Start and end date of each clinical table (DQD field-level rows); tables absent from a
database are skipped."""

DOMAIN_CONCEPTS: dict[str, tuple[str, str]] = {
    "visit_occurrence": ("visit_concept_id", "visit_source_value"),
    "condition_occurrence": ("condition_concept_id", "condition_source_value"),
    "drug_exposure": ("drug_concept_id", "drug_source_value"),
    "procedure_occurrence": ("procedure_concept_id", "procedure_source_value"),
    "measurement": ("measurement_concept_id", "measurement_source_value"),
    "observation": ("observation_concept_id", "observation_source_value"),
}

VALUE_RANGES: dict[tuple[str, str], tuple[str | None, str | None]] = {
    ("person", "year_of_birth"): ("1850", "extract(year FROM current_date) + 1"),
    ("person", "month_of_birth"): ("1", "12"),
    ("person", "day_of_birth"): ("1", "31"),
    ("person", "birth_datetime"): ("TIMESTAMP '1850-01-01'", "current_date + 1"),
    ("drug_exposure", "days_supply"): ("1", "365"),
    ("drug_exposure", "refills"): ("0", "24"),
    ("drug_exposure", "quantity"): ("0.0000001", None),
    ("procedure_occurrence", "quantity"): ("1", None),
    ("cdm_source", "source_release_date"): ("DATE '2000-01-01'", "current_date + 1"),
    ("cdm_source", "cdm_release_date"): ("DATE '2000-01-01'", "current_date + 1"),
}
"""DQD plausibleValueLow/High bounds (SQL expressions); every date of ``EVENT_DATES`` gets
1950-01-01 .. today + 1 as well."""
EVENT_DATE_RANGE = ("DATE '1950-01-01'", "current_date + 1")

DQD_THRESHOLDS = {
    "plausibleStartBeforeEnd": 1.0,
    "plausibleAfterBirth": 1.0,
    "plausibleBeforeDeath": 1.0,
    "withinVisitDates": 5.0,
    "plausibleValueLow": 1.0,
    "plausibleValueHigh": 1.0,
}
"""DQD's default thresholds (percent of rows) where they are not 0; ``thresholds="dqd"``
uses them, the default ``"strict"`` allows no violation at all."""

HOUSE_CHECKS = {
    "cdmFieldOrder": "columns in the specification's (DDL) order",
    "varcharLength": "text no longer than the varchar(N) of the specification",
    "noEventAfterDeath": "no date after the person's death date (DQD allows 60 days)",
    "withinObservationPeriod": "event start dates inside one of the person's observation periods",
    "deathOncePerPerson": "at most one DEATH row per person",
    "plausibleAge": "age below 120 years at the end of the last observation period",
    "conceptIdNotNull": "a concept id (0 when unmapped) wherever its source value is given",
    "unmappedWithoutSourceValue": "rows with concept 0 keep their source value",
}

DEATH_GRACE_DAYS = 60
"""DQD plausibleBeforeDeath tolerates dates up to 60 days after death."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one table (and field): how many rows fail, of how many."""

    check: str
    table: str
    field: str | None
    failing: int
    total: int
    threshold: float
    """Percent of ``total`` allowed to fail."""
    passed: bool

    @property
    def percent(self) -> float:
        return 100.0 * self.failing / self.total if self.total else 0.0

    def describe(self) -> str:
        where = f"{self.table}.{self.field}" if self.field else self.table
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict} {self.check} {where}: {self.failing} of {self.total} "
            f"({self.percent:.3g}%, threshold {self.threshold:g}%)"
        )


def failures(results: list[CheckResult]) -> list[CheckResult]:
    """The results that did not pass."""
    return [r for r in results if not r.passed]


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (embedded quotes doubled): the same in DuckDB and
    PostgreSQL, so no schema, table or column name is ever spliced into SQL raw."""
    return '"' + name.replace('"', '""') + '"'


def _type_matches(field: CdmField, actual: str) -> bool:
    """Whether a DuckDB column type holds the specification's datatype."""
    actual = actual.upper()
    if field.datatype == "integer":
        return actual == "INTEGER"
    if field.datatype == "float":
        return actual in ("DOUBLE", "FLOAT", "REAL") or actual.startswith(("DECIMAL", "NUMERIC"))
    if field.datatype == "date":
        return actual == "DATE"
    if field.datatype == "datetime":
        return actual.startswith("TIMESTAMP") and "TIME ZONE" not in actual
    return actual == "VARCHAR" or actual.startswith("VARCHAR(")


def _duckdb_date(year: str, month: str, day: str) -> str:
    return f"TRY_CAST(printf('%04d-%02d-%02d', {year}, {month}, {day}) AS DATE)"


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL engines the checks run on; the checks' SQL is shared."""

    name: str
    placeholder: str
    """The query parameter marker: ``?`` (DuckDB) or ``%s`` (psycopg)."""
    errors: tuple[type[BaseException], ...]
    """The engine's query errors, reported as :class:`OmopError`."""
    type_matches: Callable[[CdmField, str], bool]
    """Whether an ``information_schema.columns.data_type`` holds a specification datatype."""
    make_date: Callable[[str, str, str], str]
    """SQL for the date of integer year/month/day expressions, NULL when no such date."""


DUCKDB = Dialect("DuckDB", "?", (duckdb.Error,), _type_matches, _duckdb_date)


class _Checker:
    """Runs the checks on one connection and collects the results."""

    def __init__(self, con: Any, dialect: Dialect, schema: str, thresholds: Thresholds):
        if thresholds not in ("strict", "dqd"):
            raise OmopError(f"thresholds: expected 'strict' or 'dqd', got {thresholds!r}")
        self.con, self.dialect, self.schema, self.mode = con, dialect, schema, thresholds
        self.results: list[CheckResult] = []
        rows = con.execute(
            "SELECT lower(table_name), lower(column_name), data_type FROM "
            f"information_schema.columns WHERE table_schema = {dialect.placeholder} ORDER BY "
            "table_name, ordinal_position",
            [schema],
        ).fetchall()
        self.columns: dict[str, dict[str, str]] = {}
        for table, column, dtype in rows:
            self.columns.setdefault(table, {})[column] = dtype
        self.rows = {t: self.scalar(f"SELECT count(*) FROM {self.q(t)}") for t in self.columns}

    # -- helpers --------------------------------------------------------------------------

    def q(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}"

    def scalar(self, sql: str) -> int:
        return int(self.con.execute(sql).fetchone()[0] or 0)

    def has(self, table: str, *fields: str) -> bool:
        return table in self.columns and all(f in self.columns[table] for f in fields)

    def add(self, check: str, table: str, field: str | None, failing: int, total: int,
            threshold: float | None = None) -> None:
        if threshold is None:
            threshold = 0.0 if self.mode == "strict" else DQD_THRESHOLDS.get(check, 0.0)
            if check == "plausibleStartBeforeEnd" and table == "observation_period":
                threshold = 0.0
        percent = 100.0 * failing / total if total else 0.0
        self.results.append(
            CheckResult(check, table, field, failing, total, threshold, percent <= threshold)
        )

    def birth_sql(self) -> str:
        """person_id -> birth date (birth_datetime, else year/month/day with 01 defaults)."""
        make_date = self.dialect.make_date
        fallback = make_date(
            "year_of_birth", "coalesce(month_of_birth, 1)", "coalesce(day_of_birth, 1)"
        )
        birth = (
            f"coalesce(CAST(birth_datetime AS DATE), {fallback})"
            if self.has("person", "birth_datetime", "month_of_birth", "day_of_birth")
            else make_date("year_of_birth", "1", "1")
        )
        return f"SELECT person_id, {birth} AS birth_date FROM {self.q('person')}"

    def death_sql(self) -> str:
        return (
            f"SELECT person_id, min(death_date) AS death_date FROM {self.q('death')} "
            "GROUP BY person_id"
        )

    # -- structure --------------------------------------------------------------------------

    def structure(self, table: str, fields: tuple[CdmField, ...]) -> None:
        present = table in self.columns
        self.add("cdmTable", table, None, 0 if present else 1, 1)
        if not present:
            return
        actual = list(self.columns[table])
        expected = [f.name for f in fields]
        moved = sum(
            1
            for i in range(max(len(actual), len(expected)))
            if i >= len(actual) or i >= len(expected) or actual[i] != expected[i]
        )
        self.add("cdmFieldOrder", table, None, moved, len(expected))
        counts = []
        for field in fields:
            dtype = self.columns[table].get(field.name)
            self.add("cdmField", table, field.name, 0 if dtype else 1, 1)
            if dtype is None:
                continue
            matches = self.dialect.type_matches(field, dtype)
            self.add("cdmDatatype", table, field.name, 0 if matches else 1, 1)
            column = f'"{field.name}"'
            if field.required:
                counts.append(
                    ("isRequired", field.name, f"count(*) FILTER (WHERE {column} IS NULL)")
                )
            if field.varchar_length is not None and matches:
                counts.append(
                    ("varcharLength", field.name,
                     f"count(*) FILTER (WHERE length({column}) > {field.varchar_length})")
                )
        if counts:
            values = self.con.execute(
                f"SELECT {', '.join(sql for *_, sql in counts)} FROM {self.q(table)}"
            ).fetchone()
            for (check, name, _), value in zip(counts, values, strict=True):
                self.add(check, table, name, int(value), self.rows[table])
        for field in fields:
            if field.name not in self.columns[table]:
                continue
            if field.primary_key:
                self.primary_key(table, field.name)
            if field.fk_table and field.fk_table != "concept" and field.fk_field:
                self.foreign_key(table, field)

    def primary_key(self, table: str, name: str) -> None:
        failing = self.scalar(
            f'SELECT count(*) FROM {self.q(table)} WHERE "{name}" IN (SELECT "{name}" FROM '
            f'{self.q(table)} GROUP BY "{name}" HAVING count(*) > 1)'
        )
        self.add("isPrimaryKey", table, name, failing, self.rows[table])

    def foreign_key(self, table: str, field: CdmField) -> None:
        target, key = field.fk_table, field.fk_field
        if self.has(target, key):
            condition = (
                f'NOT EXISTS (SELECT 1 FROM {self.q(target)} t WHERE t."{key}" = x."{field.name}")'
            )
        else:
            condition = "TRUE"  # the referenced table is missing: every value dangles
        failing = self.scalar(
            f'SELECT count(*) FROM {self.q(table)} x WHERE x."{field.name}" IS NOT NULL AND '
            f"{condition}"
        )
        self.add("isForeignKey", table, field.name, failing, self.rows[table])

    # -- plausibility -------------------------------------------------------------------------

    def dates(self) -> None:
        have_birth = self.has("person", "person_id", "year_of_birth")
        have_death = self.has("death", "person_id", "death_date")
        have_period = self.has(
            "observation_period", "person_id", "observation_period_start_date",
            "observation_period_end_date",
        )
        for table, (start, end) in EVENT_DATES.items():
            if not self.has(table, "person_id", start):
                continue
            fields = [start] + ([end] if end and self.has(table, end) else [])
            total = self.rows[table]
            for name in fields:
                self.value_range(table, name, *EVENT_DATE_RANGE)
            if len(fields) == 2:
                failing = self.scalar(
                    f'SELECT count(*) FROM {self.q(table)} WHERE "{end}" < "{start}"'
                )
                self.add("plausibleStartBeforeEnd", table, start, failing, total)
            for name in fields:
                if have_birth:
                    failing = self.scalar(
                        f"WITH birth AS ({self.birth_sql()}) SELECT count(*) FROM "
                        f'{self.q(table)} x JOIN birth b ON b.person_id = x.person_id '
                        f'WHERE x."{name}" < b.birth_date'
                    )
                    self.add("plausibleAfterBirth", table, name, failing, total)
                if have_death and table != "death":
                    late = self.con.execute(
                        f"WITH d AS ({self.death_sql()}) SELECT "
                        f'count(*) FILTER (WHERE x."{name}" > d.death_date + {DEATH_GRACE_DAYS}), '
                        f'count(*) FILTER (WHERE x."{name}" > d.death_date) '
                        f"FROM {self.q(table)} x JOIN d ON d.person_id = x.person_id"
                    ).fetchone()
                    self.add("plausibleBeforeDeath", table, name, int(late[0]), total)
                    self.add("noEventAfterDeath", table, name, int(late[1]), total)
            if have_period and table not in ("observation_period", "death"):
                failing = self.scalar(
                    f'SELECT count(*) FROM {self.q(table)} x WHERE x."{start}" IS NOT NULL AND '
                    f"NOT EXISTS (SELECT 1 FROM {self.q('observation_period')} op WHERE "
                    f"op.person_id = x.person_id AND x.\"{start}\" BETWEEN "
                    "op.observation_period_start_date AND op.observation_period_end_date)"
                )
                self.add("withinObservationPeriod", table, start, failing, total)
            if table != "visit_occurrence" and self.has(table, "visit_occurrence_id") and (
                self.has("visit_occurrence", "visit_occurrence_id", "visit_start_date",
                         "visit_end_date")
            ):
                failing = self.scalar(
                    f"SELECT count(*) FROM {self.q(table)} x JOIN "
                    f"{self.q('visit_occurrence')} v ON v.visit_occurrence_id = "
                    f'x.visit_occurrence_id WHERE x."{start}" < v.visit_start_date - 7 OR '
                    f'x."{start}" > v.visit_end_date + 7'
                )
                self.add("withinVisitDates", table, start, failing, total)

    def value_range(self, table: str, name: str, low: str | None, high: str | None) -> None:
        if not self.has(table, name):
            return
        for check, bound, op in (("plausibleValueLow", low, "<"),
                                 ("plausibleValueHigh", high, ">")):
            if bound is None:
                continue
            failing = self.scalar(
                f'SELECT count(*) FROM {self.q(table)} WHERE "{name}" {op} {bound}'
            )
            self.add(check, table, name, failing, self.rows[table])

    def persons(self) -> None:
        if not self.has("person", "person_id"):
            return
        persons = self.rows["person"]
        if self.has("observation_period", "person_id"):
            missing = self.scalar(
                f"SELECT count(*) FROM {self.q('person')} p WHERE NOT EXISTS (SELECT 1 FROM "
                f"{self.q('observation_period')} o WHERE o.person_id = p.person_id)"
            )
            self.add("measurePersonCompleteness", "observation_period", None, missing, persons)
        if self.has("observation_period", "observation_period_start_date",
                    "observation_period_end_date"):
            overlapping = self.scalar(
                "SELECT count(DISTINCT person_id) FROM (SELECT person_id, "
                "observation_period_start_date AS s, max(observation_period_end_date) OVER ("
                "PARTITION BY person_id ORDER BY observation_period_start_date, "
                "observation_period_end_date ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"
                f") AS e FROM {self.q('observation_period')}) AS w WHERE s <= e + 1"
            )
            self.add("measureObservationPeriodOverlap", "observation_period", None, overlapping,
                     persons)
            if self.has("person", "year_of_birth"):
                old = self.scalar(
                    f"WITH birth AS ({self.birth_sql()}), last AS (SELECT person_id, "
                    "max(observation_period_end_date) AS e FROM "
                    f"{self.q('observation_period')} GROUP BY person_id) SELECT count(*) FROM "
                    "birth b JOIN last l ON l.person_id = b.person_id "
                    "WHERE l.e >= b.birth_date + INTERVAL '120 years'"
                )
                self.add("plausibleAge", "person", "year_of_birth", old, persons)
        if self.has("death", "person_id"):
            twice = self.scalar(
                f"SELECT count(*) FROM (SELECT person_id FROM {self.q('death')} "
                "GROUP BY person_id HAVING count(*) > 1) AS w"
            )
            dead = self.scalar(f"SELECT count(DISTINCT person_id) FROM {self.q('death')}")
            self.add("deathOncePerPerson", "death", "person_id", twice, dead)

    def concepts(self) -> None:
        for table, columns in self.columns.items():
            for name in columns:
                if not name.endswith("_concept_id") or name.endswith("_source_concept_id"):
                    continue
                source = name.removesuffix("_concept_id") + "_source_value"
                if source in columns:
                    failing = self.scalar(
                        f"SELECT count(*) FROM {self.q(table)} WHERE {quote_ident(name)} IS "
                        f"NULL AND {quote_ident(source)} IS NOT NULL"
                    )
                    self.add("conceptIdNotNull", table, name, failing, self.rows[table])
        for table, (concept, source) in DOMAIN_CONCEPTS.items():
            if self.has(table, concept, source):
                failing = self.scalar(
                    f'SELECT count(*) FROM {self.q(table)} WHERE "{concept}" = 0 AND '
                    f'"{source}" IS NULL'
                )
                self.add("unmappedWithoutSourceValue", table, concept, failing, self.rows[table])

    def run(self, tables: tuple[str, ...]) -> list[CheckResult]:
        spec = cdm_spec()
        for table in tables:
            self.structure(table, spec[table])
        for (table, name), (low, high) in VALUE_RANGES.items():
            self.value_range(table, name, low, high)
        self.dates()
        self.persons()
        self.concepts()
        if self.has("cdm_source", "source_release_date", "cdm_release_date"):
            failing = self.scalar(
                f"SELECT count(*) FROM {self.q('cdm_source')} "
                "WHERE cdm_release_date < source_release_date"
            )
            self.add("plausibleTemporalAfter", "cdm_source", "cdm_release_date", failing,
                     self.rows["cdm_source"])
        return self.results


def check_omop_connection(
    con: duckdb.DuckDBPyConnection,
    *,
    schema: str = "main",
    thresholds: Thresholds = "strict",
    tables: tuple[str, ...] = EXPORT_TABLES,
) -> list[CheckResult]:
    """Run every check on the CDM tables in ``schema`` of an open DuckDB connection.

    ``tables`` are checked against the shipped specification (they must exist); the
    plausibility checks run on whatever clinical tables the schema holds.
    """
    return run_checks(con, DUCKDB, schema=schema, thresholds=thresholds, tables=tables)


def run_checks(
    con: Any,
    dialect: Dialect,
    *,
    schema: str,
    thresholds: Thresholds = "strict",
    tables: tuple[str, ...] = EXPORT_TABLES,
) -> list[CheckResult]:
    """Run every check through ``con``, any connection whose ``execute(sql, params)`` returns
    a cursor with ``fetchone``/``fetchall`` (DuckDB, psycopg), speaking ``dialect``."""
    unknown = set(tables) - set(cdm_spec())
    if unknown:
        raise OmopError(f"tables: {sorted(unknown)} are not in the shipped CDM specification")
    try:
        return _Checker(con, dialect, schema, thresholds).run(tables)
    except dialect.errors as error:
        raise OmopError(f"OMOP conformance query failed ({dialect.name}): {error}") from None


def check_omop_duckdb(
    path: str | Path, *, schema: str = "main", thresholds: Thresholds = "strict"
) -> list[CheckResult]:
    """Check an OMOP DuckDB database file (opened read-only); a list of results."""
    path = Path(path)
    if not path.is_file():
        raise OmopError(f"{path}: no such DuckDB file")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as error:
        raise OmopError(f"{path}: cannot open as a DuckDB database: {error}") from None
    with con:
        return check_omop_connection(con, schema=schema, thresholds=thresholds)


def check_omop_parquet(
    directory: str | Path, *, thresholds: Thresholds = "strict"
) -> list[CheckResult]:
    """Check an OMOP Parquet export (``<table>.parquet`` files) through DuckDB views."""
    directory = Path(directory)
    if not directory.is_dir():
        raise OmopError(f"{directory}: no such directory")
    with duckdb.connect() as con:
        for path in sorted(directory.glob("*.parquet")):
            literal = str(path).replace("'", "''")
            con.execute(
                f'CREATE VIEW "{path.stem.lower()}" AS SELECT * FROM read_parquet(\'{literal}\')'
            )
        return check_omop_connection(con, thresholds=thresholds)
