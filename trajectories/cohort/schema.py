"""The data model's tables: columns and types, exits, codes, and the rules every cohort obeys.

Checked whenever a cohort is built, read or written (:func:`validate_tables`); validation lists
every broken rule at once (:func:`find_violations`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from trajectories.errors import CohortSchemaError

EXITS = ("death", "absorbed", "administrative_censoring", "lost_to_follow_up", "censored")
"""How follow-up ended: death; another absorbing state; end of study; lost; unknown censoring."""

PERSON_COLUMNS: dict[str, pl.DataType] = {
    "person_id": pl.Int64(),
    "site": pl.String(),
    "index_date": pl.Date(),
    "birth_date": pl.Date(),
    "sex": pl.String(),
    "followup_end": pl.Float64(),
    "exit": pl.String(),
}
PERSON_NULLABLE = {"birth_date", "sex"}

EVENT_COLUMNS: dict[str, pl.DataType] = {
    "person_id": pl.Int64(),
    "time": pl.Float64(),
    "end_time": pl.Float64(),
    "code": pl.String(),
    "value": pl.Float64(),
}
EVENT_NULLABLE = {"end_time", "value"}

STATE_PREFIX = "state:"
MAX_AGE_YEARS = 120.0
"""The oldest age at index a plausible cohort holds (validation's integrity rule; generators
keep drawn ages within [0, MAX_AGE_YEARS])."""
CODE_PATTERN = r"^[a-z_]+:.+$"
MICROSECONDS_PER_DAY = 86_400_000_000
"""Time is float days since index; dates and datetimes at the edges convert through this."""

DATA_MODEL_RULES: dict[str, str] = {
    "duplicate_person": "persons.person_id is unique",
    "exit_value": "persons.exit is one of the known exit values",
    "followup_end": "persons.followup_end is a finite number of days >= 0",
    "birth_after_index": "persons.birth_date is not after index_date",
    "sex_value": "persons.sex is 'F', 'M' or null",
    "code_format": "events.code is namespaced, like 'state:relapse'",
    "time_value": "events.time is finite and >= 0",
    "end_before_start": "events.end_time is not before the event's time",
    "person_rows_together": "each person's events are consecutive rows",
    "time_order": "events are in time order within each person",
    "unknown_person": "events.person_id are all in persons",
    "after_death": "no event after followup_end for persons who died",
    "after_followup": "no event after followup_end",
    "no_initial_state": "every person has a 'state:' event",
    "initial_state_time": "the first 'state:' event is at time 0",
    "initial_state_first": "each person's first event is their initial 'state:' event",
}
"""The data model's rules, by name, as a line saying what must hold (see find_violations)."""


# -- row helpers ----------------------------------------------------------------------------------


def same_person_as_previous() -> pl.Expr:
    """True on rows whose previous row belongs to the same person (rows grouped by person)."""
    return (pl.col("person_id") == pl.col("person_id").shift(1)).fill_null(False)


def next_of_person(column: str) -> pl.Expr:
    """``column`` on the person's next row, null on their last row (rows grouped by person).

    A shift guarded by a same-person test: far faster than ``.over("person_id")``.
    """
    same = (pl.col("person_id").shift(-1) == pl.col("person_id")).fill_null(False)
    return pl.when(same).then(pl.col(column).shift(-1))


