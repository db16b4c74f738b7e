"""A cohort as OMOP CDM v5.4 tables (polars frames), built block by block of persons.

Each block of persons yields the person-level tables for those persons only, so a writer can
stream a million persons without holding every CDM table in memory. Ids are running numbers
per table in (person order, event time) order: the same cohort gives the same ids whatever the
block size. Every event row lands in exactly one CDM row; unmapped codes keep concept 0 and
their source value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl

from trajectories.cohort import Cohort, same_person_as_previous
from trajectories.io.omop.spec import EXPORT_TABLES, OmopError, cdm_spec, polars_dtype

EHR = 32817
"""Type concept 'EHR': the default provenance of every record."""
GENDER_CONCEPTS = {"M": 8507, "F": 8532}
CDM_VERSION_CONCEPT = 756265
"""'OMOP CDM Version 5.4.0' (cdm_source.cdm_version_concept_id)."""
VISIT_CONCEPTS = {
    "inpatient": 9201,
    "ip": 9201,
    "hospitalisation": 9201,
    "hospitalization": 9201,
    "outpatient": 9202,
    "op": 9202,
    "ambulatory": 9202,
    "clinic": 9202,
    "emergency": 9203,
    "emergency_room": 9203,
    "er": 9203,
    "ed": 9203,
    "er_inpatient": 262,
    "home": 581476,
    "telehealth": 5083,
    "laboratory": 32036,
    "lab": 32036,
    "pharmacy": 581458,
}
"""Visit concept by visit type name, used when the scenario maps a visit to concept 0."""
NAMESPACE_DOMAINS = {
    "state": "condition",
    "condition": "condition",
    "visit": "visit",
    "measurement": "measurement",
    "drug": "drug",
    "procedure": "procedure",
    "observation": "observation",
    "death": "death",
}
"""Default domain of an event code by its namespace; any other namespace -> observation."""
DOMAIN_TABLES = {
    "condition": "condition_occurrence",
    "observation": "observation",
    "procedure": "procedure_occurrence",
    "measurement": "measurement",
    "drug": "drug_exposure",
    "visit": "visit_occurrence",
    "death": "death",
}
EVENT_TABLES = (
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
)
"""Tables with a running id per event row (death has no id)."""
INT32_MAX = 2**31 - 1
MICROSECONDS_PER_DAY = 86_400_000_000

CONCEPT_SCHEMA = {
    "code": pl.String(),
    "domain": pl.String(),
    "concept_id": pl.Int64(),
    "source_value": pl.String(),
    "unit_concept_id": pl.Int64(),
    "unit_source_value": pl.String(),
    "type_concept_id": pl.Int64(),
}


# -- concepts ---------------------------------------------------------------------------------

def concept_table(codes: list[str], concepts: dict[str, Any] | None) -> pl.DataFrame:
    """One row per event code: domain, concept and source value, units, type concept.

    ``concepts`` is the manifest's ``concepts`` entry (code -> mapping); codes it lacks, or a
    cohort without one, default by namespace with concept 0 and the code's name as source value.
    Visits mapped to concept 0 get the standard visit concept of their type name if known.
    """
    concepts = concepts or {}
    rows = []
    for code in sorted(set(codes)):  # distinct codes: a handful, not rows
        namespace, _, name = code.partition(":")
        mapping = concepts.get(code) or {}
        if not isinstance(mapping, dict):
            raise OmopError(f"manifest concepts[{code!r}]: expected a table, got {mapping!r}")
        domain = mapping.get("domain") or NAMESPACE_DOMAINS.get(namespace, "observation")
        if domain not in DOMAIN_TABLES:
            raise OmopError(
                f"manifest concepts[{code!r}].domain: {domain!r} is not one of "
                f"{sorted(DOMAIN_TABLES)}"
            )
        concept_id = int(mapping.get("concept_id") or 0)
        if domain == "visit" and concept_id == 0:
            concept_id = VISIT_CONCEPTS.get(name.lower().replace("-", "_").replace(" ", "_"), 0)
        unit_source = mapping.get("unit_source_value")
        unit_concept = mapping.get("unit_concept_id")
        if unit_concept is None and unit_source is not None:
            unit_concept = 0  # a unit is known but not mapped
        rows.append(
            {
                "code": code,
                "domain": domain,
                "concept_id": concept_id,
                "source_value": mapping.get("source_value") or name or code,
                "unit_concept_id": unit_concept,
                "unit_source_value": unit_source,
                "type_concept_id": int(mapping.get("type_concept_id") or EHR),
            }
        )
    return pl.DataFrame(rows, schema=CONCEPT_SCHEMA)


# -- conforming to the specification -----------------------------------------------------------

def conform(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """``frame`` with exactly the spec's columns of ``table`` in DDL order and types.

    Missing columns become typed nulls; text longer than ``varchar(N)`` is cut to N characters;
    an integer outside the 32-bit range of the DDL raises :class:`OmopError`.
    """
    if not frame.columns:
        return pl.DataFrame(schema={f.name: polars_dtype(f) for f in cdm_spec()[table]})
    columns = []
    for field in cdm_spec()[table]:
        dtype = polars_dtype(field)
        if field.name not in frame.columns:
            columns.append(pl.lit(None, dtype=dtype).alias(field.name))
            continue
        column = pl.col(field.name).cast(dtype, strict=False)
        if field.varchar_length is not None:
            column = column.str.slice(0, field.varchar_length)
        columns.append(column)
    out = frame.select(columns)
    for field in cdm_spec()[table]:
        if field.name in frame.columns and field.datatype == "integer":
            lost = out.get_column(field.name).null_count() - frame.get_column(
                field.name
            ).null_count()
            if lost:
                raise OmopError(
                    f"{table}.{field.name}: {lost} value(s) outside the 32-bit integer range "
                    "of the OMOP DDL"
                )
    return out


# -- person-level building blocks -----------------------------------------------------------

def _at(days: pl.Expr) -> pl.Expr:
    """index_date + ``days`` (float) as a timestamp, truncated to the microsecond."""
    micros = (days * MICROSECONDS_PER_DAY).floor().cast(pl.Int64)
    return pl.col("index_date").cast(pl.Datetime("us")) + pl.duration(microseconds=micros)


def _birth_columns(persons: pl.DataFrame) -> list[pl.Expr]:
    """Year/month/day/datetime of birth; an 'age' covariate estimates a missing birth year."""
    birth = pl.col("birth_date")
    year = birth.dt.year()
    missing = persons.get_column("birth_date").null_count()
    if missing:
        if "age" not in persons.columns or not persons.schema["age"].is_numeric():
            ids = persons.filter(birth.is_null()).get_column("person_id").head(5).to_list()
            raise OmopError(
                f"persons.birth_date: {missing} null value(s) (person_id {ids}...); OMOP "
                "person.year_of_birth is required and there is no numeric 'age' covariate to "
                "estimate it from"
            )
        estimated = (
            pl.col("index_date").cast(pl.Datetime("us"))
            - pl.duration(microseconds=(pl.col("age") * 365.25 * MICROSECONDS_PER_DAY).cast(
                pl.Int64))
        ).dt.year()
        year = pl.coalesce(year, estimated)
    return [
        year.alias("year_of_birth"),
        birth.dt.month().alias("month_of_birth"),
        birth.dt.day().alias("day_of_birth"),
        birth.cast(pl.Datetime("us")).alias("birth_datetime"),
    ]


def _person(persons: pl.DataFrame) -> pl.DataFrame:
    return persons.select(
        "person_id",
        pl.col("sex").replace_strict(GENDER_CONCEPTS, default=0, return_dtype=pl.Int32)
        .fill_null(0).alias("gender_concept_id"),
        *_birth_columns(persons),
        pl.lit(0).alias("race_concept_id"),
        pl.lit(0).alias("ethnicity_concept_id"),
        pl.col("care_site_id"),
        pl.col("person_id").cast(pl.String).alias("person_source_value"),
        pl.col("sex").alias("gender_source_value"),
        pl.lit(0).alias("gender_source_concept_id"),
        pl.lit(0).alias("race_source_concept_id"),
        pl.lit(0).alias("ethnicity_source_concept_id"),
    )


def _observation_period(persons: pl.DataFrame, first_id: int) -> pl.DataFrame:
    return persons.select(
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_id).alias("observation_period_id"),
        "person_id",
        pl.col("index_date").alias("observation_period_start_date"),
        _at(pl.col("followup_end")).dt.date().alias("observation_period_end_date"),
        pl.lit(EHR).alias("period_type_concept_id"),
    )


def _route(events: pl.DataFrame, persons: pl.DataFrame, concepts: pl.DataFrame) -> pl.DataFrame:
    """Events (numbered in block order) with their person's index date and site and the CDM
    domain they go to.

    Death-domain events after a person's first one are re-routed to OBSERVATION, so that no
    row is lost while DEATH keeps one row per person.
    """
    domains = dict(zip(concepts["code"], concepts["domain"], strict=True))
    rows = (
        events.select("person_id", "time", "end_time", "code", "value")
        .with_row_index("_row")
        .join(
            persons.select("person_id", "index_date", "care_site_id"),
            on="person_id",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            pl.col("code").replace_strict(domains, return_dtype=pl.String).alias("domain")
        )
    )
    deaths = rows.filter(pl.col("domain") == "death")
    later = deaths.filter(~pl.col("person_id").is_first_distinct()).get_column("_row")
    if later.len():
        rows = rows.with_columns(
            pl.when(pl.col("_row").is_in(later.implode()))
            .then(pl.lit("observation"))
            .otherwise(pl.col("domain"))
            .alias("domain")
        )
    return rows


def _described(rows: pl.DataFrame, concepts: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with their concept columns and start/end timestamps and dates."""
    return (
        rows.join(concepts.drop("domain"), on="code", how="left", maintain_order="left")
        .with_columns(
            _at(pl.col("time")).alias("start_datetime"),
            _at(pl.col("end_time")).alias("end_datetime"),
        )
        .with_columns(
            pl.col("start_datetime").dt.date().alias("start_date"),
            pl.col("end_datetime").dt.date().alias("end_date"),
        )
    )


