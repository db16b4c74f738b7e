"""What every tabular importer shares: frame conversion, column, value and time checks, row
descriptions in messages, status codes, event rows and :func:`assemble_cohort`."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from trajectories.cohort import EVENT_COLUMNS, Cohort, Manifest
from trajectories.errors import CohortSchemaError, ReferenceDataError
from trajectories.io.table.episodes import episode_name, number_episodes

DAYS_PER_UNIT = {"days": 1.0, "weeks": 7.0, "months": 30.4375, "years": 365.25}
"""Length of each accepted time unit in days (a month is a twelfth of a Julian year)."""

DEFAULT_INDEX_DATE = dt.date(2000, 1, 1)
"""Survival tables carry no calendar dates: every person gets this index date unless told."""

STATE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
"""State names a scenario accepts, so a loaded cohort's states can be named in one."""

ROW_LABEL, ID_LABEL = "__row__", "__id__"  # private columns naming rows in error messages
LABELS = {ROW_LABEL: "row", ID_LABEL: "id"}
TEXT_TYPES = (pl.String, pl.Categorical, pl.Enum)
CENSORED = "censored"
"""What a status code that ends follow-up without an event is called in ``status_codes``."""

DEATH_NAME = re.compile(r"death|dead|died", re.IGNORECASE)
"""Without ``death_states``, the states whose name matches this mean death."""


# -- frames, columns, values --------------------------------------------------------------------


def as_polars(frame: Any, what: str) -> pl.DataFrame:
    """A polars copy of a pandas or polars DataFrame; a named pandas index becomes a column."""
    if isinstance(frame, pl.DataFrame):
        return frame
    import pandas as pd  # imported here: only pandas input needs it

    if isinstance(frame, pd.DataFrame):
        named_index = [n for n in frame.index.names if n is not None]
        if named_index and not set(named_index) & set(frame.columns):
            frame = frame.reset_index()
        try:
            return pl.from_pandas(frame)
        except (ValueError, TypeError, pl.exceptions.PolarsError) as error:
            raise ReferenceDataError(f"{what}: cannot read the pandas frame: {error}") from None
    raise ReferenceDataError(
        f"{what}: expected a pandas or polars DataFrame, got {type(frame).__name__}"
    )


def require_columns(frame: pl.DataFrame, names: Sequence[str | None], what: str) -> None:
    """Raise naming the missing columns and listing the available ones."""
    missing = [n for n in dict.fromkeys(names) if n is not None and n not in frame.columns]
    if missing:
        raise ReferenceDataError(
            f"{what}: missing column(s) {missing}; available columns: {frame.columns}"
        )


def days_per_unit(time_unit: str, what: str) -> float:
    """Days in one ``time_unit`` (days, weeks, months, years)."""
    if time_unit not in DAYS_PER_UNIT:
        raise ReferenceDataError(
            f"{what}: unknown time_unit {time_unit!r}; expected one of {list(DAYS_PER_UNIT)}"
        )
    return DAYS_PER_UNIT[time_unit]


def describe_rows(rows: pl.DataFrame, limit: int = 5) -> str:
    """``'3 row(s): id 4, 9, 12'`` (each id once, in the order of the data), or the data row
    numbers (1 for the first row under a file's header) when there are no ids."""
    column = next(c for c in LABELS if c in rows.columns)
    count = rows.height
    labels = rows.get_column(column).unique(maintain_order=True)
    if column == ROW_LABEL:
        labels = labels + 1
    shown = ", ".join(str(v) for v in labels.head(limit).to_list())
    more = f" and {labels.len() - limit} more" if labels.len() > limit else ""
    return f"{count} row(s): {LABELS[column]} {shown}{more}"


def fail_rows(frame: pl.DataFrame, bad: pl.Expr, message: str) -> None:
    """Raise ``message`` followed by the labels of the rows where ``bad`` holds (or is null)."""
    rows = frame.filter(bad.fill_null(True))
    if rows.height:
        raise ReferenceDataError(f"{message}; {describe_rows(rows)}")


def with_labels(frame: pl.DataFrame, id_col: str | None) -> pl.DataFrame:
    """Add the column naming rows in messages: the id when there is one, else the row number."""
    if id_col is None:
        return frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW_LABEL))
    return frame.with_columns(pl.col(id_col).alias(ID_LABEL))


def require_numeric(frame: pl.DataFrame, column: str, what: str, meaning: str) -> None:
    """Raise unless ``column`` holds numbers (or is entirely empty)."""
    dtype = frame.schema[column]
    if dtype.is_numeric() or dtype == pl.Null:
        return
    where = ""
    if dtype == pl.String:
        text = pl.col(column).str.strip_chars()
        bad = frame.filter(text.is_not_null() & text.cast(pl.Float64, strict=False).is_null())
        if bad.height:
            shown = bad.get_column(column).unique(maintain_order=True).head(3).to_list()
            where = f"; text such as {shown} in {describe_rows(bad)}"
    raise ReferenceDataError(
        f"{what}: column {column!r} ({meaning}) must hold numbers, got type {dtype}{where}"
    )


