"""Visit, measurement and drug processes of a reference cohort, in the scenario's terms.

Each event is placed in the state spell it falls in. Visits: events per person-year in each
state and mean length of stay. Measurements: per state a mean on entering the state and a
yearly trend (least squares), residual noise and a per-person offset (moments). Drugs: started
on entering some states, with a probability, restricted to levels of a categorical covariate
when other levels never receive them, and a gamma duration fitted with censoring at the end of
follow-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import optimize
from scipy.special import gammaincc, gammaln

from trajectories.cohort import Cohort
from trajectories.simulate.population import DAYS_PER_YEAR

MIN_SPELLS_FOR_RESTRICTION = 20
"""A level is judged never to receive a drug only if it had at least this many chances."""


@dataclass
class Processes:
    """Scenario entries for visits, measurements and drugs, and what could not be modelled."""

    visits: list[dict] = field(default_factory=list)
    measurements: list[dict] = field(default_factory=list)
    drugs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def scenario_entries(self) -> dict[str, list[dict]]:
        return {"visits": self.visits, "measurements": self.measurements, "drugs": self.drugs}


def _in_spells(events: pl.DataFrame, spells: pl.DataFrame) -> pl.DataFrame:
    """``events`` with the state, start and stop of the spell each falls in."""
    indexed = spells.select("person_id", "state", "start", "stop").with_row_index("spell")
    return events.sort("person_id", "time").join_asof(
        indexed.sort("person_id", "start"), left_on="time", right_on="start", by="person_id",
        strategy="backward", check_sortedness=False,
    )


def _kind(cohort: Cohort, prefix: str) -> pl.DataFrame:
    return cohort.events.filter(pl.col("code").str.starts_with(prefix)).with_columns(
        pl.col("code").str.strip_prefix(prefix).alias("name"))


def _visits(cohort: Cohort, spells: pl.DataFrame, transient: Sequence[str]) -> list[dict]:
    visits = _kind(cohort, "visit:")
    if visits.is_empty():
        return []
    placed = _in_spells(visits, spells)
    time_in = (spells.filter(pl.col("state").is_in(list(transient)))
               .group_by("state").agg((pl.col("stop") - pl.col("start")).sum().alias("days")))
    counts = placed.group_by("name", "state").len()
    out = []
    for name in sorted(visits.get_column("name").unique().to_list()):
        rates = {}
        for row in time_in.sort("state").iter_rows(named=True):
            n = counts.filter((pl.col("name") == name) & (pl.col("state") == row["state"]))
            count = int(n["len"].sum())
            if count and row["days"] > 0:
                rates[row["state"]] = count / (row["days"] / DAYS_PER_YEAR)
        lengths = visits.filter(pl.col("name") == name).select(
            (pl.col("end_time") - pl.col("time")).mean()).item()
        out.append({"type": name, "rates_per_year": rates,
                    "mean_duration_days": float(lengths or 0.0)})
    return out


def _decimals(values: np.ndarray) -> int | None:
    for k in range(0, 7):
        if np.allclose(values, np.round(values, k), rtol=0, atol=1e-9 * max(1.0, 10.0**-k)):
            return k
    return None


def _measurement(name: str, placed: pl.DataFrame, visit_types: list[str] | None) -> dict:
    frame = placed.with_columns(
        ((pl.col("time") - pl.col("start")) / DAYS_PER_YEAR).alias("elapsed"))
    means, trends = {}, {}
    residual_parts = []
    for state in sorted(frame.get_column("state").unique().to_list()):
        here = frame.filter(pl.col("state") == state)
        x, y = here.get_column("elapsed").to_numpy(), here.get_column("value").to_numpy()
        if x.size >= 3 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
        else:
            slope, intercept = 0.0, float(y.mean())
        means[state], trends[state] = float(intercept), float(slope)
        residual_parts.append(here.select("person_id").with_columns(
            pl.Series("residual", y - intercept - slope * x)))
    residuals = pl.concat(residual_parts)
    per_person = residuals.group_by("person_id").agg(
        pl.col("residual").mean().alias("m"), pl.len().alias("n"),
        ((pl.col("residual") - pl.col("residual").mean()) ** 2).sum().alias("ss"))
    dof = int((per_person["n"] - 1).sum())
    within = float(per_person["ss"].sum()) / dof if dof > 0 else float(
        residuals["residual"].var() or 0.0)
    between = float(per_person["m"].var() or 0.0) - within * float((1 / per_person["n"]).mean())
    values = frame.get_column("value").to_numpy()
    entry = {"name": name, "mean": means, "trend_per_year": {k: v for k, v in trends.items()
                                                             if v != 0.0},
             "noise_sd": math.sqrt(max(within, 0.0)), "person_sd": math.sqrt(max(between, 0.0))}
    if values.min() >= 0:
        entry["min"] = 0.0
    decimals = _decimals(values)
    if decimals is not None:
        entry["decimals"] = decimals
    if visit_types is not None:
        entry["visit_types"] = visit_types
    return entry


def _measurements(cohort: Cohort, spells: pl.DataFrame, transient: Sequence[str],
                  notes: list[str]) -> list[dict]:
    measured = _kind(cohort, "measurement:").filter(pl.col("value").is_not_null())
    if measured.is_empty():
        return []
    visits = _kind(cohort, "visit:").select("person_id", "time",
                                            pl.col("name").alias("visit_type")).unique()
    all_types = sorted(visits.get_column("visit_type").unique().to_list())
    out = []
    for name in sorted(measured.get_column("name").unique().to_list()):
        these = measured.filter(pl.col("name") == name)
        matched = these.join(visits, on=["person_id", "time"], how="inner")
        share = matched.select(["person_id", "time"]).unique().height / these.height
        if share < 0.5:
            notes.append(f"measurement {name!r}: most values are not taken at visits; the "
                         "scenario takes measurements at visits, so it is left out")
            continue
        types = sorted(matched.get_column("visit_type").unique().to_list())
        placed = _in_spells(these, spells).filter(pl.col("state").is_in(list(transient)))
        out.append(_measurement(name, placed,
                                None if types == all_types else types))
    return out


def gamma_duration(length: np.ndarray, complete: np.ndarray) -> tuple[float, float]:
    """Mean and coefficient of variation of a gamma fitted to lengths, some right-censored."""
    done = length[complete]
    if done.size and np.ptp(done) <= 1e-9 * max(1.0, done.max()):
        return float(done.mean()), 0.0
    mean0 = float(length.mean())

    done_log, open_length = np.log(done), length[~complete]

    def negative(params):
        shape, scale = np.exp(params)
        with np.errstate(divide="ignore"):
            log_density = ((shape - 1) * done_log - done / scale - gammaln(shape)
                           - shape * math.log(scale))
            log_survival = np.log(gammaincc(shape, open_length / scale))
        value = -(log_density.sum() + log_survival.sum())
        return value if np.isfinite(value) else 1e300

    result = optimize.minimize(negative, [0.0, math.log(max(mean0, 1e-9))], method="Nelder-Mead",
                               options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    shape, scale = np.exp(result.x)
    return float(shape * scale), float(1.0 / math.sqrt(shape))


def _drugs(cohort: Cohort, spells: pl.DataFrame, transient: Sequence[str],
           categorical: Sequence[str], notes: list[str]) -> list[dict]:
    drugs = _kind(cohort, "drug:")
    if drugs.is_empty():
        return []
    ends = cohort.persons.select("person_id", "followup_end")
    candidates = spells.filter(pl.col("state").is_in(list(transient))).with_row_index("spell")
    out = []
    for name in sorted(drugs.get_column("name").unique().to_list()):
        starts = drugs.filter(pl.col("name") == name).join(ends, on="person_id")
        at_entry = candidates.join(
            starts.select("person_id", pl.col("time").alias("start")).unique(),
            on=["person_id", "start"], how="semi")
        if at_entry.height < 0.5 * starts.height:
            notes.append(f"drug {name!r}: most exposures do not start on entering a state; "
                         "left out")
            continue
        on_entry = sorted(at_entry.get_column("state").unique().to_list())
        eligible = candidates.filter(pl.col("state").is_in(on_entry))
        got = eligible.join(at_entry.select("spell"), on="spell", how="semi")
        when = {}
        for covariate in categorical:
            tally = eligible.group_by(covariate).len().join(
                got.group_by(covariate).len(), on=covariate, how="left", suffix="_drug"
            ).fill_null(0)
            never = tally.filter((pl.col("len_drug") == 0)
                                 & (pl.col("len") >= MIN_SPELLS_FOR_RESTRICTION))
            if never.height:
                when[covariate] = sorted(tally.filter(pl.col("len_drug") > 0)
                                         .get_column(covariate).to_list())
        for covariate, levels in when.items():
            eligible = eligible.filter(pl.col(covariate).is_in(levels))
        lengths = starts.with_columns((pl.col("end_time") - pl.col("time")).alias("length"))
        length = lengths.get_column("length").fill_null(0.0).to_numpy()
        complete = (lengths.get_column("end_time") < lengths.get_column("followup_end")
                    ).fill_null(True).to_numpy()
        mean, cv = gamma_duration(np.maximum(length, 1e-9), complete)
        entry = {"name": name, "on_entry": on_entry,
                 "probability": min(1.0, got.height / max(eligible.height, 1)),
                 "duration_days": mean, "duration_cv": cv}
        if when:
            entry["when"] = when
        out.append(entry)
    return out


def fit_processes(cohort: Cohort, spells: pl.DataFrame, transient: Sequence[str],
                  categorical: Sequence[str] = ()) -> Processes:
    """Visit, measurement and drug entries of a scenario estimated from ``cohort``."""
    notes: list[str] = []
    return Processes(
        visits=_visits(cohort, spells, transient),
        measurements=_measurements(cohort, spells, transient, notes),
        drugs=_drugs(cohort, spells, transient, categorical, notes),
        notes=notes,
    )
