"""Load R mstate's long format (the output of ``msprep``) as a reference Cohort.

msprep writes one row per person per transition at risk. The rows of one at-risk block share
id, ``from``, ``Tstart`` and ``Tstop``; the row with status 1 (at most one) is the transition
taken at ``Tstop``; a block without one ends follow-up there (censoring). Putter, Fiocco and
Geskus (2007), Statistics in Medicine 26:2389-2430.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort
from trajectories.errors import ReferenceDataError
from trajectories.io.table.common import (
    DEATH_NAME,
    DEFAULT_INDEX_DATE,
    ID_LABEL,
    TEXT_TYPES,
    as_polars,
    assemble_cohort,
    check_times,
    days_per_unit,
    default_covariates,
    events_frame,
    exit_of,
    fail_rows,
    flag_values,
    integer_ids,
    refuse_structural,
    require_columns,
    state_name,
    with_labels,
)
from trajectories.io.table.names import changed, valid_names
from trajectories.io.table.persons import persons_from_rows

MSTATE_EXTRA = ("trans", "time")
"""msprep's transition number and time in state: structural, never default covariates."""

ENTRY_RULES = ("error", "shift")
WHAT = "mstate table"


def _codes(frame: pl.DataFrame, column: str) -> pl.Series:
    """State codes as Int64 (integral numbers) or String (text), whichever the column holds."""
    series = frame.get_column(column)
    fail_rows(frame, pl.col(column).is_null(), f"{WHAT}: column {column!r} has missing states")
    if isinstance(series.dtype, TEXT_TYPES):
        return series.cast(pl.String)
    as_float = series.cast(pl.Float64) if series.dtype.is_numeric() else None
    if as_float is None or not (as_float.is_finite() & (as_float == as_float.round())).all():
        raise ReferenceDataError(
            f"{WHAT}: column {column!r} must hold integer state numbers or state names, got "
            f"type {series.dtype} with values {series.unique().head(5).to_list()}"
        )
    return series.cast(pl.Int64)


def _name_map(
    codes: pl.Series, state_names: Mapping[Any, str] | Sequence[str] | None
) -> dict[Any, str]:
    """Each state code seen -> its name; lists are 1-based as in mstate's transition matrix."""
    seen = codes.unique(maintain_order=True).sort().to_list()
    if state_names is None:
        mapping = valid_names(seen, "state")
    elif isinstance(state_names, Mapping):
        missing = [c for c in seen if c not in state_names]
        if missing:
            raise ReferenceDataError(
                f"{WHAT}: state_names gives no name for state code(s) {missing}; it covers "
                f"{list(state_names)}"
            )
        mapping = {c: state_names[c] for c in seen}
    elif isinstance(state_names, Sequence) and not isinstance(state_names, str):
        names = list(state_names)
        outside = [c for c in seen if not isinstance(c, int) or not 1 <= c <= len(names)]
        if outside:
            raise ReferenceDataError(
                f"{WHAT}: state_names is a list of {len(names)} names for states numbered "
                f"1..{len(names)} (as in mstate), but the table has state code(s) {outside}"
            )
        mapping = {c: names[c - 1] for c in seen}
    else:
        raise ReferenceDataError(
            f"{WHAT}: state_names must be a dict (code -> name) or a list (state 1 first), got "
            f"{type(state_names).__name__}"
        )
    for code, name in mapping.items():
        state_name(name, WHAT, f"name of state {code!r}")
    names = list(mapping.values())
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ReferenceDataError(f"{WHAT}: state_names gives the same name to several states: "
                                 f"{doubled}")
    return mapping


def _death_set(
    death_states: Sequence[Any] | None, mapping: dict[Any, str], absorbing: set[str]
) -> set[str]:
    """Resolve ``death_states`` (codes or names); by default, absorbing states named like death."""
    if death_states is None:
        found = {s for s in absorbing if DEATH_NAME.search(s)}
        if absorbing and not found:
            raise ReferenceDataError(
                f"{WHAT}: cannot tell which of the absorbing state(s) {sorted(absorbing)} mean "
                "death (none is named like death/dead/died); pass death_states=[...] (--death "
                "A,B), or death_states=[] (--death '') if none does"
            )
        return found
    if isinstance(death_states, str | int):
        death_states = [death_states]
    names = set(mapping.values())
    resolved = set()
    for state in death_states:
        if state in mapping:
            resolved.add(mapping[state])
        elif state in names:
            resolved.add(state)
        else:
            raise ReferenceDataError(
                f"{WHAT}: death state {state!r} does not occur in the table; its states are "
                f"{sorted(names)} (codes {list(mapping)})"
            )
    return resolved


