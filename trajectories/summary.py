"""Summaries of a cohort for people: persons per site, events per code, follow-up, states, exits."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort, PartitionedCohort
from trajectories.progress import track


@dataclass(frozen=True)
class CohortSummary:
    """Tables that describe a cohort at a glance; each is a small polars DataFrame."""

    sites: pl.DataFrame
    codes: pl.DataFrame
    followup: pl.DataFrame
    states: pl.DataFrame
    exits: pl.DataFrame


def summarize(cohort: Cohort | PartitionedCohort) -> CohortSummary:
    """Count and describe what a cohort holds, per site where it matters.

    A partitioned cohort is read one block at a time: blocks hold whole persons, so counts of
    persons per code or state add up over blocks; follow-up quantiles read only two person
    columns of every block.
    """
    if isinstance(cohort, PartitionedCohort):
        parts = [_counts(cohort.block(b)) for b in track(
            range(cohort.n_blocks), total=cohort.n_blocks, description="describing blocks")]
        persons = cohort.persons().select("site", "followup_end").collect()
    else:
        parts = [_counts(cohort)]
        persons = cohort.persons
    n_persons = persons.height
    sites, codes, states, exits = (
        pl.concat([part[i] for part in parts], how="vertical") for i in range(4))
    sites = (
        sites.group_by("site")
        .agg(pl.col("persons").sum(), pl.col("events").sum(),
             pl.col("first_index").min(), pl.col("last_index").max())
        .select("site", "persons", (pl.col("events") / pl.col("persons"))
                .alias("events_per_person"), "first_index", "last_index")
        .sort("site")
    )
    codes = (
        codes.group_by("code")
        .agg(pl.col("events").sum(), pl.col("persons").sum(), pl.col("value_sum").sum(),
             pl.col("values").sum())
        .select("code", "events", "persons",
                pl.when(pl.col("values") > 0).then(pl.col("value_sum") / pl.col("values"))
                .alias("mean_value"))
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
        states.group_by("state")
        .agg(pl.col("persons_entering").sum(), pl.col("entries").sum())
        .with_columns((pl.col("persons_entering") / n_persons).alias("share_of_persons"))
        .sort("state")
    )
    exits = exits.group_by("site", "exit").agg(pl.col("persons").sum()).sort("site", "exit")
    return CohortSummary(sites, codes, followup, states, exits)


def _counts(cohort: Cohort) -> tuple[pl.DataFrame, ...]:
    """Counts of a set of whole persons that add up over disjoint sets (blocks)."""
    persons, events = cohort.persons, cohort.events
    per_person_events = events.group_by("person_id").len("n_events")
    sites = (
        persons.join(per_person_events, on="person_id", how="left")
        .group_by("site")
        .agg(
            pl.len().cast(pl.Int64).alias("persons"),
            pl.col("n_events").fill_null(0).cast(pl.Int64).sum().alias("events"),
            pl.col("index_date").min().alias("first_index"),
            pl.col("index_date").max().alias("last_index"),
        )
    )
    codes = events.group_by("code").agg(
        pl.len().cast(pl.Int64).alias("events"),
        pl.col("person_id").n_unique().cast(pl.Int64).alias("persons"),
        pl.col("value").sum().alias("value_sum"),
        pl.col("value").count().cast(pl.Int64).alias("values"),
    )
    states = (
        events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
        .group_by(pl.col("code").str.strip_prefix(STATE_PREFIX).alias("state"))
        .agg(
            pl.col("person_id").n_unique().cast(pl.Int64).alias("persons_entering"),
            pl.len().cast(pl.Int64).alias("entries"),
        )
    )
    exits = persons.group_by("site", "exit").agg(pl.len().cast(pl.Int64).alias("persons"))
    return sites, codes, states, exits
