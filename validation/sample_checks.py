"""Checks on persons drawn from both sides (at most ``cap`` each, seeded): descriptive
distributions side by side (shown, not judged) and the follow-up KS tests of
:mod:`validation.followup`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from trajectories.cohort import Cohort
from validation import distributions, followup
from validation.collect import Collector, Pending
from validation.lazy import SAMPLE_CAP
from validation.report import info


def distribution_info(col: Collector, syn: Cohort, ref: Cohort, rng: np.random.Generator,
                      cap: int = SAMPLE_CAP) -> None:
    """Events per person, days between events, visit rates and measurement means per state."""
    syn, ref = _person_sample(syn, rng, cap), _person_sample(ref, rng, cap)

    def side_by_side(frame_of, column):
        return distributions.compare_samples(
            *(_capped(frame_of(c)[column], rng, cap) for c in (syn, ref)))

    per_person = side_by_side(distributions.events_per_person, "n_events")
    col.checks.append(info("distributions", "events per person (mean)", "all events",
                           per_person["mean_a"], details=per_person))
    gap = side_by_side(distributions.gaps, "gap")
    col.checks.append(info("distributions", "days between events (median)", "all events",
                           gap["median_a"], details=gap))
    rates = distributions.visit_rates(syn).join(
        distributions.visit_rates(ref), on=["code", "state"], how="full", suffix="_reference",
        coalesce=True)
    for row in rates.iter_rows(named=True):
        col.checks.append(info("distributions", "visits per person-year",
                               f"{row['code']} in {row['state']}", row["rate"], details=row))
    measures = distributions.measurement_summary(syn).join(
        distributions.measurement_summary(ref), on=["code", "state"], how="full",
        suffix="_reference", coalesce=True)
    for row in measures.iter_rows(named=True):
        col.checks.append(info("distributions", "measurement mean",
                               f"{row['code']} in {row['state']}", row["mean"], details=row))


def followup_checks(col: Collector, syn: Cohort, ref: Cohort, sites: list[str],
                    rng: np.random.Generator, cap: int = SAMPLE_CAP) -> None:
    """Index dates and censored follow-up ends: KS tests on (a seeded sample of at most
    ``cap``) persons, pooled and per site, judged like the sojourn KS tests."""
    persons = [followup.capped(c.persons, cap, rng) for c in (syn, ref)]
    for test in followup.followup_tests(*persons, sites):
        if test.p_value is None:
            col.checks.append(info("follow-up", test.name, test.subject, None, site=test.site,
                                   details=test.details))
        else:
            col.pending.append(Pending("follow-up", test.name, test.subject, test.site,
                                       p_value=test.p_value, details=test.details))


def _capped(values: pl.Series, rng: np.random.Generator, cap: int) -> pl.Series:
    if values.len() <= cap:
        return values
    return values.gather(np.sort(rng.choice(values.len(), cap, replace=False)))


def _person_sample(cohort: Cohort, rng: np.random.Generator, cap: int) -> Cohort:
    """At most ``cap`` persons drawn at random, with their events (shown figures only)."""
    if cohort.n_persons <= cap:
        return cohort
    rows = np.sort(rng.choice(cohort.n_persons, cap, replace=False))
    persons = cohort.persons[rows]
    events = cohort.events.join(persons.select("person_id"), on="person_id", how="semi")
    return Cohort(persons, events, cohort.manifest, check=False)