def from_mstate(
    frame: Any,
    *,
    id_col: str = "id",
    from_col: str = "from",
    to_col: str = "to",
    tstart_col: str = "Tstart",
    tstop_col: str = "Tstop",
    status_col: str = "status",
    state_names: Mapping[Any, str] | Sequence[str] | None = None,
    death_states: Sequence[Any] | None = None,
    covariates: Sequence[str] | None = None,
    time_unit: str = "days",
    delayed_entry: str = "error",
    site_col: str | None = None,
    site: str = "reference",
    sex_col: str | None = None,
    sex_map: Mapping[Any, str | None] | None = None,
    age_col: str | None = None,
    index_date: dt.date | str = DEFAULT_INDEX_DATE,
) -> Cohort:
    """A reference Cohort from mstate's long format (columns id, from, to, Tstart, Tstop, status).

    Each person's path is rebuilt: the initial state is ``from`` of the first at-risk block,
    which must start at Tstart 0 (``delayed_entry='shift'`` instead measures each person's times
    from their first Tstart); every status-1 row is a jump to ``to`` at Tstop; follow-up ends at
    the last Tstop. Integer states are named through ``state_names`` (a dict, or a list with
    state 1 first) or else ``state_<k>``. States never left (never a ``from``) are absorbing;
    ending in one of ``death_states`` (codes or names) gives exit ``death``, in another absorbing
    state ``absorbed``, else ``censored``. With ``death_states=None`` the absorbing states named
    like death/dead/died are death, and if there are absorbing states but none is so named the
    loader asks. ``covariates=None`` takes every other column except msprep's ``trans`` and
    ``time``; covariates, site, sex and age must be constant within a person.
    """
    table = _as_table(frame)
    structural = [id_col, from_col, to_col, tstart_col, tstop_col, status_col]
    used = [*structural, *(c for c in MSTATE_EXTRA if c in table.columns), site_col, sex_col]
    chosen = default_covariates(table, used) if covariates is None else list(covariates)
    require_columns(table, [*structural, site_col, sex_col, age_col, *chosen], WHAT)
    refuse_structural(chosen, structural, WHAT)
    scale = days_per_unit(time_unit, WHAT)
    if delayed_entry not in ENTRY_RULES:
        raise ReferenceDataError(
            f"{WHAT}: delayed_entry must be one of {list(ENTRY_RULES)}, got {delayed_entry!r}"
        )

    table = with_labels(table, id_col)
    table = table.with_columns(integer_ids(table, id_col, WHAT).alias("person_id"))
    rows, mapping = _transition_rows(
        table, (from_col, to_col, tstart_col, tstop_col, status_col), state_names,
        scale, time_unit,
    )
    blocks = _entry(_blocks(rows), delayed_entry)
    left = set(rows.get_column("from").unique().to_list())
    absorbing = set(mapping.values()) - left
    death = _death_set(death_states, mapping, absorbing)
    fail_rows(
        rows, pl.col("from").is_in(sorted(death)),
        f"{WHAT}: death state(s) {sorted(death & left)} are left again (they appear in "
        f"{from_col!r})",
    )
    ends = blocks.filter(pl.col("last")).select(
        "person_id", pl.col("tstop").alias("followup_end"),
        exit_of(pl.col("state_after"), death, absorbing).alias("exit"),
    )
    persons, renamed = persons_from_rows(
        table, ends, covariates=chosen, site_col=site_col, site=site, sex_col=sex_col,
        sex_map=sex_map, age_col=age_col, index_date=index_date, what=WHAT,
    )
    first = blocks.filter(pl.col("block") == 0)
    jumps = blocks.filter(pl.col("jump_to").is_not_null())
    states = changed({code: name for code, name in mapping.items()
                      if isinstance(code, str)})
    if states:
        renamed["state"] = states
    return assemble_cohort(
        persons,
        [
            events_frame(pl.col("person_id"), pl.lit(0.0), _state_code("from"), pl.lit(0), first),
            events_frame(pl.col("person_id"), pl.col("tstop"), _state_code("jump_to"),
                         pl.col("block") + 1, jumps),
        ],
        "mstate", WHAT, episodes=True,
        source_format="mstate", time_unit=time_unit, states=sorted(mapping.values()),
        absorbing_states=sorted(absorbing), death_states=sorted(death),
        delayed_entry=delayed_entry, **({"name_mapping": renamed} if renamed else {}),
    )


