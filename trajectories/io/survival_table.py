"""Load a one-row-per-person survival table (as in lifelines' datasets) as a reference Cohort.

Also holds the helpers the tabular loaders share (frame conversion, column and value checks,
time units, the persons table, the manifest), so every loader reports problems the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from trajectories.cohort import EVENT_COLUMNS, PERSON_COLUMNS, STATE_PREFIX, Cohort, Manifest
from trajectories.errors import CohortSchemaError, ReferenceDataError
from trajectories.io.episodes import episode_name, number_episodes
from trajectories.io.names import changed, valid_names

DAYS_PER_UNIT = {"days": 1.0, "weeks": 7.0, "months": 30.4375, "years": 365.25}
"""Length of each accepted time unit in days (a month is a twelfth of a Julian year)."""

DEFAULT_INDEX_DATE = dt.date(2000, 1, 1)
"""Survival tables carry no calendar dates: every person gets this index date unless told."""

STATE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
"""State names a scenario accepts, so a loaded cohort's states can be named in one."""

SEX_CODES = {"f": "F", "female": "F", "m": "M", "male": "M"}
"""Text codings of sex understood without a ``sex_map`` (case and surrounding blanks ignored)."""

ROW_LABEL, ID_LABEL = "__row__", "__id__"  # private columns naming rows in error messages
LABELS = {ROW_LABEL: "row", ID_LABEL: "id"}
TEXT_TYPES = (pl.String, pl.Categorical, pl.Enum)
CENSORED = "censored"
"""What a status code that ends follow-up without an event is called in ``status_codes``."""

DEATH_NAME = re.compile(r"death|dead|died", re.IGNORECASE)
"""Without ``death_states``, the states whose name matches this mean death."""


