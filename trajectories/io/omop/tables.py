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

import numpy as np
import polars as pl

from trajectories._version import __version__
from trajectories.cohort import MICROSECONDS_PER_DAY, Manifest, same_person_as_previous
from trajectories.cohort.blocks import CohortBlocks, CohortSource, built_ahead, cohort_blocks
from trajectories.io.omop.concepts import DOMAIN_TABLES, EHR, GENDER_CONCEPTS, concept_table
from trajectories.io.omop.spec import EXPORT_TABLES, OmopError, conform
from trajectories.io.omop.visits import link_visits

CDM_VERSION_CONCEPT = 756265
"""'OMOP CDM Version 5.4.0' (cdm_source.cdm_version_concept_id)."""
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


# -- person-level building blocks -----------------------------------------------------------

DOMAINS = tuple(DOMAIN_TABLES)
"""Domain names; an event row carries its domain as the index into this tuple."""
VISIT, DEATH, OBSERVATION = (DOMAINS.index(name) for name in ("visit", "death", "observation"))


def _at(days: pl.Expr) -> pl.Expr:
    """index_date + ``days`` (float) as a timestamp, truncated to the microsecond."""
    micros = (days * MICROSECONDS_PER_DAY).floor().cast(pl.Int64)
    midnight = pl.col("index_date").cast(pl.Int64) * MICROSECONDS_PER_DAY
    return (midnight + micros).cast(pl.Datetime("us"))


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


def _person_rows(persons: pl.DataFrame, events: pl.DataFrame) -> pl.Series:
    """Each event's person as a row number of ``persons`` (binary search when persons are
    sorted by id, else a join); an event of an id absent from ``persons`` raises."""
    ids = persons.get_column("person_id")
    if ids.len() and ids.is_sorted():
        row = pl.col("_person")
        found = events.select(
            "person_id", pl.lit(ids).search_sorted(pl.col("person_id")).alias("_person")
        ).with_columns(
            pl.when(pl.lit(ids).gather(row.clip(upper_bound=ids.len() - 1)) == pl.col("person_id"))
            .then(row)
            .alias("_person")
        )
    else:
        found = events.select("person_id").join(
            persons.select("person_id", pl.int_range(pl.len(), dtype=pl.UInt32).alias("_person")),
            on="person_id", how="left", maintain_order="left",
        )
    strangers = found.filter(pl.col("_person").is_null())
    if strangers.height:
        raise OmopError(
            f"events.person_id: {strangers.height} event(s) of persons absent from persons "
            f"(e.g. {strangers.get_column('person_id').unique().head(3).to_list()})"
        )
    return found.get_column("_person")


def _route(events: pl.DataFrame, persons: pl.DataFrame, concepts: pl.DataFrame) -> pl.DataFrame:
    """Events with their person's row in the block (``_person``), index date and site, their
    code's row in ``concepts`` (``_code``), their domain (``_domain``, see DOMAINS) and their
    start and end as timestamps and dates.

    Death-domain events after a person's first one are re-routed to OBSERVATION, so that no
    row is lost while DEATH keeps one row per person.
    """
    domains = concepts.get_column("domain").replace_strict(
        DOMAINS, range(len(DOMAINS)), return_dtype=pl.UInt8
    )
    person = pl.col("_person")
    rows = events.select(
        "person_id",
        "time",
        "end_time",
        "value",
        pl.col("code").cast(pl.Enum(concepts.get_column("code"))).to_physical().alias("_code"),
        _person_rows(persons, events),
    ).with_columns(
        pl.lit(persons.get_column("index_date")).gather(person).alias("index_date"),
        pl.lit(persons.get_column("care_site_id")).gather(person).alias("care_site_id"),
        pl.lit(domains).gather(pl.col("_code")).alias("_domain"),
    )
    deaths = rows.filter(pl.col("_domain") == DEATH).get_column("_person")
    if deaths.len() > deaths.n_unique():
        death = pl.col("_domain") == DEATH
        later = death & ~pl.when(death).then(person).is_first_distinct()
        rows = rows.with_columns(
            pl.when(later).then(pl.lit(OBSERVATION, dtype=pl.UInt8)).otherwise(pl.col("_domain"))
            .alias("_domain")
        )
    return rows.with_columns(
        _at(pl.col("time")).alias("start_datetime"),
        _at(pl.col("end_time")).alias("end_datetime"),
    ).with_columns(
        pl.col("start_datetime").cast(pl.Date).alias("start_date"),
        pl.col("end_datetime").cast(pl.Date).alias("end_date"),
    )


