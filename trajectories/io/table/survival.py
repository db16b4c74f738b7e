"""Load a one-row-per-person survival table (as in lifelines' datasets) as a reference Cohort."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort
from trajectories.errors import ReferenceDataError
from trajectories.io.table.common import (
    CENSORED,
    DEFAULT_INDEX_DATE,
    as_polars,
    assemble_cohort,
    check_times,
    days_per_unit,
    death_names,
    default_covariates,
    events_frame,
    fail_rows,
    integer_ids,
    refuse_structural,
    require_columns,
    state_name,
    status_coding,
    with_labels,
)
from trajectories.io.table.persons import build_persons


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
    dropped: bad rows raise :class:`ReferenceDataError` naming them (by id, else by row
    number, 1 for the first row).
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
    coding = status_coding(status_codes, event_state, initial_state, what)
    states = coding.states
    if coding.flag:
        death_states = states if event_is_death else []

    table = with_labels(table, id_col)
    if id_col is None:
        ids = pl.Series("person_id", range(1, table.height + 1), dtype=pl.Int64)
    else:
        ids = integer_ids(table, id_col, what).alias("person_id")
        fail_rows(table, pl.col(id_col).is_duplicated(), f"{what}: id column {id_col!r} has "
                  "duplicated ids (several rows per person need a start column: a "
                  "counting-process table)")
    check_times(table, duration_col, what, f"duration in {time_unit}")
    outcome = coding.outcomes(table, event_col, what)
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
