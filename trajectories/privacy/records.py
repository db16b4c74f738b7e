"""The person-level record every privacy measure reads: one row per person.

Two sets of columns: the **covariate row** (the quasi-identifiers an attacker may already know:
site, sex, age at index and every covariate) and the **complete record** (the covariate row
plus the outcome summary: how follow-up ended, its length in days, the number of state entries
and the last state). Synthetic, train and holdout records are aligned on the columns they share,
with one dtype per column: text for categories, float for numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort
from trajectories.errors import TrajectoriesError

DAYS_PER_YEAR = 365.25
FIXED_COLUMNS = ("site", "sex", "age")
"""Quasi-identifiers of every cohort, before its covariates."""
OUTCOME_COLUMNS = ("exit", "followup_end", "n_state_entries", "last_state")
"""The outcome summary: exit kind, follow-up days, number of state entries, last state."""


def person_records(cohort: Cohort) -> pl.DataFrame:
    """One row per person: site, sex, age (years at index: the ``age`` covariate, else from
    birth and index dates), the other covariates, then the outcome summary columns."""
    persons = cohort.persons
    if "age" in persons.columns:
        age = pl.col("age").cast(pl.Float64)
    else:
        age = (pl.col("index_date") - pl.col("birth_date")).dt.total_days() / DAYS_PER_YEAR
    states = (cohort.events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
              .group_by("person_id")
              .agg(pl.len().cast(pl.Float64).alias("n_state_entries"),
                   pl.col("code").last().str.strip_prefix(STATE_PREFIX).alias("last_state")))
    covariates = [c for c in cohort.covariates if c != "age"]
    clash = {c: f"{c} (covariate)" for c in covariates if c in OUTCOME_COLUMNS}
    return persons.join(states, on="person_id", how="left", maintain_order="left").select(
        "site", "sex", age.alias("age"),
        *[_uniform(c, persons.schema[c]).alias(clash.get(c, c)) for c in covariates],
        "exit", pl.col("followup_end").cast(pl.Float64),
        pl.col("n_state_entries").fill_null(0.0), "last_state",
    )


def _uniform(name: str, dtype: pl.DataType) -> pl.Expr:
    """A covariate as text (categories, anything else) or float (numbers; dates and times as
    their integer form: equal when equal, and Gower's distance scales by the range anyway)."""
    if dtype.is_numeric():
        return pl.col(name).cast(pl.Float64)
    if dtype.is_temporal():
        return pl.col(name).to_physical().cast(pl.Float64)
    return pl.col(name).cast(pl.String)


@dataclass(frozen=True)
class Records:
    """Aligned person records of the synthetic cohort and the real ones it is measured
    against, with which columns make the covariate row and the outcome summary, and the
    reference columns left out (``dropped``: name -> why)."""

    synthetic: pl.DataFrame
    train: pl.DataFrame
    holdout: pl.DataFrame | None
    covariate_columns: list[str]
    outcome_columns: list[str]
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def complete_columns(self) -> list[str]:
        return [*self.covariate_columns, *self.outcome_columns]

    def categorical(self, column: str) -> bool:
        return self.train.schema[column] == pl.String


def aligned_records(synthetic: Cohort, train: Cohort, holdout: Cohort | None = None) -> Records:
    """Records of the three cohorts on their shared columns; a column all null in the real
    cohorts is dropped (it tells nothing, e.g. sex of a reference without it), as is one the
    synthetic or holdout cohort lacks."""
    frames = [person_records(c) for c in (synthetic, train, *([holdout] if holdout else []))]
    real = pl.concat(frames[1:], how="vertical_relaxed") if len(frames) > 2 else frames[1]
    dropped: dict[str, str] = {}
    kept = []
    for column in frames[1].columns:
        missing = [label for label, frame in zip(("synthetic", "holdout"), frames[::2],
                                                 strict=False) if column not in frame.columns]
        if missing:
            dropped[column] = f"absent from the {' and '.join(missing)} cohort"
        elif real.get_column(column).null_count() == real.height:
            dropped[column] = "null for every real person"
        else:
            kept.append(column)
    if not kept:
        raise TrajectoriesError("privacy: the synthetic and real cohorts share no usable column")
    schema = {c: real.schema[c] for c in kept}
    aligned = [f.select(pl.col(c).cast(schema[c], strict=False) for c in kept) for f in frames]
    outcomes = [c for c in kept if c in OUTCOME_COLUMNS]
    return Records(aligned[0], aligned[1], aligned[2] if holdout else None,
                   [c for c in kept if c not in OUTCOME_COLUMNS], outcomes, dropped)
