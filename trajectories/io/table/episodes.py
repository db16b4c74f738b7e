"""Recurrent events as episode-numbered states: the k-th entry into a state is its own state.

A person re-entering ``infection`` becomes ``infection`` -> ``infection_2`` -> ``infection_3``,
so each episode has its own transition, hazard and covariate effects (the effect of treatment
on later infections is kept), and the multi-state machinery needs no self-transitions. This
is the "event-specific" (Prentice, Williams & Peterson 1981) view of recurrent events.
"""

from __future__ import annotations

import polars as pl

from trajectories.cohort import STATE_PREFIX
from trajectories.errors import ReferenceDataError


def episode_name(state: str, k: int) -> str:
    """The state entered the ``k``-th time (``k >= 2``): ``state_k``."""
    return f"{state}_{k}"


def number_episodes(events: pl.DataFrame, what: str) -> tuple[pl.DataFrame, dict[str, int]]:
    """``events`` (sorted by person and time) with every direct re-entry into the state a
    person is in renamed ``<state>_<k>`` (the k-th entry in a row), and per re-entered state
    the largest ``k`` seen (for the manifest). A return after another state (A -> B -> A) is
    an ordinary transition and keeps its name.

    A state already called like an episode (``infection_2`` beside ``infection``) is refused:
    the two could not be told apart."""
    row = "__row__"
    states = (events.with_row_index(row)
              .filter(pl.col("code").str.starts_with(STATE_PREFIX))
              .select(row, "person_id", "code"))
    same = ((pl.col("person_id") == pl.col("person_id").shift(1))
            & (pl.col("code") == pl.col("code").shift(1))).fill_null(False)
    run = (~same).cum_sum()
    states = states.with_columns(
        (pl.int_range(pl.len()).over(run) + 1).alias("__entry__")
    ).filter(pl.col("__entry__") > 1)
    if states.height == 0:
        return events, {}
    counts = dict(states.group_by("code").agg(pl.col("__entry__").max()).iter_rows())
    existing = set(events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
                   .get_column("code").unique().to_list())
    for code, most in counts.items():
        clash = [episode_name(code, k) for k in range(2, most + 1)
                 if episode_name(code, k) in existing]
        if clash:
            raise ReferenceDataError(
                f"{what}: state {code.removeprefix(STATE_PREFIX)!r} is entered several times "
                f"in a row and would be numbered {clash[0].removeprefix(STATE_PREFIX)!r}, a "
                "state the data already has; rename one of them"
            )
    renamed = states.select(
        row, (pl.col("code") + "_" + pl.col("__entry__").cast(pl.String)).alias("__code__"))
    numbered = (events.with_row_index(row).join(renamed, on=row, how="left", maintain_order="left")
                .with_columns(pl.coalesce("__code__", "code").alias("code"))
                .drop(row, "__code__"))
    return numbered, {code.removeprefix(STATE_PREFIX): int(most) for code, most in counts.items()}