def check_times(frame: pl.DataFrame, column: str, what: str, meaning: str) -> None:
    """Times must be present, finite and non-negative; the offending rows are named."""
    require_numeric(frame, column, what, meaning)
    value = pl.col(column).cast(pl.Float64)
    fail_rows(
        frame,
        value.is_null() | ~value.is_finite() | (value < 0),
        f"{what}: column {column!r} ({meaning}) has missing, infinite or negative values",
    )


def flag_values(frame: pl.DataFrame, column: str, what: str) -> pl.Series:
    """The 0/1 column as Int8, after checking it holds only 0/1/True/False (no missing)."""
    dtype = frame.schema[column]
    if not (dtype.is_numeric() or dtype == pl.Boolean):
        raise ReferenceDataError(
            f"{what}: column {column!r} must hold 0/1 or True/False, got type {dtype}"
        )
    value = pl.col(column).cast(pl.Float64)
    bad = frame.filter((value.is_null() | ~value.is_in([0.0, 1.0])).fill_null(True))
    if bad.height:
        others = bad.get_column(column).unique(maintain_order=True).head(5).to_list()
        raise ReferenceDataError(
            f"{what}: column {column!r} must hold 0/1 or True/False; other values {others} in "
            f"{describe_rows(bad)}"
        )
    return frame.get_column(column).cast(pl.Int8)


def integer_ids(frame: pl.DataFrame, column: str, what: str) -> pl.Series:
    """The id column as Int64 (person_id's type); text or fractional ids are refused."""
    series = frame.get_column(column)
    if not series.dtype.is_numeric():
        raise ReferenceDataError(
            f"{what}: id column {column!r} must hold integers (person_id is Int64), got type "
            f"{series.dtype}; recode the ids first"
        )
    fail_rows(frame, pl.col(column).is_null(), f"{what}: id column {column!r} has missing ids")
    as_float = series.cast(pl.Float64)
    if not (as_float.is_finite() & (as_float == as_float.round())).all():
        raise ReferenceDataError(f"{what}: id column {column!r} has non-integer ids")
    return series.cast(pl.Int64)


def state_name(name: Any, what: str, role: str) -> str:
    """Check a state name can be used in codes and scenarios."""
    if not isinstance(name, str) or not STATE_NAME.match(name):
        raise ReferenceDataError(
            f"{what}: {role} {name!r} is not a usable state name (a letter, then letters, "
            "digits, '_', '.' or '-')"
        )
    return name


def index_day(index_date: dt.date | str, what: str) -> dt.date:
    """``index_date`` as a date; ISO text such as ``'2000-01-01'`` is accepted."""
    if isinstance(index_date, dt.datetime):
        return index_date.date()
    if isinstance(index_date, dt.date):
        return index_date
    try:
        return dt.date.fromisoformat(str(index_date))
    except ValueError:
        raise ReferenceDataError(
            f"{what}: index_date {index_date!r} is not a date (use YYYY-MM-DD)"
        ) from None


def refuse_structural(covariates: Sequence[str], used: Sequence[str | None], what: str) -> None:
    """Raise if a column that defines the histories (id, times, status) is also a covariate."""
    both = [c for c in covariates if c in {u for u in used if u is not None}]
    if both:
        raise ReferenceDataError(
            f"{what}: column(s) {both} define the persons' histories (id, times, status, "
            "site, sex) and cannot also be covariates; leave them out of covariates"
        )


def default_covariates(frame: pl.DataFrame, used: Sequence[str | None]) -> list[str]:
    """Every column the loader does not use for something else, in frame order."""
    taken = {c for c in used if c is not None} | set(LABELS)
    return [c for c in frame.columns if c not in taken]

def as_text(frame: pl.DataFrame, column: str) -> pl.Series:
    """A site or level column as text; integral numbers without a trailing '.0'."""
    series = frame.get_column(column)
    if series.dtype.is_float():
        finite = series.drop_nulls()
        if (finite == finite.round()).all():
            series = series.cast(pl.Int64)
    return series.cast(pl.String)


# -- status codes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusCoding:
    """What a status column means: a 0/1 flag whose 1 enters one state, or codes (code ->
    ``'censored'`` or a state name)."""

    codes: Mapping[Any, str]
    flag: bool

    @property
    def states(self) -> list[str]:
        """The states the codes enter, sorted."""
        return sorted({v for v in self.codes.values() if v != CENSORED})

    def outcomes(self, table: pl.DataFrame, column: str, what: str) -> pl.Series:
        """``column`` read as ``'censored'`` or the state entered, bad rows named."""
        if self.flag:
            return flag_values(table, column, what).replace_strict(
                {0: CENSORED, 1: self.states[0]}, return_dtype=pl.String)
        return outcome_codes(table, column, self.codes, what)


