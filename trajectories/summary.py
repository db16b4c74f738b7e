"""Summaries of a cohort for people: persons per site, events per code, follow-up, states, exits."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort


@dataclass(frozen=True)
class CohortSummary:
    """Tables that describe a cohort at a glance; each is a small polars DataFrame."""

    sites: pl.DataFrame
    codes: pl.DataFrame
    followup: pl.DataFrame
    states: pl.DataFrame
    exits: pl.DataFrame


def summarize(cohort: Cohort) -> CohortSummary:
    """Count and describe what a cohort holds, per site where it matters."""
    persons, events = cohort.persons, cohort.events
    per_person_events = events.group_by("person_id").len("n_events")
    sites = (
        persons.join(per_person_events, on="person_id", how="left")
        .group_by("site")
        .agg(
            pl.len().alias("persons"),
            pl.col("n_events").fill_null(0).mean().alias("events_per_person"),
            pl.col("index_date").min().alias("first_index"),
            pl.col("index_date").max().alias("last_index"),
        )
        .sort("site")
    )
    codes = (
        events.group_by("code")
        .agg(
            pl.len().alias("events"),
            pl.col("person_id").n_unique().alias("persons"),
            pl.col("value").mean().alias("mean_value"),
        )
        .sort("code")
    )
    years = pl.col("followup_end") / 365.25
    followup = (
        persons.group_by("site")
        .agg(
            years.median().alias("median_years"),
            years.quantile(0.25).alias("q1_years"),
            years.quantile(0.75).alias("q3_years"),
            years.max().alias("max_years"),
            years.sum().alias("person_years"),
        )
        .sort("site")
    )
    states = (
        events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
        .group_by(pl.col("code").str.strip_prefix(STATE_PREFIX).alias("state"))
        .agg(
            pl.col("person_id").n_unique().alias("persons_entering"),
            pl.len().alias("entries"),
        )
        .with_columns((pl.col("persons_entering") / persons.height).alias("share_of_persons"))
        .sort("state")
    )
    exits = (
        persons.group_by("site", "exit")
        .len("persons")
        .sort("site", "exit")
    )
    return CohortSummary(sites, codes, followup, states, exits)
