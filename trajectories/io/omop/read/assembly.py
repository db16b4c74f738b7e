"""Build the Cohort from the CDM rows and the mapping: codes, index dates, times in days, ties,
deaths, follow-up and the import report (``manifest.omop_import``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import polars as pl

from trajectories.cohort import (
    MICROSECONDS_PER_DAY,
    PERSON_COLUMNS,
    STATE_PREFIX,
    Cohort,
    with_initial_state,
)
from trajectories.errors import OmopImportError
from trajectories.io.omop.read.mapping import (
    ConceptRule,
    IndexSpec,
    OmopMapping,
    PersonsSpec,
    load_mapping,
)
from trajectories.io.omop.read.rows import (
    EVENT_TABLES,
    TABLE_ORDER,
    read_deaths,
    read_events,
    read_observation,
    read_persons,
)
from trajectories.io.omop.read.sources import OmopSource, open_source
from trajectories.io.table.common import assemble_cohort


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
    """A Cohort from an OMOP CDM v5.4 database and a mapping (see :mod:`trajectories.io.omop.read`).

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
    persons = read_persons(source)
    tables = {t: read_events(source, t) for t in EVENT_TABLES}
    for rule in mapping.concepts:
        if tables[rule.table] is None:
            raise OmopImportError(
                f"{source.name}: table {rule.table} not found, but the mapping maps "
                f"{rule.code} from it"
            )
    rows = pl.concat([t for t in tables.values() if t is not None])
    observation = read_observation(source)

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
    deaths = read_deaths(source).join(persons.select("person_id"), on="person_id", how="semi")
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
    events = with_initial_state(
        events.filter((pl.col("time") >= 0) & ~late), persons,
        mapping.index.initial_state or None, _no_initial_state(what))

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


def _no_initial_state(what: str):
    """The error for persons without a state at the index date, given their ids."""
    return lambda ids: OmopImportError(
        f"{what}: {ids.len()} person(s) have no state at the index date (e.g. person_id "
        f"{ids.head(5).to_list()}); map a state there or set index.initial_state")


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
