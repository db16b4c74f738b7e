"""The CDM tables an import reads, as uniform frames: PERSON (with CARE_SITE), the observation
periods, DEATH, and one row per clinical event (table, concept, source value, start/end, value)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from trajectories.errors import OmopImportError
from trajectories.io.omop.concepts import GENDERS
from trajectories.io.omop.read.sources import OmopSource

SEX_VALUES = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}

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


def read_columns(source: OmopSource, table: str, required: Sequence[str],
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


def as_timestamp(frame: pl.DataFrame, name: str | None) -> pl.Expr:
    """Column ``name`` as a naive microsecond timestamp (dates at midnight); null if absent."""
    if name is None or name not in frame.columns:
        return pl.lit(None, dtype=pl.Datetime("us"))
    dtype = frame.schema[name]
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone:
        column = column.dt.replace_time_zone(None)
    return column.cast(pl.Datetime("us"))


def read_events(source: OmopSource, table: str) -> pl.DataFrame | None:
    """One table's rows as person_id, table, concept_id, source_value, start/end (timestamp:
    the datetime if given, else the date at 00:00) and their dates, value, row id."""
    spec = EVENT_TABLES[table]
    required = [c for c in ("person_id", spec["concept"], spec["start_date"]) if c]
    optional = [spec["id"], spec["source"], spec["start_datetime"], spec["end_date"],
                spec["end_datetime"], spec["value"]]
    frame = read_columns(source, table, required, optional)
    if frame is None:
        return None
    nulls = [c for c in required if frame.get_column(c).null_count()]
    if nulls:
        raise OmopImportError(
            f"{source.name}: {table}.{nulls[0]} has "
            f"{frame.get_column(nulls[0]).null_count()} null value(s); it is required"
        )
    start_day = as_timestamp(frame, spec["start_date"])
    end_day = as_timestamp(frame, spec["end_date"])
    return frame.select(
        pl.col("person_id").cast(pl.Int64),
        pl.lit(table).alias("table"),
        pl.col(spec["concept"]).cast(pl.Int64).alias("concept_id"),
        (pl.col(spec["source"]) if spec["source"] else pl.lit(None)).cast(pl.String)
        .alias("source_value"),
        pl.coalesce(as_timestamp(frame, spec["start_datetime"]), start_day).alias("start"),
        start_day.dt.truncate("1d").alias("start_day"),
        pl.coalesce(as_timestamp(frame, spec["end_datetime"]), end_day).alias("end"),
        end_day.dt.truncate("1d").alias("end_day"),
        (pl.col(spec["value"]) if spec["value"] else pl.lit(None)).cast(pl.Float64)
        .alias("value"),
        (pl.col(spec["id"]) if spec["id"] else pl.int_range(pl.len())).cast(pl.Int64)
        .alias("row_id"),
    )


def read_persons(source: OmopSource) -> pl.DataFrame:
    """person_id, site, birth_date, sex from PERSON (and CARE_SITE for the site name)."""
    person = read_columns(
        source, "person", ["person_id", "year_of_birth"],
        ["gender_concept_id", "gender_source_value", "month_of_birth", "day_of_birth",
         "birth_datetime", "care_site_id"],
    )
    if person is None:
        raise OmopImportError(f"{source.name}: table person not found")
    sites = read_columns(source, "care_site", ["care_site_id"],
                  ["care_site_name", "care_site_source_value"])
    birth = pl.coalesce(
        as_timestamp(person, "birth_datetime").dt.date(),
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


def read_observation(source: OmopSource) -> pl.DataFrame:
    """person_id -> first observation start and last observation end."""
    periods = read_columns(source, "observation_period",
                    ["person_id", "observation_period_start_date", "observation_period_end_date"])
    if periods is None:
        return pl.DataFrame(schema={"person_id": pl.Int64, "obs_start": pl.Date,
                                    "obs_end": pl.Date})
    return periods.group_by(pl.col("person_id").cast(pl.Int64)).agg(
        pl.col("observation_period_start_date").cast(pl.Date).min().alias("obs_start"),
        pl.col("observation_period_end_date").cast(pl.Date).max().alias("obs_end"),
    )


def read_deaths(source: OmopSource) -> pl.DataFrame:
    """person_id -> death timestamp (datetime, else date at 00:00) and death day."""
    death = read_columns(source, "death", ["person_id", "death_date"], ["death_datetime"])
    if death is None:
        return pl.DataFrame(schema={"person_id": pl.Int64, "death": pl.Datetime("us"),
                                    "death_day": pl.Datetime("us")})
    day = as_timestamp(death, "death_date")
    return death.select(
        pl.col("person_id").cast(pl.Int64),
        pl.coalesce(as_timestamp(death, "death_datetime"), day).alias("death"),
        day.dt.truncate("1d").alias("death_day"),
    ).group_by("person_id").agg(pl.col("death").min(), pl.col("death_day").min())