def _link_visits(others: pl.DataFrame, visits: pl.DataFrame) -> pl.Series:
    """visit_occurrence_id of the visit of the same person covering each event's time.

    Among covering visits the one that started last wins; if it does not cover, the visit
    ending last among those already started is the only candidate. One as-of join, no loops.
    """
    spans = (
        visits.select(
            "person_id",
            pl.col("time").alias("visit_start"),
            pl.coalesce("end_time", "time").alias("visit_end"),
            "visit_occurrence_id",
        )
        .with_columns(pl.col("visit_end").cum_max().over("person_id").alias("longest_end"))
        .with_columns(
            pl.when(pl.col("visit_end") == pl.col("longest_end"))
            .then(pl.col("visit_occurrence_id"))
            .otherwise(None)
            .forward_fill()
            .over("person_id")
            .alias("longest_id")
        )
    )
    # both sides are in time order within each person, which is all a grouped as-of join needs
    found = others.select("person_id", "time").join_asof(
        spans,
        left_on="time",
        right_on="visit_start",
        by="person_id",
        strategy="backward",
        check_sortedness=False,
    )
    time = pl.col("time")
    return found.select(
        pl.when(pl.col("visit_end") >= time)
        .then(pl.col("visit_occurrence_id"))
        .when(pl.col("longest_end") >= time)
        .then(pl.col("longest_id"))
        .otherwise(None)
        .alias("visit_occurrence_id")
    ).get_column("visit_occurrence_id")