def status_coding(status_codes: Mapping[Any, str] | None, event_state: str,
                  initial_state: str, what: str) -> StatusCoding:
    """``status_codes``, or without them a 0/1 flag entering ``event_state``; refuses a code
    that enters the initial state."""
    coding = (StatusCoding({0: CENSORED, 1: state_name(event_state, what, "event_state")}, True)
              if status_codes is None else StatusCoding(status_codes, False))
    if initial_state in coding.states:
        raise ReferenceDataError(f"{what}: {initial_state!r} is both the initial state and "
                                 "the state of a status code")
    return coding


def outcome_codes(
    frame: pl.DataFrame, column: str, status_codes: Mapping[Any, str], what: str
) -> pl.Series:
    """The status column read through ``status_codes`` (code -> ``'censored'`` or a state
    name), as text; codes are compared as text (``1``, ``1.0`` and ``'1'`` are one code)."""
    codes = {_code_text(k): v for k, v in status_codes.items()}
    for code, outcome in codes.items():
        if outcome != CENSORED:
            state_name(outcome, what, f"state of status code {code!r}")
    if CENSORED not in codes.values():
        raise ReferenceDataError(
            f"{what}: status codes {status_codes} name no code for '{CENSORED}' (e.g. "
            f"0={CENSORED})"
        )
    text = as_text(frame, column)
    unknown = text.filter(~text.is_in(list(codes)).fill_null(True)).unique(maintain_order=True)
    fail_rows(frame.with_columns(text.alias("__status__")),
              ~pl.col("__status__").is_in(list(codes)),
              f"{what}: column {column!r} has status code(s) {unknown.head(5).to_list()} that "
              f"the status codes {dict(codes)} do not cover")
    return text.replace_strict(codes, return_dtype=pl.String)


def _code_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def death_names(states: Sequence[str], death_states: Sequence[str] | None, what: str) -> set[str]:
    """``death_states`` checked against ``states``; by default the states named like death."""
    if death_states is None:
        return {s for s in states if DEATH_NAME.search(s)}
    unknown = [s for s in death_states if s not in states]
    if unknown:
        raise ReferenceDataError(f"{what}: death state(s) {unknown} are not among the states "
                                 f"{sorted(states)}")
    return set(death_states)


# -- events and the cohort ----------------------------------------------------------------------


def exit_of(state: pl.Expr, death: set[str], absorbing: set[str]) -> pl.Expr:
    """The exit of a person whose last state is ``state``: death, absorbed, else censored."""
    return (pl.when(state.is_in(sorted(death))).then(pl.lit("death"))
            .when(state.is_in(sorted(absorbing))).then(pl.lit("absorbed"))
            .otherwise(pl.lit("censored")))


def events_frame(person_id: pl.Expr, time: pl.Expr, code: pl.Expr, order: pl.Expr,
                 source: pl.DataFrame) -> pl.DataFrame:
    """Event rows in the cohort's schema; ``order`` breaks ties within a person and time."""
    return source.select(
        person_id.cast(pl.Int64).alias("person_id"),
        time.cast(pl.Float64).alias("time"),
        pl.lit(None, dtype=pl.Float64).alias("end_time"),
        code.cast(pl.String).alias("code"),
        pl.lit(None, dtype=pl.Float64).alias("value"),
        order.cast(pl.Int64).alias("__order__"),
    )


def assemble_cohort(
    persons: pl.DataFrame, event_parts: Sequence[pl.DataFrame], generator: str, what: str,
    episodes: bool = False, **provenance: Any,
) -> Cohort:
    """Sort the events, build the Cohort and stamp its fingerprint as the reference one.

    With ``episodes``, direct re-entries into a state become numbered episode states
    (:func:`trajectories.io.table.episodes.number_episodes`), listed in the manifest's
    ``episodes`` with the most episodes seen."""
    events = (
        pl.concat(event_parts)
        .sort("person_id", "time", "__order__", maintain_order=True)
        .drop("__order__")
        .select(pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items())
    )
    if episodes:
        events, numbered = number_episodes(events, what)
        if numbered:
            provenance["episodes"] = numbered
            provenance["states"] = sorted({*provenance.get("states", []), *(
                episode_name(s, k) for s, most in numbered.items() for k in range(2, most + 1))})
    manifest = Manifest.new(generator, persons.height, **provenance)
    try:
        cohort = Cohort(persons, events, manifest)
    except CohortSchemaError as error:
        raise ReferenceDataError(f"{what}: {error}") from None
    manifest.reference_fingerprint = cohort.fingerprint()
    return cohort