def _event_id(name: str, first_id: int) -> pl.Expr:
    return (pl.int_range(pl.len(), dtype=pl.Int64) + first_id).alias(name)


def _concept(concepts: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` of ``concepts`` for each row, by the row's ``_code``."""
    return pl.lit(concepts.get_column(column)).gather(pl.col("_code"))


def _common(concepts: pl.DataFrame, prefix: str, date: str) -> list[pl.Expr | str]:
    """The columns every event table shares: person, concept, start date and time, type,
    visit, source value and source concept (0: no source vocabulary)."""
    return [
        "person_id",
        _concept(concepts, "concept_id").alias(f"{prefix}_concept_id"),
        pl.col("start_date").alias(f"{date}_date"),
        pl.col("start_datetime").alias(f"{date}_datetime"),
        _concept(concepts, "type_concept_id").alias(f"{prefix}_type_concept_id"),
        "visit_occurrence_id",
        _concept(concepts, "source_value").alias(f"{prefix}_source_value"),
        pl.lit(0).alias(f"{prefix}_source_concept_id"),
    ]


def _death(persons: pl.DataFrame, deaths: pl.DataFrame, concepts: pl.DataFrame) -> pl.DataFrame:
    """One row per person who died (exit 'death') or has a death-domain event."""
    causes = deaths.select(
        "person_id",
        pl.col("time").alias("cause_time"),
        _concept(concepts, "concept_id").alias("cause_concept_id"),
        _concept(concepts, "source_value").alias("cause_source_value"),
        _concept(concepts, "type_concept_id").alias("death_type_concept_id"),
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
    time order; ``concepts`` has a row for each of their codes (:func:`concept_table`);
    ``first_ids`` gives each id-carrying table's first id for this block.
    """
    rows = _route(events, persons, concepts)
    domain = pl.col("_domain")
    visits = rows.filter(domain == VISIT)
    others = rows.filter(domain != VISIT)
    first_visit = first_ids["visit_occurrence"]
    others = others.with_columns(link_visits(others, visits, first_visit))
    visits = visits.with_columns(_event_id("visit_occurrence_id", first_visit))
    parts = others.partition_by("_domain", as_dict=True, maintain_order=True)
    by_domain = {
        name: parts.get((DOMAINS.index(name),), others.clear())
        for name in DOMAINS
        if name != "visit"
    }

    def concept(column: str) -> pl.Expr:
        return _concept(concepts, column)

    tables = {
        "person": _person(persons),
        "observation_period": _observation_period(persons, first_ids["observation_period"]),
        "visit_occurrence": visits.select(
            "visit_occurrence_id",
            "person_id",
            concept("concept_id").alias("visit_concept_id"),
            pl.col("start_date").alias("visit_start_date"),
            pl.col("start_datetime").alias("visit_start_datetime"),
            pl.col("end_date").fill_null(pl.col("start_date")).alias("visit_end_date"),
            pl.col("end_datetime").fill_null(pl.col("start_datetime"))
            .alias("visit_end_datetime"),
            concept("type_concept_id").alias("visit_type_concept_id"),
            "care_site_id",
            concept("source_value").alias("visit_source_value"),
            pl.lit(0).alias("visit_source_concept_id"),
            pl.when(same_person_as_previous())
            .then(pl.col("visit_occurrence_id").shift(1))
            .alias("preceding_visit_occurrence_id"),
        ),
        "condition_occurrence": by_domain["condition"].select(
            _event_id("condition_occurrence_id", first_ids["condition_occurrence"]),
            *_common(concepts, "condition", "condition_start"),
            pl.col("end_date").alias("condition_end_date"),
            pl.col("end_datetime").alias("condition_end_datetime"),
        ),
        "drug_exposure": by_domain["drug"].select(
            _event_id("drug_exposure_id", first_ids["drug_exposure"]),
            *_common(concepts, "drug", "drug_exposure_start"),
            pl.col("end_date").fill_null(pl.col("start_date")).alias("drug_exposure_end_date"),
            pl.col("end_datetime").fill_null(pl.col("start_datetime"))
            .alias("drug_exposure_end_datetime"),
            pl.col("end_date").alias("verbatim_end_date"),
        ),
        "procedure_occurrence": by_domain["procedure"].select(
            _event_id("procedure_occurrence_id", first_ids["procedure_occurrence"]),
            *_common(concepts, "procedure", "procedure"),
            pl.col("end_date").alias("procedure_end_date"),
            pl.col("end_datetime").alias("procedure_end_datetime"),
        ),
        "measurement": by_domain["measurement"].select(
            _event_id("measurement_id", first_ids["measurement"]),
            *_common(concepts, "measurement", "measurement"),
            pl.col("value").alias("value_as_number"),
            concept("unit_concept_id").alias("unit_concept_id"),
            concept("unit_source_value").alias("unit_source_value"),
        ),
        "observation": by_domain["observation"].select(
            _event_id("observation_id", first_ids["observation"]),
            *_common(concepts, "observation", "observation"),
            pl.col("value").alias("value_as_number"),
            concept("unit_concept_id").alias("unit_concept_id"),
            concept("unit_source_value").alias("unit_source_value"),
        ),
        "death": _death(persons, by_domain["death"], concepts),
    }
    return {name: conform(frame, name) for name, frame in tables.items()}


# -- whole-cohort tables ------------------------------------------------------------------------

def care_sites(sites: pl.Series) -> pl.DataFrame:
    """site -> care_site_id: 1, 2, ... in sorted order of the distinct ``sites``."""
    distinct = sites.unique().sort()
    return pl.DataFrame(
        {"site": distinct, "care_site_id": np.arange(1, distinct.len() + 1, dtype=np.int64)}
    )


def _release_date(created: str | None) -> dt.date:
    try:
        return dt.datetime.fromisoformat(created).date() if created else dt.date.today()
    except ValueError:
        return dt.date.today()


def reference_tables(manifest: Manifest, sites: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """CARE_SITE (one row per site), LOCATION (empty: no addresses) and CDM_SOURCE."""
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


def _check_person_ids(ids: pl.Series) -> None:
    bad = ids.filter((ids > INT32_MAX) | (ids < -INT32_MAX))
    if bad.len():
        raise OmopError(
            f"persons.person_id: {bad.len()} id(s) outside the 32-bit integer range of "
            f"OMOP person.person_id (e.g. {bad.head(3).to_list()})"
        )


def omop_blocks(
    source: CohortSource, batch_size: int = 50_000, *, ahead: bool = True
) -> Iterator[dict[str, pl.DataFrame]]:
    """The cohort's CDM tables as a stream of dicts (table -> frame, spec columns and types).

    ``source`` is a :class:`Cohort`, a cohort directory (streamed block by block, see
    :mod:`trajectories.cohort.blocks`) or a :class:`CohortBlocks`. The first dict holds
    CARE_SITE, LOCATION and CDM_SOURCE; each following one the person-level tables of the
    next ``batch_size`` persons. Concatenating the frames of each table gives the same result
    for any block size and either source. With ``ahead`` each block is built in a background
    thread while the caller writes the previous one (at most three blocks in memory).
    """
    if batch_size < 1:
        raise OmopError(f"batch_size: must be a positive number of persons, got {batch_size}")
    tables = _tables(cohort_blocks(source), batch_size)
    return built_ahead(tables) if ahead else tables


def _tables(blocks: CohortBlocks, batch_size: int) -> Iterator[dict[str, pl.DataFrame]]:
    _check_person_ids(blocks.person_column("person_id"))
    sites = care_sites(blocks.person_column("site"))
    mapping = getattr(blocks.manifest, "concepts", None)
    yield reference_tables(blocks.manifest, sites)

    concepts: dict[tuple[str, ...], pl.DataFrame] = {}
    next_ids = dict.fromkeys(("observation_period", *EVENT_TABLES), 1)
    for persons, events in blocks.blocks(batch_size):
        codes = tuple(sorted(events.get_column("code").unique().to_list()))
        if codes not in concepts:  # a handful of code sets: one table each
            concepts[codes] = concept_table(list(codes), mapping)
        tables = block_tables(
            persons.join(sites, on="site", how="left", maintain_order="left"), events,
            concepts[codes], next_ids,
        )
        for name in next_ids:
            next_ids[name] += tables[name].height
            if next_ids[name] - 1 > INT32_MAX:
                raise OmopError(
                    f"{name}: more than {INT32_MAX} rows; ids exceed the 32-bit integer range "
                    "of the OMOP DDL"
                )
        yield tables


def omop_tables(source: CohortSource, batch_size: int = 50_000) -> dict[str, pl.DataFrame]:
    """Every exported CDM table in memory (for small cohorts and tests)."""
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in EXPORT_TABLES}
    for block in omop_blocks(source, batch_size):
        for name, frame in block.items():
            parts[name].append(frame)
    return {
        name: pl.concat(frames) if frames else conform(pl.DataFrame(), name)
        for name, frames in parts.items()
    }