# -- shared helpers -------------------------------------------------------------------------------


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
    if not (dtype.is_numeric() or dtype == pl.Null):
        raise ReferenceDataError(
            f"{what}: column {column!r} ({meaning}) must hold numbers, got type {dtype}"
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


def _sex_column(
    frame: pl.DataFrame, sex_col: str, sex_map: Mapping[Any, str | None] | None, what: str
) -> pl.Expr:
    raw = frame.get_column(sex_col)
    if sex_map is None:
        if not isinstance(raw.dtype, TEXT_TYPES):
            raise ReferenceDataError(
                f"{what}: sex column {sex_col!r} holds codes of type {raw.dtype}; say what they "
                f"mean with sex_map={{1: 'M', 2: 'F'}} (--sex-codes 1=M,2=F)"
            )
        key, mapping = raw.cast(pl.String).str.strip_chars().str.to_lowercase(), SEX_CODES
    else:
        wrong = [v for v in sex_map.values() if v not in ("F", "M", None)]
        if wrong:
            raise ReferenceDataError(f"{what}: sex_map values must be 'F', 'M' or None: {wrong}")
        key, mapping = raw, dict(sex_map)
    seen = key.drop_nulls().unique(maintain_order=True).to_list()
    unknown = [v for v in seen if v not in mapping]
    if unknown:
        hint = "" if sex_map is not None else " (understood: F/M, female/male)"
        raise ReferenceDataError(
            f"{what}: sex column {sex_col!r} has values {unknown[:5]} that sex_map does not "
            f"cover{hint}; pass sex_map={{value: 'F' | 'M' | None}} (--sex-codes VALUE=F,...)"
        )
    if not seen:
        return pl.lit(None, dtype=pl.String)
    return pl.lit(key.replace_strict(
        seen, [mapping[v] for v in seen], default=None, return_dtype=pl.String
    ))


def _birth_date(frame: pl.DataFrame, age_col: str, index: dt.date, what: str) -> pl.Expr:
    require_numeric(frame, age_col, what, "age in years")
    age = pl.col(age_col).cast(pl.Float64)
    fail_rows(
        frame,
        age.is_not_null() & (~age.is_finite() | (age < 0)),
        f"{what}: age column {age_col!r} has infinite or negative ages",
    )
    days = (age * DAYS_PER_UNIT["years"]).round().cast(pl.Int64)
    return pl.lit(index) - pl.duration(days=days)


def _covariate(frame: pl.DataFrame, name: str, what: str) -> pl.Expr:
    dtype = frame.schema[name]
    if name in PERSON_COLUMNS or name in LABELS:
        hint = (f"pass {name}_col={name!r} (--{name} {name})" if name in ("site", "sex")
                else "rename it")
        raise ReferenceDataError(
            f"{what}: column {name!r} would clash with the cohort's own {name!r} column; "
            f"{hint} or leave it out of covariates (covariates=[...], --covariates A,B)"
        )
    if dtype.is_numeric() or dtype in (pl.Boolean, pl.Null):
        return pl.col(name).cast(pl.Float64)
    if isinstance(dtype, TEXT_TYPES):
        return pl.col(name).cast(pl.String)
    raise ReferenceDataError(
        f"{what}: covariate {name!r} has type {dtype}; covariates must be numbers or text"
    )


def _as_text(frame: pl.DataFrame, column: str) -> pl.Series:
    """A site or level column as text; integral numbers without a trailing '.0'."""
    series = frame.get_column(column)
    if series.dtype.is_float():
        finite = series.drop_nulls()
        if (finite == finite.round()).all():
            series = series.cast(pl.Int64)
    return series.cast(pl.String)


def _renamed(series: pl.Series, prefix: str) -> tuple[pl.Series, dict[str, str]]:
    """``series`` with every value made a valid scenario name, and the renamed values."""
    seen = series.drop_nulls().unique(maintain_order=True).to_list()
    mapping = valid_names(seen, prefix)
    if not changed(mapping):
        return series, {}
    return series.replace_strict(mapping, default=None, return_dtype=pl.String), changed(mapping)


def person_values(table: pl.DataFrame, columns: list[str], what: str) -> pl.DataFrame:
    """One row per person with the columns that must be constant within a person."""
    if columns:
        spread = table.group_by("person_id", maintain_order=True).agg(
            pl.col(c).n_unique().alias(c) for c in columns
        )
        for column in columns:
            varying = spread.filter(pl.col(column) > 1)
            if varying.height:
                raise ReferenceDataError(
                    f"{what}: column {column!r} varies within a person (time-varying or "
                    f"transition-specific columns, such as expand.covs' 'age.1', cannot be "
                    f"person covariates; leave it out of covariates); "
                    f"{describe_rows(varying.rename({'person_id': ID_LABEL}))}"
                )
    return table.group_by("person_id", maintain_order=True).agg(
        pl.col(c).first() for c in [ID_LABEL, *columns]
    )


def build_persons(
    frame: pl.DataFrame,
    *,
    covariates: Sequence[str],
    site_col: str | None,
    site: str,
    sex_col: str | None,
    sex_map: Mapping[Any, str | None] | None,
    age_col: str | None,
    index_date: dt.date | str,
    what: str,
) -> tuple[pl.DataFrame, dict[str, dict[str, str]]]:
    """The persons table from one row per person holding person_id, followup_end and exit,
    and the names it had to change (``{'site': {...}, 'columns': {...}, covariate: {...}}``).

    Site, sex, birth date (index date minus age) and covariates are derived from the named
    columns; numeric covariates become Float64 and text ones String. Site names, covariate
    names and text levels that a scenario could not use are mapped to valid names
    (:func:`trajectories.io.names.valid_names`), never merged.
    """
    index = index_day(index_date, what)
    renamed: dict[str, dict[str, str]] = {}
    if site_col is not None:
        fail_rows(frame, pl.col(site_col).is_null(),
                  f"{what}: site column {site_col!r} has missing values")
        sites, renamed["site"] = _renamed(_as_text(frame, site_col), "site")
        site_expr = pl.lit(sites)
    else:
        site_expr = pl.lit(site, dtype=pl.String)
    sex = pl.lit(None, dtype=pl.String) if sex_col is None else _sex_column(
        frame, sex_col, sex_map, what
    )
    birth = pl.lit(None, dtype=pl.Date) if age_col is None else _birth_date(
        frame, age_col, index, what
    )
    names = valid_names(covariates, "x", taken=[*PERSON_COLUMNS, *LABELS])
    renamed["columns"] = changed(names)
    extra = []
    for name in covariates:
        expr = _covariate(frame, name, what)
        if isinstance(frame.schema[name], TEXT_TYPES):
            levels, renamed[names[name]] = _renamed(frame.get_column(name).cast(pl.String),
                                                    names[name])
            expr = pl.lit(levels)
        extra.append(expr.alias(names[name]))
    persons = frame.select(
        pl.col("person_id"),
        site_expr.alias("site"),
        pl.lit(index, dtype=pl.Date).alias("index_date"),
        birth.alias("birth_date"),
        sex.alias("sex"),
        pl.col("followup_end"),
        pl.col("exit"),
        *extra,
    )
    persons = persons.with_columns(pl.col(c).cast(t) for c, t in PERSON_COLUMNS.items())
    return persons.sort("person_id"), {k: v for k, v in renamed.items() if v}


def exit_of(state: pl.Expr, death: set[str], absorbing: set[str]) -> pl.Expr:
    """The exit of a person whose last state is ``state``: death, absorbed, else censored."""
    return (pl.when(state.is_in(sorted(death))).then(pl.lit("death"))
            .when(state.is_in(sorted(absorbing))).then(pl.lit("absorbed"))
            .otherwise(pl.lit("censored")))


def persons_from_rows(
    table: pl.DataFrame, ends: pl.DataFrame, *, covariates: Sequence[str],
    site_col: str | None, site: str, sex_col: str | None,
    sex_map: Mapping[Any, str | None] | None, age_col: str | None,
    index_date: dt.date | str, what: str,
) -> tuple[pl.DataFrame, dict[str, dict[str, str]]]:
    """:func:`build_persons` from several rows per person (whose person columns must agree)
    and ``ends`` (person_id, followup_end, exit)."""
    columns = [c for c in dict.fromkeys([site_col, sex_col, age_col, *covariates]) if c]
    return build_persons(
        person_values(table, columns, what).join(ends, on="person_id", how="left"),
        covariates=covariates, site_col=site_col, site=site, sex_col=sex_col,
        sex_map=sex_map, age_col=age_col, index_date=index_date, what=what,
    )


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
    (:func:`trajectories.io.episodes.number_episodes`), listed in the manifest's
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


# -- the survival-table loader --------------------------------------------------------------------


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
    text = _as_text(frame, column)
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


def from_survival_table(
    frame: Any,
    duration_col: str,
    event_col: str,
    *,
    covariates: Sequence[str] | None = None,
    time_unit: str = "days",
    id_col: str | None = None,
    site_col: str | None = None,
    site: str = "reference",
    sex_col: str | None = None,
    sex_map: Mapping[Any, str | None] | None = None,
    age_col: str | None = None,
    index_date: dt.date | str = DEFAULT_INDEX_DATE,
    initial_state: str = "alive",
    event_state: str = "death",
    event_is_death: bool = True,
    status_codes: Mapping[Any, str] | None = None,
    death_states: Sequence[str] | None = None,
) -> Cohort:
    """A reference Cohort from one row per person: a duration and an event flag or code.

    Each person starts in ``initial_state`` at time 0. With a 0/1 flag, 1 enters
    ``event_state`` at the duration (converted from ``time_unit`` to days), which ends
    follow-up with exit ``death`` (``absorbed`` if not ``event_is_death``); 0 means
    ``censored`` there. With ``status_codes`` (code -> ``'censored'`` or a state name, e.g.
    ``{0: 'censored', 1: 'relapse', 2: 'death'}``: competing risks) each code enters its own
    state; ``death_states`` say which mean death (default: the states named like
    death/dead/died), the others end follow-up as ``absorbed``. ``covariates=None`` copies
    every column not used otherwise; the age column (years at index) also sets
    ``birth_date``. Text sex codes F/M/female/male are read as is; numeric codes need
    ``sex_map``. Ids default to 1..n in row order. Sites, covariate names and levels a scenario
    cannot use are renamed (the mapping is in the manifest's ``name_mapping``). No row is
    dropped: bad rows raise :class:`ReferenceDataError` naming them (by id, else 0-based row
    number).
    """
    what = "survival table"
    table = as_polars(frame, what)
    used = [duration_col, event_col, id_col, site_col, sex_col]
    chosen = default_covariates(table, used) if covariates is None else list(covariates)
    require_columns(table, [*used, age_col, *chosen], what)
    refuse_structural(chosen, used, what)
    if table.height == 0:
        raise ReferenceDataError(f"{what}: no rows")
    scale = days_per_unit(time_unit, what)
    initial_state = state_name(initial_state, what, "initial_state")
    flag = status_codes is None
    if flag:
        event_state = state_name(event_state, what, "event_state")
        status_codes = {0: CENSORED, 1: event_state}
        death_states = [event_state] if event_is_death else []
    states = sorted({v for v in status_codes.values() if v != CENSORED})
    if initial_state in states:
        raise ReferenceDataError(f"{what}: {initial_state!r} is both the initial state and "
                                 "the state of a status code")

    table = with_labels(table, id_col)
    if id_col is None:
        ids = pl.Series("person_id", range(1, table.height + 1), dtype=pl.Int64)
    else:
        ids = integer_ids(table, id_col, what).alias("person_id")
        fail_rows(table, pl.col(id_col).is_duplicated(), f"{what}: id column {id_col!r} has "
                  "duplicated ids (several rows per person need a start column: a "
                  "counting-process table)")
    check_times(table, duration_col, what, f"duration in {time_unit}")
    if flag:
        outcome = flag_values(table, event_col, what).replace_strict(
            {0: CENSORED, 1: states[0]}, return_dtype=pl.String)
    else:
        outcome = outcome_codes(table, event_col, status_codes, what)
    death = death_names(states, death_states, what)
    table = table.with_columns(
        ids,
        (pl.col(duration_col).cast(pl.Float64) * scale).alias("followup_end"),
        outcome.alias("__outcome__"),
    ).with_columns(
        pl.when(pl.col("__outcome__") == CENSORED).then(pl.lit("censored"))
        .when(pl.col("__outcome__").is_in(sorted(death))).then(pl.lit("death"))
        .otherwise(pl.lit("absorbed")).alias("exit"),
    )
    persons, renamed = build_persons(
        table, covariates=chosen, site_col=site_col, site=site, sex_col=sex_col,
        sex_map=sex_map, age_col=age_col, index_date=index_date, what=what,
    )
    ended = table.select("person_id", "__outcome__").filter(pl.col("__outcome__") != CENSORED)
    entry = events_frame(pl.col("person_id"), pl.lit(0.0), pl.lit(STATE_PREFIX + initial_state),
                         pl.lit(0), persons)
    ending = events_frame(pl.col("person_id"), pl.col("followup_end"),
                          pl.lit(STATE_PREFIX) + pl.col("__outcome__"), pl.lit(1),
                          persons.join(ended, on="person_id"))
    return assemble_cohort(
        persons, [entry, ending], "survival_table", what,
        source_format="survival_table", time_unit=time_unit, duration_col=duration_col,
        event_col=event_col, states=[initial_state, *states], death_states=sorted(death),
        **({"name_mapping": renamed} if renamed else {}),
    )
