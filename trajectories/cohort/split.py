"""A reference cohort split into a train part (what a generator is fitted on) and a holdout part
(real persons it never saw: the control of the privacy measures).

The split is a pure function of each person's id and the seed, so it can be recomputed from the
same reference at validation time from ``{"fraction": f, "seed": s}`` alone, without storing a
single id: a person is held out when a 64-bit hash of (seed, person_id) falls below ``fraction``
(SplitMix64, Steele, Lea & Flood 2014, whose output is uniform enough for this). A person's part
depends on nothing but their own id, so a subset of the reference splits as the same subset of
the split.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from trajectories.cohort.core import Cohort
from trajectories.errors import TrajectoriesError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of ``values + golden ratio`` (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
        return z ^ (z >> np.uint64(31))


def holdout_draws(person_ids: pl.Series | np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per person, a fixed function of (seed, person_id): below the fraction
    means held out."""
    ids = np.asarray(person_ids, dtype=np.int64).view(np.uint64)
    seed_word = _splitmix64(np.array([seed], dtype=np.int64).view(np.uint64))
    hashed = _splitmix64(ids ^ seed_word[0])
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def holdout_split(cohort: Cohort, fraction: float, seed: int) -> tuple[Cohort, Cohort]:
    """(train, holdout): the persons whose draw of :func:`holdout_draws` is at or above
    ``fraction`` and those below it, each with their events; manifests say which part of which
    split they are (``split``) and count their own persons."""
    if not 0.0 < fraction < 1.0:
        raise TrajectoriesError(f"holdout fraction must be between 0 and 1 (exclusive), got "
                                f"{fraction!r}")
    held = holdout_draws(cohort.persons.get_column("person_id"), seed) < fraction
    parts = []
    for part, keep in (("train", ~held), ("holdout", held)):
        persons = cohort.persons.filter(pl.Series(keep))
        events = cohort.events.join(persons.select("person_id"), on="person_id", how="semi",
                                    maintain_order="left")
        manifest = cohort.manifest.model_copy(update={
            "n_persons": persons.height,
            "split": {"part": part, "fraction": fraction, "seed": seed},
        })
        parts.append(Cohort(persons, events, manifest, check=False))
    return parts[0], parts[1]


def fit_part(cohort: Cohort, fraction: float, seed: int) -> tuple[Cohort, dict | None, str | None]:
    """What a generator is fitted on: ``cohort`` itself when ``fraction`` is 0, else the
    train part of :func:`holdout_split`; with the split's record (``{"fraction", "seed"}``,
    for manifests) and a note saying how many persons were held out."""
    if fraction == 0:
        return cohort, None, None
    train, holdout = holdout_split(cohort, fraction, seed)
    note = (f"fitted on {train.n_persons} of {cohort.n_persons} persons; {holdout.n_persons} "
            f"held out (fraction {fraction:g}, seed {seed}) as the privacy measures' control")
    return train, {"fraction": fraction, "seed": seed}, note
