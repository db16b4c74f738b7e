"""Each person's bounded contribution to the private fit: the state path followed until it
revisits a state or makes ``max_transitions`` moves and cut at the horizon, and covariates
clipped to released bounds and scaled to [-1, 1].

Bounding a person's contribution is what gives every sum a finite sensitivity (Dwork and Roth
2014, sec. 3.5; the per-example clipping of Abadi et al. 2016, "Deep learning with differential
privacy", CCS): a person counts at most one event per transition and at most
``max_transitions`` in all, spends at most ``horizon`` days at risk, at most one bin width in
any (state, time bin) cell (a path that revisits a state is censored there), and has covariates
with ``|x_j| <= 1`` with one-hot levels, so that ``||x||^2 <= q``, the number of covariates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from trajectories.cohort import Cohort

MAX_TRANSITIONS = 5
"""Most moves a person contributes (fewer when there are fewer states)."""
CHUNK = 200_000
"""Spells whose (spell x bin) overlaps are formed at once."""


@dataclass(frozen=True)
class Spells:
    """Bounded spells: person (row of ``cohort.persons``), state and target (indexes into the
    public state names; -1: no move), start and stop (days since index, cut at the horizon)."""

    person: np.ndarray
    state: np.ndarray
    target: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    def clock_times(self, reset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entry and exit of each spell on its state's clock (``reset[state]``: time since
        entering the state, else since index)."""
        on_reset = reset[self.state]
        entry = np.where(on_reset, 0.0, self.start)
        return entry, np.where(on_reset, self.stop - self.start, self.stop)


def bounded_spells(cohort: Cohort, states: list[str], horizon: float,
                   max_transitions: int) -> Spells:
    """The cohort's spells, each person's path cut where it first revisits a state, after its
    ``max_transitions``-th move, and at ``horizon`` days (a move after the cut is not counted
    and the spell it ends is censored)."""
    code = {s: i for i, s in enumerate(states)}
    index = cohort.persons.select("person_id").with_row_index("row")
    spells = cohort.state_spells().join(index, on="person_id", how="left", maintain_order="left")
    spells = spells.with_columns(
        (pl.col("state").cum_count().over("person_id", "state") > 1).alias("revisit"),
        pl.int_range(pl.len()).over("person_id").alias("number"),
    ).with_columns(pl.col("revisit").cum_max().over("person_id")).with_columns(
        (~pl.col("revisit") & (pl.col("number") <= max_transitions)
         & (pl.col("start") <= horizon)).alias("kept"))
    spells = spells.with_columns(
        pl.col("kept").shift(-1).over("person_id").fill_null(False).alias("next_kept"))
    kept = spells.filter(pl.col("kept"))
    moved = kept.get_column("next_kept").to_numpy() & (kept.get_column("stop").to_numpy()
                                                       <= horizon)
    target = np.array([code.get(t, -1) if t is not None else -1
                       for t in kept.get_column("next_state").to_list()], dtype=np.int64)
    return Spells(
        person=kept.get_column("row").to_numpy().astype(np.int64),
        state=np.array([code[s] for s in kept.get_column("state").to_list()], dtype=np.int64),
        target=np.where(moved, target, -1),
        start=kept.get_column("start").to_numpy().astype(float),
        stop=np.minimum(kept.get_column("stop").to_numpy().astype(float), horizon),
    )


def overlaps(entry: np.ndarray, exit: np.ndarray, horizon: float, bins: int) -> np.ndarray:
    """(spells x bins): time each spell (entry, exit] spends in each of ``bins`` equal bins of
    [0, horizon]."""
    width = horizon / bins
    low = np.arange(bins) * width
    return np.clip(np.minimum(exit[:, None], low + width) - np.maximum(entry[:, None], low),
                   0.0, width)


def binned_sums(spells: Spells, reset: np.ndarray, n_states: int, horizon: float, bins: int,
                x: np.ndarray | None = None, weight: np.ndarray | None = None,
                moments: int = 0) -> list[np.ndarray]:
    """Per (state, bin) the time at risk times ``weight`` (per spell; default 1) and, for
    ``moments`` 1, 2 and 3, times x, x x^T (upper triangle) and x x x (entries i <= j <= k) of
    the spell's person: arrays (states, bins), (states, bins, p), (states, bins, p (p + 1) /
    2), (states, bins, p (p + 1) (p + 2) / 6)."""
    entry, exit = spells.clock_times(reset)
    p = 0 if x is None else x.shape[1]
    upper = np.triu_indices(p)
    third = [(i, j, k) for i in range(p) for j in range(i, p) for k in range(j, p)]
    cubic = tuple(np.array([t[a] for t in third], dtype=np.int64) for a in range(3))
    out = [np.zeros((n_states, bins))]
    if moments >= 1:
        out.append(np.zeros((n_states, bins, p)))
    if moments >= 2:
        out.append(np.zeros((n_states, bins, upper[0].size)))
    if moments >= 3:
        out.append(np.zeros((n_states, bins, len(third))))
    for begin in range(0, spells.state.size, CHUNK):
        part = slice(begin, begin + CHUNK)
        time = overlaps(entry[part], exit[part], horizon, bins)
        if weight is not None:
            time = time * weight[part, None]
        state = spells.state[part]
        for s in np.unique(state):
            rows = state == s
            out[0][s] += time[rows].sum(axis=0)
            if moments >= 1:
                xs = x[spells.person[part][rows]]
                out[1][s] += time[rows].T @ xs
            if moments >= 2:
                out[2][s] += time[rows].T @ (xs[:, upper[0]] * xs[:, upper[1]])
            if moments >= 3:
                out[3][s] += time[rows].T @ (xs[:, cubic[0]] * xs[:, cubic[1]] * xs[:, cubic[2]])
    return out


def symmetric(upper: np.ndarray, p: int) -> np.ndarray:
    """The symmetric (..., p, p) matrices of upper triangles (..., p (p + 1) / 2)."""
    rows, cols = np.triu_indices(p)
    out = np.zeros((*upper.shape[:-1], p, p))
    out[..., rows, cols] = upper
    out[..., cols, rows] = upper
    return out
