"""Import an OMOP CDM v5.4 database (DuckDB file, Parquet directory, or any reader) as a Cohort.

A mapping (TOML, see ``examples/mappings/oncology.toml``) says which concepts or source values
become which cohort codes: a code ``state:<name>`` makes a state, any other namespaced code an
event (``visit:outpatient``, ``measurement:ldh``...). The index date is the person's first
observation period start, or the first occurrence of a concept; follow-up ends at death or at
the last observation period end. Nothing is dropped silently: unmapped rows are kept as
``<domain>:<concept_id>`` events (``<domain>:0/<source_value>`` for concept 0) or raise,
as the mapping says, and every count lands in ``manifest.omop_import``.

Tables are read through the small :class:`OmopSource` interface (``columns`` and ``read``),
so another database (PostgreSQL) plugs in by implementing it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trajectories.cohort import CODE_PATTERN, EXITS, PERSON_COLUMNS, STATE_PREFIX, Cohort
from trajectories.io.omop.spec import OmopError
from trajectories.io.survival_table import assemble_cohort

MICROSECONDS_PER_DAY = 86_400_000_000
GENDERS = {8507: "M", 8532: "F"}
SEX_VALUES = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}


class OmopImportError(OmopError):
    """An OMOP database or a mapping cannot be turned into a cohort."""


# -- where the tables come from -----------------------------------------------------------------


@runtime_checkable
class OmopSource(Protocol):
    """Reads CDM tables: ``columns`` lists a table's columns (None if it does not exist) and
    ``read`` returns those columns as a polars frame. ``name`` appears in error messages."""

    name: str

    def columns(self, table: str) -> list[str] | None: ...

    def read(self, table: str, columns: Sequence[str]) -> pl.DataFrame: ...

    def close(self) -> None: ...


class ParquetSource:
    """A directory of ``<table>.parquet`` files (as :func:`write_parquet` makes)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.name = str(self.directory)

    def _path(self, table: str) -> Path:
        return self.directory / f"{table}.parquet"

    def _names(self, table: str) -> dict[str, str] | None:
        """Lower-cased column name -> the name in the file; None if there is no file."""
        path = self._path(table)
        if not path.is_file():
            return None
        try:
            return {name.lower(): name for name in pq.read_schema(path).names}
        except (OSError, pa.ArrowException) as error:
            raise OmopImportError(f"{path}: unreadable Parquet: {error}") from None

    def columns(self, table: str) -> list[str] | None:
        names = self._names(table)
        return None if names is None else list(names)

    def read(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        names = self._names(table) or {}
        try:
            frame = pl.read_parquet(self._path(table), columns=[names.get(c, c) for c in columns])
        except (OSError, pl.exceptions.PolarsError) as error:
            raise OmopImportError(f"{self._path(table)}: cannot read: {error}") from None
        return frame.rename({name: name.lower() for name in frame.columns})

    def close(self) -> None:
        return None


def _quoted(identifier: str) -> str:
    """A SQL identifier in double quotes, embedded quotes doubled (DuckDB, standard SQL)."""
    return '"' + identifier.replace('"', '""') + '"'


class DuckDBSource:
    """A DuckDB database file, read only; ``schema`` is the CDM schema (default ``main``)."""

    def __init__(self, path: str | Path, schema: str | None = None) -> None:
        import duckdb

        self.path, self.schema = Path(path), schema or "main"
        self.name = f"{self.path} (schema {self.schema})"
        try:
            self.connection = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as error:
            raise OmopImportError(f"{self.path}: cannot open as DuckDB: {error}") from None

    def columns(self, table: str) -> list[str] | None:
        found = self.connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND "
            "lower(table_name) = ? ORDER BY ordinal_position",
            [self.schema, table],
        ).fetchall()
        return [row[0].lower() for row in found] or None

    def read(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        import duckdb

        names = ", ".join(_quoted(c) for c in columns)
        try:
            result = self.connection.sql(
                f"SELECT {names} FROM {_quoted(self.schema)}.{_quoted(table)}")
            return pl.from_arrow(result.to_arrow_table())
        except duckdb.Error as error:
            raise OmopImportError(f"{self.name}: cannot read table {table}: {error}") from None

    def close(self) -> None:
        self.connection.close()


class PostgresSource:
    """A PostgreSQL database (URL), CDM tables in ``schema`` (default ``public``)."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        from trajectories.io.omop.postgres import check_schema, check_url, shown_url

        self.url, self.schema = check_url(url), check_schema(schema or "public")
        self.name = f"{shown_url(url)} (schema {self.schema})"

    def columns(self, table: str) -> list[str] | None:
        from trajectories.io.omop.postgres import connect

        with connect(self.url, autocommit=True, read_only=True) as con:
            found = con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND lower(table_name) = %s ORDER BY ordinal_position", (self.schema, table),
            ).fetchall()
        return [row[0].lower() for row in found] or None

    def read(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        from trajectories.io.omop.postgres import read_omop_postgres

        frame = read_omop_postgres(self.url, self.schema, table)
        return frame.rename({c: c.lower() for c in frame.columns}).select(columns)

    def close(self) -> None:
        return None


def open_source(source: str | Path | OmopSource, schema: str | None = None) -> OmopSource:
    """A reader for ``source``: a Parquet directory, a DuckDB file, a PostgreSQL URL
    (``postgresql://...``), or a reader."""
    if isinstance(source, OmopSource):
        return source
    if isinstance(source, str) and source.startswith(("postgresql://", "postgres://")):
        return PostgresSource(source, schema)
    path = Path(source)
    if path.is_dir():
        if schema is not None:
            raise OmopImportError(f"{path}: a Parquet directory has no schema (got {schema!r})")
        return ParquetSource(path)
    if path.is_file():
        return DuckDBSource(path, schema)
    raise OmopImportError(f"{path}: no such DuckDB file or Parquet directory")


# -- the mapping --------------------------------------------------------------------------------


EVENT_TABLES: dict[str, dict[str, str | None]] = {
    "condition_occurrence": {
        "domain": "condition", "id": "condition_occurrence_id",
        "concept": "condition_concept_id", "source": "condition_source_value",
        "start_date": "condition_start_date", "start_datetime": "condition_start_datetime",
        "end_date": "condition_end_date", "end_datetime": "condition_end_datetime",
        "value": None,
    },
    "visit_occurrence": {
        "domain": "visit", "id": "visit_occurrence_id",
        "concept": "visit_concept_id", "source": "visit_source_value",
        "start_date": "visit_start_date", "start_datetime": "visit_start_datetime",
        "end_date": "visit_end_date", "end_datetime": "visit_end_datetime", "value": None,
    },
    "drug_exposure": {
        "domain": "drug", "id": "drug_exposure_id",
        "concept": "drug_concept_id", "source": "drug_source_value",
        "start_date": "drug_exposure_start_date",
        "start_datetime": "drug_exposure_start_datetime",
        "end_date": "drug_exposure_end_date", "end_datetime": "drug_exposure_end_datetime",
        "value": None,
    },
    "procedure_occurrence": {
        "domain": "procedure", "id": "procedure_occurrence_id",
        "concept": "procedure_concept_id", "source": "procedure_source_value",
        "start_date": "procedure_date", "start_datetime": "procedure_datetime",
        "end_date": "procedure_end_date", "end_datetime": "procedure_end_datetime",
        "value": None,
    },
    "measurement": {
        "domain": "measurement", "id": "measurement_id",
        "concept": "measurement_concept_id", "source": "measurement_source_value",
        "start_date": "measurement_date", "start_datetime": "measurement_datetime",
        "end_date": None, "end_datetime": None, "value": "value_as_number",
    },
    "observation": {
        "domain": "observation", "id": "observation_id",
        "concept": "observation_concept_id", "source": "observation_source_value",
        "start_date": "observation_date", "start_datetime": "observation_datetime",
        "end_date": None, "end_datetime": None, "value": "value_as_number",
    },
}
"""The clinical event tables read, in tie-break order, and the columns each contributes."""
TABLE_ORDER = {table: k for k, table in enumerate((*EVENT_TABLES, "death"))}
DOMAIN_TABLE = {spec["domain"]: table for table, spec in EVENT_TABLES.items()}
Policy = Literal["drop", "error"]


class ConceptRule(BaseModel):
    """Rows of ``table`` with this concept id and/or source value become events ``code``."""

    model_config = ConfigDict(extra="forbid")

    table: str
    concept_id: int | None = None
    source_value: str | None = None
    code: str

    @field_validator("table")
    @classmethod
    def _known_table(cls, table: str) -> str:
        if table not in EVENT_TABLES:
            raise ValueError(f"table {table!r} is not one of {sorted(EVENT_TABLES)}")
        return table

    @field_validator("code")
    @classmethod
    def _namespaced(cls, code: str) -> str:
        import re

        if not re.match(CODE_PATTERN, code):
            raise ValueError(
                f"code {code!r} must be namespaced like 'state:progressed' or 'visit:outpatient'"
            )
        return code


class IndexSpec(BaseModel):
    """Where follow-up starts and the state every person is in at the start."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["observation_period", "concept"] = "observation_period"
    table: str | None = None
    concept_id: int | None = None
    source_value: str | None = None
    initial_state: str | None = None
    before_index: Policy = "drop"


class PersonsSpec(BaseModel):
    """How person fields the CDM lacks are filled."""

    model_config = ConfigDict(extra="forbid")

    default_site: str = "unknown"
    alive_exit: str = "censored"
    absorbing_states: list[str] = Field(default_factory=list)

    @field_validator("alive_exit")
    @classmethod
    def _known_exit(cls, exit_: str) -> str:
        if exit_ not in EXITS or exit_ in ("death", "absorbed"):
            raise ValueError(f"alive_exit {exit_!r} must be a censoring exit: {list(EXITS[2:])}")
        return exit_


class DeathSpec(BaseModel):
    """The DEATH table: exit 'death' at the death date, and optionally an event ``code``."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = None
    after_death: Policy = "drop"

    @field_validator("code")
    @classmethod
    def _namespaced(cls, code: str | None) -> str | None:
        return None if code is None else ConceptRule._namespaced(code)


class UnmappedSpec(BaseModel):
    """Rows no rule maps: ``keep`` them as ``<domain>:<concept>`` events, or ``error``."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["keep", "error"] = "keep"


class OmopMapping(BaseModel):
    """The whole mapping file."""

    model_config = ConfigDict(extra="forbid")

    index: IndexSpec = Field(default_factory=IndexSpec)
    persons: PersonsSpec = Field(default_factory=PersonsSpec)
    death: DeathSpec = Field(default_factory=DeathSpec)
    unmapped: UnmappedSpec = Field(default_factory=UnmappedSpec)
    concepts: list[ConceptRule] = Field(default_factory=list)


def _check_rules(mapping: OmopMapping, where: str) -> None:
    """Every rule names a concept or a source value; no two rules share a key."""
    seen: dict[tuple, int] = {}
    for k, rule in enumerate(mapping.concepts):
        if rule.concept_id is None and rule.source_value is None:
            raise OmopImportError(
                f"{where}: concepts[{k}] ({rule.code}) needs concept_id or source_value"
            )
        key = (rule.table, rule.concept_id, rule.source_value)
        if key in seen:
            raise OmopImportError(
                f"{where}: concepts[{seen[key]}] and concepts[{k}] both match {rule.table} "
                f"concept_id={rule.concept_id} source_value={rule.source_value!r}"
            )
        seen[key] = k
    index = mapping.index
    if index.source == "concept" and (
        index.table not in EVENT_TABLES or (index.concept_id is None and index.source_value is None)
    ):
        raise OmopImportError(
            f"{where}: index.source = 'concept' needs index.table (one of "
            f"{sorted(EVENT_TABLES)}) and index.concept_id or index.source_value"
        )


def load_mapping(mapping: str | Path | Mapping[str, Any] | OmopMapping) -> OmopMapping:
    """The mapping from a TOML file path, a dict of the same shape, or a model."""
    if isinstance(mapping, OmopMapping):
        _check_rules(mapping, "mapping")
        return mapping
    where = "mapping"
    if isinstance(mapping, str | Path):
        where = str(mapping)
        try:
            data = tomllib.loads(Path(mapping).read_text(encoding="utf-8"))
        except OSError as error:
            raise OmopImportError(f"{where}: cannot read mapping: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise OmopImportError(f"{where}: invalid TOML: {error}") from None
    else:
        data = dict(mapping)
    try:
        model = OmopMapping.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise OmopImportError(f"{where}: {field}: {first['msg']}") from None
    _check_rules(model, where)
    return model


def mapping_from_concepts(
    concepts: Mapping[str, Any] | None, codes: Sequence[str] | None = None
) -> OmopMapping:
    """The mapping that undoes the OMOP export of codes described by ``concepts``.

    ``concepts`` is a cohort manifest's ``concepts`` (code -> domain, concept_id, source_value);
    ``codes`` adds codes it lacks (they export with their namespace's defaults). Each code gets
    a rule on its exported table, concept id (when not 0) and source value; the first
    death-domain code becomes the DEATH table's event, and every death-domain code also gets an
    OBSERVATION rule for the extra death events the exporter re-routes there.
    """
    from trajectories.io.omop.tables import DOMAIN_TABLES, concept_table

    table = concept_table(sorted({*(concepts or {}), *(codes or ())}), concepts)
    rules, death_code = [], None
    for row in table.iter_rows(named=True):  # distinct codes: a handful
        concept_id = row["concept_id"] or None
        if row["domain"] == "death":
            death_code = death_code or row["code"]
            targets = ["observation"]
        else:
            targets = [DOMAIN_TABLES[row["domain"]]]
        rules += [
            ConceptRule(table=t, concept_id=concept_id, source_value=row["source_value"],
                        code=row["code"])
            for t in targets
        ]
    mapping = OmopMapping(death=DeathSpec(code=death_code), concepts=rules)
    _check_rules(mapping, "concepts")
    return mapping


def mapping_from_cohort(cohort: Cohort) -> OmopMapping:
    """:func:`mapping_from_concepts` for a cohort's manifest concepts and event codes."""
    return mapping_from_concepts(
        getattr(cohort.manifest, "concepts", None),
        cohort.events.get_column("code").unique().to_list(),
    )


def _toml_value(value: Any) -> str:
    """A TOML literal for the plain values a mapping holds (text, numbers, booleans, lists)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def mapping_to_toml(mapping: OmopMapping) -> str:
    """The mapping as TOML text that :func:`load_mapping` reads back to an equal model (unset
    optional fields are left out)."""
    data = mapping.model_dump(exclude_none=True)
    lines = []
    for section in ("index", "persons", "death", "unmapped"):
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in data[section].items()]
        lines.append("")
    for rule in data["concepts"]:
        lines.append("[[concepts]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in rule.items()]
        lines.append("")
    return "\n".join(lines)


# -- reading tables -----------------------------------------------------------------------------


def _read(source: OmopSource, table: str, required: Sequence[str],
          optional: Sequence[str | None] = ()) -> pl.DataFrame | None:
    """``table`` with the ``required`` columns and those ``optional`` ones it has (others
    null); None if the table does not exist."""
    present = source.columns(table)
    if present is None:
        return None
    missing = [c for c in required if c not in present]
    if missing:
        raise OmopImportError(
            f"{source.name}: table {table} lacks column(s) {missing}; it has {present}"
        )
    wanted = [c for c in (*required, *optional) if c is not None and c in present]
    frame = source.read(table, list(dict.fromkeys(wanted)))
    return frame.rename({c: c.lower() for c in frame.columns}).with_columns(
        pl.lit(None).alias(c) for c in optional if c is not None and c not in present
    )


def _timestamp(frame: pl.DataFrame, name: str | None) -> pl.Expr:
    """Column ``name`` as a naive microsecond timestamp (dates at midnight); null if absent."""
    if name is None or name not in frame.columns:
        return pl.lit(None, dtype=pl.Datetime("us"))
    dtype = frame.schema[name]
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone:
        column = column.dt.replace_time_zone(None)
    return column.cast(pl.Datetime("us"))


def _event_rows(source: OmopSource, table: str) -> pl.DataFrame | None:
    """One table's rows as person_id, table, concept_id, source_value, start/end (timestamp:
    the datetime if given, else the date at 00:00) and their dates, value, row id."""
    spec = EVENT_TABLES[table]
    required = [c for c in ("person_id", spec["concept"], spec["start_date"]) if c]
    optional = [spec["id"], spec["source"], spec["start_datetime"], spec["end_date"],
                spec["end_datetime"], spec["value"]]
    frame = _read(source, table, required, optional)
    if frame is None:
        return None
    nulls = [c for c in required if frame.get_column(c).null_count()]
    if nulls:
        raise OmopImportError(
            f"{source.name}: {table}.{nulls[0]} has "
            f"{frame.get_column(nulls[0]).null_count()} null value(s); it is required"
        )
    start_day = _timestamp(frame, spec["start_date"])
    end_day = _timestamp(frame, spec["end_date"])
    return frame.select(
        pl.col("person_id").cast(pl.Int64),
        pl.lit(table).alias("table"),
        pl.col(spec["concept"]).cast(pl.Int64).alias("concept_id"),
        (pl.col(spec["source"]) if spec["source"] else pl.lit(None)).cast(pl.String)
        .alias("source_value"),
        pl.coalesce(_timestamp(frame, spec["start_datetime"]), start_day).alias("start"),
        start_day.dt.truncate("1d").alias("start_day"),
        pl.coalesce(_timestamp(frame, spec["end_datetime"]), end_day).alias("end"),
        end_day.dt.truncate("1d").alias("end_day"),
        (pl.col(spec["value"]) if spec["value"] else pl.lit(None)).cast(pl.Float64)
        .alias("value"),
        (pl.col(spec["id"]) if spec["id"] else pl.int_range(pl.len())).cast(pl.Int64)
        .alias("row_id"),
    )


def _match(rows: pl.DataFrame, rules: Sequence[ConceptRule]) -> pl.Series:
    """The code of each row: rules naming both concept and source value first, then those
    naming a concept, then those naming a source value; null where none applies."""
    frame = pl.DataFrame(
        [r.model_dump() for r in rules],
        schema={"table": pl.String, "concept_id": pl.Int64, "source_value": pl.String,
                "code": pl.String},
    )
    keyed = rows.select("table", "concept_id", "source_value")
    found = []
    for keys, subset in (
        (["table", "concept_id", "source_value"],
         pl.col("concept_id").is_not_null() & pl.col("source_value").is_not_null()),
        (["table", "concept_id"], pl.col("source_value").is_null()),
        (["table", "source_value"], pl.col("concept_id").is_null()),
    ):
        chosen = frame.filter(subset).select(*keys, "code")
        found.append(
            keyed.join(chosen, on=keys, how="left", maintain_order="left").get_column("code")
        )
    return pl.select(pl.coalesce(found)).to_series()


def _unmapped_code() -> pl.Expr:
    """``<domain>:<concept_id>``, or ``<domain>:0/<source_value>`` when the concept is 0."""
    domain = pl.col("table").replace_strict(
        {t: s["domain"] for t, s in EVENT_TABLES.items()}, return_dtype=pl.String
    )
    name = (
        pl.when(pl.col("concept_id") != 0).then(pl.col("concept_id").cast(pl.String))
        .otherwise("0/" + pl.col("source_value").fill_null(""))
    )
    return domain + ":" + name


def _persons(source: OmopSource) -> pl.DataFrame:
    """person_id, site, birth_date, sex from PERSON (and CARE_SITE for the site name)."""
    person = _read(
        source, "person", ["person_id", "year_of_birth"],
        ["gender_concept_id", "gender_source_value", "month_of_birth", "day_of_birth",
         "birth_datetime", "care_site_id"],
    )
    if person is None:
        raise OmopImportError(f"{source.name}: table person not found")
    sites = _read(source, "care_site", ["care_site_id"],
                  ["care_site_name", "care_site_source_value"])
    birth = pl.coalesce(
        _timestamp(person, "birth_datetime").dt.date(),
        pl.date(pl.col("year_of_birth"), pl.col("month_of_birth").fill_null(1),
                pl.col("day_of_birth").fill_null(1)),
    )
    gender = pl.col("gender_concept_id").cast(pl.Int64).replace_strict(
        GENDERS, default=None, return_dtype=pl.String
    )
    by_text = pl.col("gender_source_value").cast(pl.String).str.strip_chars().str.to_uppercase() \
        .replace_strict(SEX_VALUES, default=None, return_dtype=pl.String)
    out = person.select(
        pl.col("person_id").cast(pl.Int64),
        pl.col("care_site_id").cast(pl.Int64),
        birth.alias("birth_date"),
        pl.coalesce(gender, by_text).alias("sex"),
    )
    if sites is not None:
        names = sites.select(
            pl.col("care_site_id").cast(pl.Int64),
            pl.coalesce(pl.col("care_site_name").cast(pl.String),
                        pl.col("care_site_source_value").cast(pl.String)).alias("site"),
        )
        out = out.join(names, on="care_site_id", how="left", maintain_order="left")
    else:
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias("site"))
    return out.with_columns(
        pl.coalesce("site", pl.col("care_site_id").cast(pl.String)).alias("site")
    ).drop("care_site_id")


def _observation(source: OmopSource) -> pl.DataFrame:
    """person_id -> first observation start and last observation end."""
    periods = _read(source, "observation_period",
                    ["person_id", "observation_period_start_date", "observation_period_end_date"])
    if periods is None:
        return pl.DataFrame(schema={"person_id": pl.Int64, "obs_start": pl.Date,
                                    "obs_end": pl.Date})
    return periods.group_by(pl.col("person_id").cast(pl.Int64)).agg(
        pl.col("observation_period_start_date").cast(pl.Date).min().alias("obs_start"),
        pl.col("observation_period_end_date").cast(pl.Date).max().alias("obs_end"),
    )


def _deaths(source: OmopSource) -> pl.DataFrame:
    """person_id -> death timestamp (datetime, else date at 00:00) and death day."""
    death = _read(source, "death", ["person_id", "death_date"], ["death_datetime"])
    if death is None:
        return pl.DataFrame(schema={"person_id": pl.Int64, "death": pl.Datetime("us"),
                                    "death_day": pl.Datetime("us")})
    day = _timestamp(death, "death_date")
    return death.select(
        pl.col("person_id").cast(pl.Int64),
        pl.coalesce(_timestamp(death, "death_datetime"), day).alias("death"),
        day.dt.truncate("1d").alias("death_day"),
    ).group_by("person_id").agg(pl.col("death").min(), pl.col("death_day").min())


# -- assembling the cohort ----------------------------------------------------------------------


def _top_unmapped(unmapped: pl.DataFrame, limit: int = 20) -> list[dict[str, Any]]:
    """The most frequent unmapped (table, concept_id, source_value) with their row counts."""
    return (
        unmapped.select("table", "concept_id", "source_value", "rows")
        .sort(["rows", "table", "concept_id"], descending=[True, False, False])
        .head(limit)
        .to_dicts()
    )


def _concepts(mapping: OmopMapping, unmapped: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Manifest concepts (code -> domain, concept id, source value) for re-export."""
    concepts: dict[str, dict[str, Any]] = {}
    for rule in mapping.concepts:
        concepts.setdefault(rule.code, {"domain": EVENT_TABLES[rule.table]["domain"],
                                        "concept_id": rule.concept_id or 0,
                                        "source_value": rule.source_value})
    if mapping.death.code:
        entry = concepts.setdefault(mapping.death.code, {"concept_id": 0, "source_value": None})
        entry["domain"] = "death"
    for row in unmapped.iter_rows(named=True):  # distinct unmapped keys: a short list
        concepts.setdefault(row["code"], {
            "domain": EVENT_TABLES[row["table"]]["domain"], "concept_id": row["concept_id"],
            "source_value": row["source_value"]})
    return concepts


def from_omop(
    source: str | Path | OmopSource,
    mapping: str | Path | Mapping[str, Any] | OmopMapping,
    *,
    schema: str | None = None,
    resolution: Literal["day", "datetime"] = "day",
) -> Cohort:
    """A Cohort from an OMOP CDM v5.4 database and a mapping (see the module docstring).

    ``source`` is a DuckDB file, a directory of ``<table>.parquet`` files, or any
    :class:`OmopSource`; ``schema`` is the DuckDB schema holding the CDM tables. With
    ``resolution="day"`` times are whole days since the index date (the CDM's dates); with
    ``"datetime"`` the ``*_datetime`` columns are used where filled (dates at 00:00 elsewhere),
    except for the end of observation, which the CDM holds only as a date. Persons without an
    index (no observation period, or no index concept) are left out and counted.
    """
    if resolution not in ("day", "datetime"):
        raise OmopImportError(f"resolution: expected 'day' or 'datetime', got {resolution!r}")
    rules = load_mapping(mapping)
    reader = open_source(source, schema)
    try:
        return _build(reader, rules, resolution)
    finally:
        if reader is not source:
            reader.close()


def _index_dates(index: IndexSpec, rows: pl.DataFrame, observation: pl.DataFrame) -> pl.DataFrame:
    """person_id -> index date: first observation start, or first day of the index concept."""
    if index.source == "observation_period":
        return observation.select("person_id", pl.col("obs_start").alias("index_date"))
    hit = pl.col("table") == index.table
    if index.concept_id is not None:
        hit = hit & (pl.col("concept_id") == index.concept_id)
    if index.source_value is not None:
        hit = hit & (pl.col("source_value") == index.source_value)
    return rows.filter(hit).group_by("person_id").agg(
        pl.col("start_day").min().dt.date().alias("index_date"))


def _coded(rows: pl.DataFrame, mapping: OmopMapping, what: str) -> tuple[pl.DataFrame, ...]:
    """``rows`` with their cohort code, and the unmapped ones (coded by :func:`_unmapped_code`);
    raises listing the unmapped rows if the mapping refuses them.

    Codes are worked out once per distinct (table, concept, source value), then joined on.
    """
    keys = ["table", "concept_id", "source_value"]
    distinct = rows.group_by(keys).agg(pl.len().alias("rows"))
    mapped = _match(distinct, mapping.concepts) if mapping.concepts else pl.Series(
        "code", [None] * distinct.height, dtype=pl.String)
    distinct = distinct.with_columns(mapped.alias("code"))
    unmapped = distinct.filter(pl.col("code").is_null()).with_columns(
        _unmapped_code().alias("code"))
    if unmapped.height and mapping.unmapped.policy == "error":
        by_table = unmapped.group_by("table").agg(pl.col("rows").sum()).sort("table").rows()
        raise OmopImportError(
            f"{what}: {unmapped['rows'].sum()} row(s) match no mapping rule (unmapped.policy = "
            f"'error'): " + ", ".join(f"{t} {n}" for t, n in by_table)
            + "; most frequent: " + "; ".join(
                f"{r['table']} concept_id={r['concept_id']} source_value={r['source_value']!r} "
                f"({r['rows']} rows)" for r in _top_unmapped(unmapped, 5))
        )
    codes = distinct.select(*keys, pl.coalesce("code", _unmapped_code()).alias("code"))
    coded = rows.join(codes, on=keys, how="left", nulls_equal=True, maintain_order="left")
    return coded, unmapped


def _death_rows(deaths: pl.DataFrame, code: str) -> pl.DataFrame:
    """One event row ``code`` per DEATH row, shaped like the clinical rows."""
    return deaths.select(
        "person_id", pl.lit("death").alias("table"), pl.lit(0, pl.Int64).alias("concept_id"),
        pl.lit(None, pl.String).alias("source_value"), pl.col("death").alias("start"),
        pl.col("death_day").alias("start_day"), pl.lit(None, pl.Datetime("us")).alias("end"),
        pl.lit(None, pl.Datetime("us")).alias("end_day"),
        pl.lit(None, pl.Float64).alias("value"), pl.lit(0, pl.Int64).alias("row_id"),
        pl.lit(code).alias("code"),
    )


def _refuse(rows: pl.DataFrame, label: str, what: str) -> None:
    by_table = rows.group_by("table").len().sort("table").rows()
    raise OmopImportError(
        f"{what}: {rows.height} row(s) {label}: " + ", ".join(f"{t} {n}" for t, n in by_table)
        + f"; persons {rows.get_column('person_id').unique().sort().head(5).to_list()}"
    )


def _build(source: OmopSource, mapping: OmopMapping, resolution: str) -> Cohort:
    what = f"OMOP {source.name}"
    persons = _persons(source)
    tables = {t: _event_rows(source, t) for t in EVENT_TABLES}
    for rule in mapping.concepts:
        if tables[rule.table] is None:
            raise OmopImportError(
                f"{source.name}: table {rule.table} not found, but the mapping maps "
                f"{rule.code} from it"
            )
    rows = pl.concat([t for t in tables.values() if t is not None])
    observation = _observation(source)

    strangers = rows.join(persons.select("person_id"), on="person_id", how="anti").height
    persons = persons.join(_index_dates(mapping.index, rows, observation),
                           on="person_id", how="left")
    no_index = persons.filter(pl.col("index_date").is_null())
    persons = persons.filter(pl.col("index_date").is_not_null())
    if persons.height == 0:
        raise OmopImportError(
            f"{what}: no person has an index date ({mapping.index.source}); "
            f"{no_index.height} person(s) read"
        )
    rows, unmapped = _coded(
        rows.join(persons.select("person_id"), on="person_id", how="semi"), mapping, what)

    # times: days since the index date's midnight, from dates or datetimes
    deaths = _deaths(source).join(persons.select("person_id"), on="person_id", how="semi")
    if mapping.death.code:
        rows = pl.concat([rows, _death_rows(deaths, mapping.death.code)], how="vertical_relaxed")
    origin = pl.col("index_date").cast(pl.Datetime("us"))
    suffix = "" if resolution == "datetime" else "_day"

    def days(column: str) -> pl.Expr:
        return (pl.col(column + suffix) - origin).dt.total_microseconds() / MICROSECONDS_PER_DAY

    persons = persons.join(deaths, on="person_id", how="left").join(
        observation.select("person_id", pl.col("obs_end").cast(pl.Datetime("us"))),
        on="person_id", how="left",
    ).with_columns(
        days("death").alias("death_time"),
        ((pl.col("obs_end") - origin).dt.total_microseconds() / MICROSECONDS_PER_DAY)
        .alias("obs_end_time"),
    )
    dead_early = persons.filter(pl.col("death_time") < 0).get_column("person_id")
    if dead_early.len():
        raise OmopImportError(
            f"{what}: {dead_early.len()} person(s) die before their index date (person_id "
            f"{dead_early.head(5).to_list()})"
        )
    # ties at one instant: states, then visits, then other tables in TABLE_ORDER, then by id;
    # the initial state comes before anything else on the index day (day resolution)
    rank = (
        pl.when(pl.col("code").str.starts_with(STATE_PREFIX)).then(0)
        .when(pl.col("table") == "visit_occurrence").then(1).otherwise(2)
    )
    tie = (rank * len(TABLE_ORDER) + pl.col("table").replace_strict(
        TABLE_ORDER, return_dtype=pl.Int64)) * 2**40 + pl.col("row_id")
    events = (
        rows.join(persons.select("person_id", "index_date", "death_time"), on="person_id")
        .with_columns(days("start").alias("time"), days("end").alias("end_time"),
                      tie.alias("_tie"))
        .sort(["person_id", "time", "start", "_tie"])
        .with_columns(initial_state_row().alias("_initial"))
        .sort([pl.col("person_id"), pl.col("time"), ~pl.col("_initial")], maintain_order=True)
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("__order__"))
    )
    late = (pl.col("time") > pl.col("death_time")).fill_null(False)
    before, after = events.filter(pl.col("time") < 0), events.filter(late)
    if before.height and mapping.index.before_index == "error":
        _refuse(before, "before the index date (index.before_index)", what)
    if after.height and mapping.death.after_death == "error":
        _refuse(after, "after death (death.after_death)", what)
    events = _with_initial_state(
        events.filter((pl.col("time") >= 0) & ~late), persons, mapping.index.initial_state, what)

    persons, beyond = _follow_up(persons, events, mapping.persons)
    report = {
        "source": source.name,
        "resolution": resolution,
        "index": mapping.index.source,
        "rows_read": {t: (0 if f is None else f.height) for t, f in tables.items()},
        "persons_read": persons.height + no_index.height,
        "persons_without_index": no_index.height,
        "rows_of_persons_not_in_person_table": strangers,
        "unmapped": {
            "rows": int(unmapped["rows"].sum()),
            "by_table": dict(unmapped.group_by("table").agg(pl.col("rows").sum())
                             .sort("table").rows()),
            "policy": mapping.unmapped.policy,
            "most_frequent": _top_unmapped(unmapped),
        },
        "dropped": {"before_index": before.height, "after_death": after.height},
        "persons_with_events_after_observation_end": beyond,
    }
    parts = [events.select("person_id", "time", "end_time", "code", "value", "__order__")]
    return assemble_cohort(
        persons, parts, "from_omop", what, source=source.name,
        concepts=_concepts(mapping, unmapped), omop_import=report,
    )


def initial_state_row() -> pl.Expr:
    """True on each person's first state row at time 0 (rows sorted by person and time)."""
    at_zero = pl.col("code").str.starts_with(STATE_PREFIX) & (pl.col("time") == 0)
    return at_zero & (at_zero.cast(pl.Int32).cum_sum().over("person_id") == 1)


def _with_initial_state(
    events: pl.DataFrame, persons: pl.DataFrame, initial_state: str | None, what: str
) -> pl.DataFrame:
    """``events`` plus ``state:<initial_state>`` at time 0 for persons with no state there,
    first at that instant; without ``initial_state`` such persons are refused."""
    started = events.filter(
        (pl.col("time") == 0) & pl.col("code").str.starts_with(STATE_PREFIX)
    ).select("person_id")
    missing = persons.select("person_id").join(started, on="person_id", how="anti")
    if missing.height and not initial_state:
        ids = missing.get_column("person_id")
        raise OmopImportError(
            f"{what}: {ids.len()} person(s) have no state at the index date (e.g. person_id "
            f"{ids.head(5).to_list()}); map a state there or set index.initial_state"
        )
    if not missing.height:
        return events
    initial = missing.select(
        "person_id", pl.lit(0.0).alias("time"),
        pl.lit(STATE_PREFIX + str(initial_state)).alias("code"),
        pl.lit(-1, dtype=pl.Int64).alias("__order__"),
    )  # __order__ -1: first at time 0 once the cohort's events are sorted
    return pl.concat([events, initial], how="diagonal_relaxed")


def _follow_up(
    persons: pl.DataFrame, events: pl.DataFrame, spec: PersonsSpec
) -> tuple[pl.DataFrame, int]:
    """The persons table: follow-up ends at death, else at the later of the last observation
    end and the last event; the exit is 'death', 'absorbed' (last state absorbing) or the
    mapping's censoring exit. Also the number of persons with events after observation end."""
    last = events.group_by("person_id").agg(
        pl.col("time").max().alias("last_time"),
        pl.col("code").filter(pl.col("code").str.starts_with(STATE_PREFIX)).last()
        .str.strip_prefix(STATE_PREFIX).alias("last_state"),
    )
    persons = persons.join(last, on="person_id", how="left")
    died = pl.col("death_time").is_not_null()
    beyond = persons.filter(~died & (pl.col("last_time") > pl.col("obs_end_time"))).height
    persons = persons.with_columns(
        pl.when(died).then(pl.col("death_time"))
        .otherwise(pl.max_horizontal("obs_end_time", "last_time", pl.lit(0.0)))
        .alias("followup_end"),
        pl.when(died).then(pl.lit("death"))
        .when(pl.col("last_state").is_in(spec.absorbing_states)).then(pl.lit("absorbed"))
        .otherwise(pl.lit(spec.alive_exit)).alias("exit"),
        pl.col("site").fill_null(spec.default_site),
    )
    return persons.select(pl.col(c).cast(t) for c, t in PERSON_COLUMNS.items()), beyond