def grouped_by_person(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with each person's rows together, in their order (a stable sort if needed)."""
    if frame.get_column("person_id").is_sorted():
        return frame
    return frame.sort("person_id", maintain_order=True)


def with_initial_state(
    events: pl.DataFrame,
    persons: pl.DataFrame,
    initial_state: str | None,
    refuse: Callable[[pl.Series], Exception],
) -> pl.DataFrame:
    """``events`` plus ``state:<initial_state>`` at time 0 for the ``persons`` with no state
    there (``__order__`` -1: first at that instant once sorted); without ``initial_state``
    such persons are refused with the error ``refuse`` makes of their ids. Importers use it."""
    started = events.filter(
        (pl.col("time") == 0) & pl.col("code").str.starts_with(STATE_PREFIX)
    ).select("person_id")
    missing = persons.select("person_id").join(started, on="person_id", how="anti")
    if missing.height and initial_state is None:
        raise refuse(missing.get_column("person_id"))
    if not missing.height:
        return events
    added = missing.select(
        "person_id", pl.lit(0.0).alias("time"),
        pl.lit(STATE_PREFIX + str(initial_state)).alias("code"),
        pl.lit(-1, dtype=pl.Int64).alias("__order__"),
    )
    return pl.concat([events, added], how="diagonal_relaxed")


# -- the rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """A broken rule: which rule, a message naming the column, and the persons at fault."""

    rule: str
    message: str
    person_ids: pl.Series

    def describe(self, limit: int = 5) -> str:
        ids = self.person_ids
        shown = ", ".join(str(i) for i in ids.head(limit).to_list())
        more = f" and {ids.len() - limit} more" if ids.len() > limit else ""
        return f"{self.message}; {ids.len()} person(s): {shown}{more}"


def _check_columns(frame: pl.DataFrame, table: str, columns: dict, nullable: set[str]) -> None:
    for name, dtype in columns.items():
        if name not in frame.columns:
            raise CohortSchemaError(
                f"{table}: missing column {name!r} (expected {dtype}); has {frame.columns}"
            )
        if frame.schema[name] != dtype:
            raise CohortSchemaError(
                f"{table}.{name}: expected type {dtype}, got {frame.schema[name]}"
            )
        if name not in nullable:
            nulls = frame.get_column(name).null_count()
            if nulls:
                raise CohortSchemaError(f"{table}.{name}: {nulls} null value(s); none allowed")


def check_columns(persons: pl.DataFrame, events: pl.DataFrame) -> None:
    """Raise :class:`CohortSchemaError` if a required column is missing, mistyped or null."""
    _check_columns(persons, "persons", PERSON_COLUMNS, PERSON_NULLABLE)
    _check_columns(events, "events", EVENT_COLUMNS, EVENT_NULLABLE)


def find_violations(persons: pl.DataFrame, events: pl.DataFrame) -> list[Violation]:
    """Every value and temporal rule the tables break (columns must already be right)."""
    joined = events.select("person_id", "time").join(
        persons.select("person_id", "followup_end", "exit"), on="person_id", how="left"
    )
    late = joined.filter(pl.col("time") > pl.col("followup_end"))
    first_state = (
        events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
        .group_by("person_id")
        .agg(pl.col("time").min())
    )
    rules = [
        ("duplicate_person", "persons.person_id: duplicated ids",
         persons.filter(pl.col("person_id").is_duplicated())),
        ("exit_value", f"persons.exit: values outside {list(EXITS)}",
         persons.filter(~pl.col("exit").is_in(EXITS))),
        ("followup_end", "persons.followup_end: must be a finite number of days >= 0",
         persons.filter(~pl.col("followup_end").is_finite() | (pl.col("followup_end") < 0))),
        ("birth_after_index", "persons.birth_date: after index_date",
         persons.filter(pl.col("birth_date") > pl.col("index_date"))),
        ("sex_value", "persons.sex: values other than 'F', 'M' or null",
         persons.filter(pl.col("sex").is_not_null() & ~pl.col("sex").is_in(["F", "M"]))),
        ("code_format",
         "events.code: codes must be namespaced like 'state:relapse' or 'visit:outpatient'",
         events.filter(~pl.col("code").str.contains(CODE_PATTERN))),
        ("time_value", "events.time: must be finite and >= 0 (days since index)",
         events.filter(~pl.col("time").is_finite() | (pl.col("time") < 0))),
        ("end_before_start", "events.end_time: before the event's time",
         events.filter(pl.col("end_time").is_not_null() & (pl.col("end_time") < pl.col("time")))),
        ("person_rows_together", "events: a person's rows are not consecutive",
         events.filter(~same_person_as_previous()).filter(pl.col("person_id").is_duplicated())),
        ("time_order", "events.time: goes backwards within a person (rows out of time order)",
         events.filter(same_person_as_previous() & (pl.col("time") < pl.col("time").shift(1)))),
        ("unknown_person", "events.person_id: ids absent from persons",
         joined.filter(pl.col("exit").is_null())),
        ("after_death", "events.time: event after death",
         late.filter(pl.col("exit") == "death")),
        ("after_followup", "events.time: event after the end of follow-up (followup_end)",
         late.filter(pl.col("exit") != "death")),
        ("no_initial_state",
         "events: every person needs a 'state:' event for the initial state",
         persons.join(first_state, on="person_id", how="anti")),
        ("initial_state_time", "events: the initial 'state:' event must be at time 0",
         first_state.filter(pl.col("time") != 0)),
        ("initial_state_first",
         "events: a person's first row must be their initial 'state:' event (another event "
         "comes before it, at the same time)",
         events.filter(~same_person_as_previous()
                       & ~pl.col("code").str.starts_with(STATE_PREFIX))),
    ]
    return [
        Violation(rule, message, bad.get_column("person_id").unique(maintain_order=True))
        for rule, message, bad in rules
        if bad.height
    ]


def validate_tables(persons: pl.DataFrame, events: pl.DataFrame) -> None:
    """Raise :class:`CohortSchemaError` naming column and persons if the tables break the model."""
    check_columns(persons, events)
    violations = find_violations(persons, events)
    if violations:
        raise CohortSchemaError(violations[0].describe())