def _event_id(name: str, first_id: int) -> pl.Expr:
    return (pl.int_range(pl.len(), dtype=pl.Int64) + first_id).alias(name)


def _common(prefix: str, date: str) -> list[pl.Expr | str]:
    """The columns every event table shares: person, concept, start date and time, type,
    visit, source value and source concept (0: no source vocabulary)."""
    return [
        "person_id",
        pl.col("concept_id").alias(f"{prefix}_concept_id"),
        pl.col("start_date").alias(f"{date}_date"),
        pl.col("start_datetime").alias(f"{date}_datetime"),
        pl.col("type_concept_id").alias(f"{prefix}_type_concept_id"),
        "visit_occurrence_id",
        pl.col("source_value").alias(f"{prefix}_source_value"),
        pl.lit(0).alias(f"{prefix}_source_concept_id"),
    ]


def _death(persons: pl.DataFrame, deaths: pl.DataFrame) -> pl.DataFrame:
    """One row per person who died (exit 'death') or has a death-domain event."""
    causes = deaths.select(
        "person_id",
        pl.col("time").alias("cause_time"),
        pl.col("concept_id").alias("cause_concept_id"),
        pl.col("source_value").alias("cause_source_value"),
        pl.col("type_concept_id").alias("death_type_concept_id"),
    )
    joined = persons.select("person_id", "index_date", "followup_end", "exit").join(
        causes, on="person_id", how="left", maintain_order="left"
    )
    died = pl.col("exit") == "death"
    return joined.filter(died | pl.col("cause_time").is_not_null()).select(
        "person_id",
        _at(pl.when(died).then(pl.col("followup_end")).otherwise(pl.col("cause_time")))
        .alias("death_datetime"),
        pl.col("death_type_concept_id").fill_null(EHR),
        "cause_concept_id",
        "cause_source_value",
        pl.when(pl.col("cause_time").is_not_null()).then(pl.lit(0)).alias(
            "cause_source_concept_id"
        ),
    ).with_columns(pl.col("death_datetime").dt.date().alias("death_date"))


