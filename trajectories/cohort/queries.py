"""Questions many rooms ask of a cohort: its state names, death and initial states, a site.

Written once here so that validation, the fit and the summaries read a cohort alike.
"""

from __future__ import annotations

import polars as pl

from trajectories.cohort.core import Cohort
from trajectories.cohort.schema import STATE_PREFIX


def state_names(*cohorts: Cohort) -> list[str]:
    """Every state entered in ``cohorts``, in order of first appearance."""
    names: list[str] = []
    for cohort in cohorts:
        states = cohort.events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
        codes = states.get_column("code")
        for name in codes.unique(maintain_order=True).str.strip_prefix(STATE_PREFIX).to_list():
            if name not in names:
                names.append(name)
    return names


def death_states(cohort: Cohort) -> list[str]:
    """States in which persons whose exit is death end their path."""
    last = (
        cohort.events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
        .group_by("person_id").agg(pl.col("code").last())
        .join(cohort.persons.filter(pl.col("exit") == "death").select("person_id"),
              on="person_id", how="semi")
    )
    return sorted(last.get_column("code").str.strip_prefix(STATE_PREFIX).unique().to_list())


def initial_states(cohort: Cohort) -> list[str]:
    """The states persons start in, sorted."""
    spells = cohort.state_spells().filter(pl.col("first"))
    return sorted(spells.get_column("state").unique().to_list())


def site_subset(cohort: Cohort, site: str | None) -> Cohort:
    """The persons of ``site`` and their events (unchecked); ``None``: the whole cohort."""
    if site is None:
        return cohort
    persons = cohort.persons.filter(pl.col("site") == site)
    events = cohort.events.join(persons.select("person_id"), on="person_id", how="semi")
    return Cohort(persons, events, cohort.manifest, check=False)
