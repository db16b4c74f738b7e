"""Transition checks of one site (or pooled): forbidden moves, the jump chain out of each state
(G-test and total variation), sojourn times (median ratio and a KS test) from the aggregates,
and state occupation (Aalen-Johansen 1978 product integral) from the person samples (the
whole cohorts when in memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort, site_subset
from validation import integrity, transitions
from validation.collect import Collector, Margin, Pending
from validation.lazy import Aggregates, site_rows
from validation.report import info, judge, plots
from validation.thresholds import Thresholds

SIDES = ("synthetic", "reference")


@dataclass(frozen=True)
class TransitionData:
    """One site's inputs to the transition figures, per side: move counts, state-only person
    samples and state occupation curves."""

    counts: dict[str, pl.DataFrame]
    samples: dict[str, Cohort]
    occupation: dict[str, pl.DataFrame]


def site_checks(col: Collector, syn: Aggregates, ref: Aggregates, site: str | None,
                allowed: set[tuple[str, str]] | None, absorbing: set[str], horizon: float,
                th: Thresholds) -> TransitionData:
    """Every transition check of one site (``None``: pooled); ``allowed`` defaults to the
    moves seen in the reference."""
    pair = ["from_state", "to_state"]
    counts = {label: site_rows(a.transitions, site, pair, ["count"])
              for label, a in zip(SIDES, (syn, ref), strict=True)}
    allowed = allowed if allowed is not None else transitions.observed_transitions(
        counts["reference"])
    forbidden = _forbidden(syn.transitions, allowed, site)
    col.checks.append(judge(
        "transitions", "forbidden transitions", "all moves", float(forbidden["count"].sum()), 0.0,
        site=site, rule="moves never allowed (or never seen in the reference) must number 0",
        details={"moves": forbidden.to_dicts()}))
    _jump_chain_checks(col, counts, site, th)
    _sojourn_checks(col, syn, ref, site, absorbing, th)
    samples, occupation = _occupation_check(col, syn, ref, site, horizon, th)
    return TransitionData(counts, samples, occupation)


def figures(pooled: TransitionData, states: list[str], absorbing: set[str]) -> dict[str, str]:
    """The pooled jump chains, sojourn histograms and occupation curves: {title: PNG}."""
    transient = [s for s in states if s not in absorbing]
    return {
        "Jump chain: synthetic vs reference": plots.transition_heatmaps(
            {k: transitions.jump_chain(v) for k, v in pooled.counts.items()},
            transient + sorted(absorbing)),
        "Sojourn times (completed stays)": plots.sojourn_histograms(
            {k: transitions.sojourn_times(v, absorbing).filter(pl.col("completed"))
             for k, v in pooled.samples.items()}, transient),
        "State occupation probabilities": plots.occupation_curves(pooled.occupation, states),
    }


def _forbidden(moves: pl.DataFrame, allowed: set[tuple[str, str]], site: str | None):
    """[from_state, to_state, count, first_person_ids] of the moves not allowed."""
    if site is not None:
        moves = moves.filter(pl.col("site") == site)
    allowed_frame = pl.DataFrame(
        list(allowed), schema={"from_state": pl.String, "to_state": pl.String}, orient="row")
    return (
        moves.join(allowed_frame, on=["from_state", "to_state"], how="anti")
        .group_by("from_state", "to_state", maintain_order=True)
        .agg(pl.col("count").sum(),
             pl.col("first_person_ids").list.explode(keep_nulls=False, empty_as_null=False)
             .unique(maintain_order=True).head(integrity.SHOWN_IDS))
        .sort("from_state", "to_state")
    )


def _jump_chain_checks(col: Collector, counts: dict[str, pl.DataFrame], site: str | None,
                       th: Thresholds) -> None:
    """Per origin state: a G-test of the next-state counts and their total variation."""
    for row in transitions.compare_jump_chains(counts["synthetic"],
                                               counts["reference"]).iter_rows(named=True):
        origin = f"from {row['from_state']}"
        if row["p_value"] is None:
            col.checks.append(info("transitions", "jump chain", origin, None, site=site,
                                   details=row))
            continue
        col.pending.append(Pending("transitions", "jump chain G-test", origin, site,
                                   p_value=row["p_value"], details=row))
        # Noise in total variation: at most sqrt(k - 1) / 2 times the SE of one proportion.
        se = 0.5 * math.sqrt(max(row["dof"], 1) * (1 / row["n_synthetic"]
                                                   + 1 / row["n_reference"]))
        col.pending.append(Pending(
            "transitions", "jump chain total variation", origin, site,
            margin=Margin(row["total_variation"], th.max_total_variation, se), details=row))


def _sojourn_checks(col: Collector, syn: Aggregates, ref: Aggregates, site: str | None,
                    absorbing: set[str], th: Thresholds) -> None:
    """Per transient state: the median stay's log ratio and a KS test of the stays."""
    transient = ~pl.col("state").is_in(sorted(absorbing))
    stays = [site_rows(a.sojourns.filter(transient), site, ["state", "duration"], ["d", "c"])
             for a in (syn, ref)]
    for row in transitions.compare_sojourn_counts(*stays).iter_rows(named=True):
        subject = f"sojourn in {row['state']}"
        ratio = (row["median_synthetic"] / row["median_reference"]
                 if row["median_synthetic"] and row["median_reference"] else None)
        if ratio is not None and math.isfinite(ratio) and row["completed_synthetic"] and (
                row["completed_reference"]):
            # log median ~ 1/sqrt(events) for exponential-like stays.
            se = math.sqrt(1 / row["completed_synthetic"] + 1 / row["completed_reference"])
            col.pending.append(Pending(
                "transitions", "median sojourn |log ratio|", subject, site,
                margin=Margin(abs(math.log(ratio)), math.log(th.max_sojourn_median_ratio), se),
                details={**row, "ratio": ratio}))
        if row["ks_p_value"] is not None:
            col.pending.append(Pending("transitions", "sojourn KS test", subject, site,
                                       p_value=row["ks_p_value"], details=row))


def _occupation_check(col: Collector, syn: Aggregates, ref: Aggregates, site: str | None,
                      horizon: float, th: Thresholds):
    """State occupation up to the horizon, its largest difference within a margin; returns
    the state-only samples and the curves."""
    grid = np.linspace(0, horizon, 61)
    samples = {label: site_subset(_states_only(a.sample), site)
               for label, a in zip(SIDES, (syn, ref), strict=True)}
    occupation = {k: transitions.state_occupation(c, grid) for k, c in samples.items()}
    # A proportion's SE is at most 1 / (2 sqrt(n)), n = persons still informative at horizon.
    informative = [_informative_persons(c, horizon) for c in samples.values()]
    se = 0.5 * math.sqrt(sum(1 / max(n, 1) for n in informative))
    col.pending.append(Pending(
        "transitions", "state occupation max difference", "all states", site,
        margin=Margin(transitions.occupation_difference(occupation["synthetic"],
                                                        occupation["reference"]),
                      th.max_occupation_difference, se),
        details={"grid_points": grid.size, "informative_persons": informative,
                 "sampled": syn.sample_fraction is not None and syn.sample_fraction < 1}))
    return samples, occupation


def _states_only(cohort: Cohort) -> Cohort:
    events = cohort.events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
    return Cohort(cohort.persons, events, cohort.manifest, check=False)


def _informative_persons(cohort: Cohort, horizon: float) -> int:
    """Persons followed to ``horizon`` or absorbed before it: those whose state is known."""
    persons = cohort.persons
    return int(((persons["followup_end"] >= horizon)
                | persons["exit"].is_in(list(transitions.ABSORBED_EXITS))).sum())