def block_tables(
    persons: pl.DataFrame,
    events: pl.DataFrame,
    concepts: pl.DataFrame,
    first_ids: dict[str, int],
) -> dict[str, pl.DataFrame]:
    """The person-level CDM tables of one block of persons (and only their events).

    ``persons`` carries ``care_site_id``; ``events`` are these persons' events in person then
    time order; ``first_ids`` gives each id-carrying table's first id for this block.
    """
    rows = _route(events, persons, concepts)
    domain = pl.col("domain")
    visits = rows.filter(domain == "visit").with_columns(
        _event_id("visit_occurrence_id", first_ids["visit_occurrence"])
    )
    others = rows.filter(domain != "visit")
    others = others.with_columns(_link_visits(others, visits))
    visits = _described(visits, concepts)
    by_domain = {
        name: _described(others.filter(domain == name), concepts)
        for name in DOMAIN_TABLES
        if name != "visit"
    }

    tables = {
        "person": _person(persons),
        "observation_period": _observation_period(persons, first_ids["observation_period"]),
        "visit_occurrence": visits.select(
            "visit_occurrence_id",
            "person_id",
            pl.col("concept_id").alias("visit_concept_id"),
            pl.col("start_date").alias("visit_start_date"),
            pl.col("start_datetime").alias("visit_start_datetime"),
            pl.col("end_date").fill_null(pl.col("start_date")).alias("visit_end_date"),
            pl.col("end_datetime").fill_null(pl.col("start_datetime"))
            .alias("visit_end_datetime"),
            pl.col("type_concept_id").alias("visit_type_concept_id"),
            "care_site_id",
            pl.col("source_value").alias("visit_source_value"),
            pl.lit(0).alias("visit_source_concept_id"),
            pl.when(same_person_as_previous())
            .then(pl.col("visit_occurrence_id").shift(1))
            .alias("preceding_visit_occurrence_id"),
        ),
        "condition_occurrence": by_domain["condition"].select(
            _event_id("condition_occurrence_id", first_ids["condition_occurrence"]),
            *_common("condition", "condition_start"),
            pl.col("end_date").alias("condition_end_date"),
            pl.col("end_datetime").alias("condition_end_datetime"),
        ),
        "drug_exposure": by_domain["drug"].select(
            _event_id("drug_exposure_id", first_ids["drug_exposure"]),
            *_common("drug", "drug_exposure_start"),
            pl.col("end_date").fill_null(pl.col("start_date")).alias("drug_exposure_end_date"),
            pl.col("end_datetime").fill_null(pl.col("start_datetime"))
            .alias("drug_exposure_end_datetime"),
            pl.col("end_date").alias("verbatim_end_date"),
        ),
        "procedure_occurrence": by_domain["procedure"].select(
            _event_id("procedure_occurrence_id", first_ids["procedure_occurrence"]),
            *_common("procedure", "procedure"),
            pl.col("end_date").alias("procedure_end_date"),
            pl.col("end_datetime").alias("procedure_end_datetime"),
        ),
        "measurement": by_domain["measurement"].select(
            _event_id("measurement_id", first_ids["measurement"]),
            *_common("measurement", "measurement"),
            pl.col("value").alias("value_as_number"),
            "unit_concept_id",
            "unit_source_value",
        ),
        "observation": by_domain["observation"].select(
            _event_id("observation_id", first_ids["observation"]),
            *_common("observation", "observation"),
            pl.col("value").alias("value_as_number"),
            "unit_concept_id",
            "unit_source_value",
        ),
        "death": _death(persons, by_domain["death"]),
    }
    return {name: conform(frame, name) for name, frame in tables.items()}