def _transition_rows(
    table: pl.DataFrame, columns: tuple[str, str, str, str, str],
    state_names: Mapping[Any, str] | Sequence[str] | None, scale: float, time_unit: str,
) -> tuple[pl.DataFrame, dict[Any, str]]:
    """Checked rows with named states and times in days, and the code -> name mapping."""
    from_col, to_col, tstart_col, tstop_col, status_col = columns
    for column, meaning in ((tstart_col, "Tstart"), (tstop_col, "Tstop")):
        check_times(table, column, WHAT, f"{meaning} in {time_unit}")
    status = flag_values(table, status_col, WHAT)
    codes_from, codes_to = _codes(table, from_col), _codes(table, to_col)
    if codes_from.dtype != codes_to.dtype:
        raise ReferenceDataError(
            f"{WHAT}: columns {from_col!r} and {to_col!r} code states differently "
            f"({codes_from.dtype} and {codes_to.dtype})"
        )
    mapping = _name_map(pl.concat([codes_from, codes_to]), state_names)
    keys, names = list(mapping), list(mapping.values())
    rows = pl.DataFrame({
        "person_id": table.get_column("person_id"),
        ID_LABEL: table.get_column(ID_LABEL),
        "from": codes_from.replace_strict(keys, names, return_dtype=pl.String),
        "to": codes_to.replace_strict(keys, names, return_dtype=pl.String),
        "tstart": table.get_column(tstart_col).cast(pl.Float64) * scale,
        "tstop": table.get_column(tstop_col).cast(pl.Float64) * scale,
        "status": status,
    })
    fail_rows(rows, pl.col("tstop") < pl.col("tstart"), f"{WHAT}: Tstop before Tstart")
    return rows, mapping


def _entry(blocks: pl.DataFrame, delayed_entry: str) -> pl.DataFrame:
    """Refuse a first block after time 0, or shift each person's times to start at 0."""
    if delayed_entry == "error":
        fail_rows(
            blocks.filter(pl.col("block") == 0), pl.col("tstart") != 0,
            f"{WHAT}: the first at-risk block must start at Tstart 0 (delayed entry); pass "
            "delayed_entry='shift' (--delayed-entry shift) to measure each person's time from "
            "their first Tstart",
        )
        return blocks
    entry = pl.when(pl.col("block") == 0).then(pl.col("tstart")).forward_fill()
    return blocks.with_columns(pl.col("tstart") - entry, pl.col("tstop") - entry)


def _state_code(column: str) -> pl.Expr:
    return pl.lit(STATE_PREFIX) + pl.col(column)


def _as_table(frame: Any) -> pl.DataFrame:
    table = as_polars(frame, WHAT)
    if table.height == 0:
        raise ReferenceDataError(f"{WHAT}: no rows")
    return table


def _blocks(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per at-risk block, in time order per person, checked to chain into one path."""
    blocks = (
        rows.group_by("person_id", "from", "tstart")
        .agg(
            pl.col(ID_LABEL).first(),
            pl.col("tstop").n_unique().alias("stops"),
            pl.col("tstop").first(),
            pl.col("status").cast(pl.Int64).sum().alias("jumps"),
            pl.col("to").filter(pl.col("status") == 1).first().alias("jump_to"),
        )
        .sort("person_id", "tstart", "tstop")
    )
    fail_rows(blocks, pl.col("stops") > 1,
              f"{WHAT}: rows of one at-risk block (same id, from and Tstart) disagree on Tstop")
    fail_rows(blocks, pl.col("jumps") > 1,
              f"{WHAT}: more than one status=1 in the same at-risk block (same id, from and "
              "Tstart)")
    # Sorted by person: compare with the neighbouring rows instead of windows over persons.
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    new_person = (pl.col("person_id") != pl.col("person_id").shift(1)).fill_null(True)
    blocks = blocks.with_columns(
        (row - pl.when(new_person).then(row).forward_fill()).alias("block"),
        (pl.col("person_id") != pl.col("person_id").shift(-1)).fill_null(True).alias("last"),
        pl.col("jump_to").shift(1).alias("previous_to"),
        pl.col("tstop").shift(1).alias("previous_stop"),
        pl.coalesce("jump_to", "from").alias("state_after"),
    )
    later = blocks.filter(pl.col("block") > 0)
    fail_rows(later, pl.col("previous_to").is_null(),
              f"{WHAT}: rows continue after follow-up ended (an at-risk block follows a block "
              "with no status=1)")
    fail_rows(later, pl.col("previous_to") != pl.col("from"),
              f"{WHAT}: a transition starts from a state the person is not in ('from' differs "
              "from the state entered by the previous status=1 row)")
    fail_rows(later, pl.col("previous_stop") != pl.col("tstart"),
              f"{WHAT}: an at-risk block's Tstart differs from the previous block's Tstop "
              "(gap or overlap in time)")
    return blocks
