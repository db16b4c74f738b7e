"""Load counting-process rows (id, start, stop, status: one row per interval at risk) as a
reference Cohort: recurrent events, competing terminal events and delayed entry.

This is the layout of Andersen & Gill (1982) and of R's ``Surv(start, stop, status)``: each
person's rows cover their follow-up without gaps; a non-zero status at ``stop`` is an event
there. An event followed by more rows is recurrent: the person enters its state and stays at
risk, so the k-th event enters the k-th episode state (``infection``, ``infection_2``, ...,
see :mod:`trajectories.io.table.episodes`). An event that only ever ends a person's rows is
terminal: death when it is one of ``death_states``, else another absorbing state.
"""

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
    exit_of,
    fail_rows,
    integer_ids,
    refuse_structural,
    require_columns,
    state_name,
    status_coding,
    with_labels,
)
from trajectories.io.table.persons import persons_from_rows

WHAT = "counting-process table"
ENTRY_RULES = ("error", "shift")


def from_counting_process(
    frame: Any,
    id_col: str,
    start_col: str,
    stop_col: str,
    status_col: str,
    *,
    status_codes: Mapping[Any, str] | None = None,
    death_states: Sequence[str] | None = None,
    covariates: Sequence[str] | None = None,
    time_unit: str = "days",
    delayed_entry: str = "error",
    site_col: str | None = None,
    site: str = "reference",
    sex_col: str | None = None,
    sex_map: Mapping[Any, str | None] | None = None,
    age_col: str | None = None,
    index_date: dt.date | str = DEFAULT_INDEX_DATE,
    initial_state: str = "at_risk",
    event_state: str = "event",
) -> Cohort:
    """A reference Cohort from rows (id, start, stop, status), one per interval at risk.

    ``status`` is a 0/1 flag (1: an ``event_state`` event at ``stop``) or, with
    ``status_codes`` (code -> ``'censored'`` or a state name, e.g. ``{0: 'censored',
    1: 'infection', 2: 'death'}``), one code per row. Each person starts in ``initial_state``
    at their first ``start``, which must be 0 (``delayed_entry='shift'`` measures their times
    from it instead); every row must start where the previous one stopped. Follow-up ends at
    the last ``stop``. ``death_states`` (default: the states named like death) must end a
    person's rows. ``covariates=None`` takes every other column; covariates, site, sex and
    age must be constant within a person. No row is dropped: bad rows raise
    :class:`ReferenceDataError` naming the ids.
    """
    table = as_polars(frame, WHAT)
    if table.height == 0:
        raise ReferenceDataError(f"{WHAT}: no rows")
    structural = [id_col, start_col, stop_col, status_col]
    used = [*structural, site_col, sex_col]
    chosen = default_covariates(table, used) if covariates is None else list(covariates)
    require_columns(table, [*structural, site_col, sex_col, age_col, *chosen], WHAT)
    refuse_structural(chosen, used, WHAT)
    scale = days_per_unit(time_unit, WHAT)
    if delayed_entry not in ENTRY_RULES:
        raise ReferenceDataError(
            f"{WHAT}: delayed_entry must be one of {list(ENTRY_RULES)}, got {delayed_entry!r}"
        )
    initial_state = state_name(initial_state, WHAT, "initial_state")
    coding = status_coding(status_codes, event_state, initial_state, WHAT)
    states = coding.states

    table = with_labels(table, id_col)
    for column, meaning in ((start_col, "start"), (stop_col, "stop")):
        check_times(table, column, WHAT, f"{meaning} in {time_unit}")
    outcome = coding.outcomes(table, status_col, WHAT)
    table = table.with_columns(
        integer_ids(table, id_col, WHAT).alias("person_id"),
        (pl.col(start_col).cast(pl.Float64) * scale).alias("__start__"),
        (pl.col(stop_col).cast(pl.Float64) * scale).alias("__stop__"),
        outcome.alias("__outcome__"),
    )
    fail_rows(table, pl.col("__stop__") <= pl.col("__start__"),
              f"{WHAT}: {stop_col!r} must be after {start_col!r}")
    rows = _chained(table.sort("person_id", "__start__", maintain_order=True), start_col,
                    stop_col, delayed_entry)
    death = death_names(states, death_states, WHAT)
    continuing = set(rows.filter(~pl.col("__last__")).get_column("__outcome__").to_list())
    fail_rows(rows, ~pl.col("__last__") & pl.col("__outcome__").is_in(sorted(death)),
              f"{WHAT}: rows continue after death (status {sorted(death)} before the "
              "person's last row)")
    terminal = {s for s in states if s not in continuing}
    ends = rows.filter(pl.col("__last__")).select(
        "person_id", pl.col("__stop__").alias("followup_end"),
        exit_of(pl.col("__outcome__"), death, terminal).alias("exit"),
    )
    persons, renamed = persons_from_rows(
        table, ends, covariates=chosen, site_col=site_col, site=site, sex_col=sex_col,
        sex_map=sex_map, age_col=age_col, index_date=index_date, what=WHAT,
    )
    jumps = rows.filter(pl.col("__outcome__") != CENSORED)
    return assemble_cohort(
        persons,
        [
            events_frame(pl.col("person_id"), pl.lit(0.0), pl.lit(STATE_PREFIX + initial_state),
                         pl.lit(0), persons),
            events_frame(pl.col("person_id"), pl.col("__stop__"),
                         pl.lit(STATE_PREFIX) + pl.col("__outcome__"), pl.col("__seq__") + 1,
                         jumps),
        ],
        "counting_process", WHAT, episodes=True,
        source_format="counting_process", time_unit=time_unit, states=[initial_state, *states],
        death_states=sorted(death), absorbing_states=sorted(terminal),
        recurrent_states=sorted(continuing - {CENSORED}), delayed_entry=delayed_entry,
        **({"name_mapping": renamed} if renamed else {}),
    )


def _chained(rows: pl.DataFrame, start_col: str, stop_col: str,
             delayed_entry: str) -> pl.DataFrame:
    """Rows sorted by person and start with their number within the person (``__row__``)
    and ``__last__``; refuses gaps, overlaps and (unless shifted) a first start after 0."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    new_person = (pl.col("person_id") != pl.col("person_id").shift(1)).fill_null(True)
    rows = rows.with_columns(
        (row - pl.when(new_person).then(row).forward_fill()).alias("__seq__"),
        (pl.col("person_id") != pl.col("person_id").shift(-1)).fill_null(True).alias("__last__"),
        pl.when(~new_person).then(pl.col("__stop__").shift(1)).alias("__previous_stop__"),
    )
    first = rows.filter(pl.col("__seq__") == 0)
    if delayed_entry == "error":
        fail_rows(first, pl.col("__start__") != 0,
                  f"{WHAT}: a person's first row must start at {start_col!r} 0 (delayed "
                  "entry); pass delayed_entry='shift' (--delayed-entry shift) to measure each "
                  "person's time from their first start")
    else:
        entry = pl.when(pl.col("__seq__") == 0).then(pl.col("__start__")).forward_fill()
        rows = rows.with_columns(pl.col("__start__") - entry, pl.col("__stop__") - entry,
                                 pl.col("__previous_stop__") - entry)
    fail_rows(rows.filter(pl.col("__seq__") > 0),
              pl.col("__start__") != pl.col("__previous_stop__"),
              f"{WHAT}: a row's {start_col!r} differs from the previous row's {stop_col!r} "
              "(gap or overlap in a person's time at risk)")
    return rows