# -- whole-cohort tables ------------------------------------------------------------------------

def care_sites(persons: pl.DataFrame) -> pl.DataFrame:
    """site -> care_site_id: 1, 2, ... in sorted site order."""
    sites = persons.get_column("site").unique().sort()
    return pl.DataFrame(
        {"site": sites, "care_site_id": np.arange(1, sites.len() + 1, dtype=np.int64)}
    )


def _release_date(created: str | None) -> dt.date:
    try:
        return dt.datetime.fromisoformat(created).date() if created else dt.date.today()
    except ValueError:
        return dt.date.today()


def reference_tables(cohort: Cohort, sites: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """CARE_SITE (one row per site), LOCATION (empty: no addresses) and CDM_SOURCE."""
    from trajectories import __version__

    manifest = cohort.manifest
    name = manifest.scenario_name or manifest.generator
    released = _release_date(manifest.created)
    description = (
        f"Synthetic cohort of {manifest.n_persons} persons made by {manifest.generator} "
        f"(trajectories {manifest.package_version}), seed {manifest.seed}, scenario "
        f"{manifest.scenario_name} (sha256 {manifest.scenario_hash}). Not real patients."
    )
    care_site = sites.select(
        "care_site_id",
        pl.col("site").alias("care_site_name"),
        pl.col("site").alias("care_site_source_value"),
    )
    cdm_source = pl.DataFrame(
        {
            "cdm_source_name": [f"trajectories synthetic cohort: {name}"],
            "cdm_source_abbreviation": [name],
            "cdm_holder": ["trajectories (synthetic data)"],
            "source_description": [description],
            "cdm_etl_reference": [f"trajectories {__version__} OMOP CDM v5.4 exporter"],
            "source_release_date": [released],
            "cdm_release_date": [released],
            "cdm_version": ["v5.4"],
            "cdm_version_concept_id": [CDM_VERSION_CONCEPT],
            "vocabulary_version": ["none"],
        }
    )
    return {
        "care_site": conform(care_site, "care_site"),
        "location": conform(pl.DataFrame(), "location"),
        "cdm_source": conform(cdm_source, "cdm_source"),
    }


def _check_person_ids(persons: pl.DataFrame) -> None:
    ids = persons.get_column("person_id")
    bad = persons.filter((pl.col("person_id") > INT32_MAX) | (pl.col("person_id") < -INT32_MAX))
    if ids.len() and bad.height:
        raise OmopError(
            f"persons.person_id: {bad.height} id(s) outside the 32-bit integer range of "
            f"OMOP person.person_id (e.g. {bad.get_column('person_id').head(3).to_list()})"
        )


def _ordered_events(cohort: Cohort) -> tuple[pl.DataFrame, pl.Series, pl.Series]:
    """Events grouped by person in persons' order, with the keys to cut blocks out of them.

    The simulator writes both tables sorted by person_id, which costs nothing here; other
    cohorts are put in persons' order once (a stable sort keeps each person's time order).
    """
    persons, events = cohort.persons, cohort.events
    ids = persons.get_column("person_id")
    if ids.is_sorted() and events.get_column("person_id").is_sorted():
        return events, ids, events.get_column("person_id")
    position = persons.select("person_id", pl.int_range(pl.len(), dtype=pl.Int64).alias("_pos"))
    ordered = events.join(position, on="person_id", how="left", maintain_order="left").sort(
        "_pos", maintain_order=True
    )
    keys = ordered.get_column("_pos")
    return ordered.drop("_pos"), position.get_column("_pos"), keys


def omop_blocks(cohort: Cohort, block_size: int = 50_000) -> Iterator[dict[str, pl.DataFrame]]:
    """The cohort's CDM tables as a stream of dicts (table -> frame, spec columns and types).

    The first dict holds CARE_SITE, LOCATION and CDM_SOURCE; each following one the
    person-level tables of the next ``block_size`` persons. Concatenating the frames of each
    table gives the same result for any block size.
    """
    if block_size < 1:
        raise OmopError(f"block_size: must be a positive number of persons, got {block_size}")
    persons = cohort.persons
    _check_person_ids(persons)
    strangers = cohort.events.join(persons, on="person_id", how="anti")
    if strangers.height:
        raise OmopError(
            f"events.person_id: {strangers.height} event(s) of persons absent from persons "
            f"(e.g. {strangers.get_column('person_id').unique().head(3).to_list()})"
        )
    sites = care_sites(persons)
    persons = persons.join(sites, on="site", how="left", maintain_order="left")
    concepts = concept_table(
        cohort.events.get_column("code").unique().to_list(),
        getattr(cohort.manifest, "concepts", None),
    )
    yield reference_tables(cohort, sites)

    events, person_keys, event_keys = _ordered_events(cohort)
    next_ids = dict.fromkeys(("observation_period", *EVENT_TABLES), 1)
    for start in range(0, persons.height, block_size):
        stop = min(start + block_size, persons.height)
        first = event_keys.search_sorted(person_keys[start], side="left")
        last = event_keys.search_sorted(person_keys[stop - 1], side="right")
        tables = block_tables(
            persons.slice(start, stop - start), events.slice(first, last - first), concepts,
            next_ids,
        )
        for name in next_ids:
            next_ids[name] += tables[name].height
            if next_ids[name] - 1 > INT32_MAX:
                raise OmopError(
                    f"{name}: more than {INT32_MAX} rows; ids exceed the 32-bit integer range "
                    "of the OMOP DDL"
                )
        yield tables


def omop_tables(cohort: Cohort, block_size: int = 50_000) -> dict[str, pl.DataFrame]:
    """Every exported CDM table in memory (for small cohorts and tests)."""
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in EXPORT_TABLES}
    for block in omop_blocks(cohort, block_size):
        for name, frame in block.items():
            parts[name].append(frame)
    return {
        name: pl.concat(frames) if frames else conform(pl.DataFrame(), name)
        for name, frames in parts.items()
    }
