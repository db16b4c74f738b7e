"""Regression battery on public real cohorts: import -> fit (defaults) -> simulate 10x ->
validate, and two clinical estimands per cohort, real (with its 95% CI) beside synthetic.

Seven cohorts cover the shapes real data comes in: multi-site with tiny sites (lung, 18
institutions of 1-36 patients), five or more states (EBMT, 6 states), competing risks
(aidssi), recurrent events over 13 hospitals (cgd), repeated measurements (pbcseq),
delayed entry into a forward-clock state (Stanford heart transplants) and an illness-death
trial (colon). The data come from lifelines, pymsm's wheel and R's survival package
(see benchmarks/real_data.py for the sources and the install commands).

Run: python benchmarks/real_cohorts.py [--multiple 10] [--seed 1] [--only NAME ...]
Prints a Markdown table for README: estimand, real [95% CI], synthetic, inside, plus each
cohort's checks passed/failed and the seconds each step took.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
import real_data  # noqa: E402

from trajectories.cohort import Cohort  # noqa: E402
from trajectories.errors import TrajectoriesError  # noqa: E402
from trajectories.fit import MultiStateModel  # noqa: E402
from trajectories.io import (  # noqa: E402
    add_measurements,
    from_counting_process,
    from_mstate,
    from_survival_table,
)
from validation import compare  # noqa: E402
from validation.cox import cox_hazard_ratios  # noqa: E402
from validation.endpoints import Endpoint, endpoint_times  # noqa: E402
from validation.survival import aalen_johansen, kaplan_meier, survival_at  # noqa: E402

Z = 1.959963984540054


@dataclass
class Estimate:
    """One estimand on one cohort: the value and its 95% interval."""

    value: float
    lower: float
    upper: float


@dataclass
class Estimand:
    """A named analysis run the same way on the real and the synthetic cohort."""

    label: str
    compute: Callable[[Cohort], Estimate]
    why_not: str = ""  # said in the table when the synthetic value falls outside the CI


@dataclass
class Case:
    """A real cohort: how to import it and what to estimate on it."""

    name: str
    shape: str
    load: Callable[[], Cohort]
    estimands: list[Estimand]
    fit_options: dict = field(default_factory=dict)


# -- estimands ---------------------------------------------------------------------------------


def hazard_ratio(endpoint: Endpoint, covariates: list[str], term: str,
                 reference_levels: dict[str, str] | None = None) -> Callable[[Cohort], Estimate]:
    """Cox hazard ratio of ``term`` for ``endpoint`` (cause-specific when it has competing
    events), adjusted for ``covariates``."""
    def compute(cohort: Cohort) -> Estimate:
        table = cox_hazard_ratios(endpoint_times(cohort, endpoint), "time", "event",
                                  covariates, reference_levels=reference_levels,
                                  max_rows=10**9)
        row = table.filter(pl.col("covariate") == term).row(0, named=True)
        return Estimate(row["hazard_ratio"], row["lower"], row["upper"])
    return compute


def landmark(endpoint: Endpoint, days: float) -> Callable[[Cohort], Estimate]:
    """Survival (no competing events) or cumulative incidence at ``days``."""
    def compute(cohort: Cohort) -> Estimate:
        frame = endpoint_times(cohort, endpoint)
        time_, status = frame["time"], frame["event"]
        curve = (aalen_johansen(time_, status) if endpoint.competing
                 else kaplan_meier(time_, status == 1))
        at = survival_at(curve, days)
        return Estimate(at["value"], at["lower"], at["upper"])
    return compute


def state_occupation(state: str, days: float) -> Callable[[Cohort], Estimate]:
    """Share of persons in ``state`` at ``days`` among those still followed (Wald CI)."""
    def compute(cohort: Cohort) -> Estimate:
        spells = cohort.state_spells()
        followed = cohort.persons.filter(
            (pl.col("followup_end") >= days) | pl.col("exit").is_in(["death", "absorbed"]))
        inside = spells.filter((pl.col("state") == state) & (pl.col("start") <= days)
                               & ((pl.col("stop") > days) | pl.col("next_state").is_null()
                                  & (pl.col("exit").is_in(["death", "absorbed"]))))
        n = followed.height
        p = inside.join(followed.select("person_id"), on="person_id").get_column(
            "person_id").n_unique() / n
        half = Z * math.sqrt(p * (1 - p) / n)
        return Estimate(p, max(0.0, p - half), min(1.0, p + half))
    return compute


def _counting_rows(cohort: Cohort, states: list[str], covariates: list[str]) -> pd.DataFrame:
    """Counting-process rows (start, stop, event) of the spells in ``states``."""
    spells = (cohort.state_spells().filter(pl.col("state").is_in(states))
              .filter(pl.col("stop") > pl.col("start"))
              .join(cohort.persons.select("person_id", *covariates), on="person_id"))
    return spells.select(
        "person_id", "start", "stop", *covariates,
        pl.col("next_state").is_in(states).fill_null(False).cast(pl.Int64).alias("event"),
    ).to_pandas()


def rate_ratio(states: list[str], covariate: str, level: str,
               adjust: tuple[str, ...] = ()) -> Callable[[Cohort], Estimate]:
    """Andersen-Gill rate ratio of recurrent moves between ``states`` for ``covariate ==
    level`` (Cox on counting-process rows, robust variance clustered by person; Andersen &
    Gill 1982, Lin & Wei 1989)."""
    def compute(cohort: Cohort) -> Estimate:
        from lifelines import CoxPHFitter

        rows = _counting_rows(cohort, states, [covariate, *adjust])
        rows[covariate] = (rows[covariate] == level).astype(float)
        fitted = CoxPHFitter().fit(rows.drop(columns=[]), "stop", "event", entry_col="start",
                                   cluster_col="person_id", robust=True)
        beta, se = fitted.params_[covariate], fitted.standard_errors_[covariate]
        return Estimate(math.exp(beta), math.exp(beta - Z * se), math.exp(beta + Z * se))
    return compute


def time_varying_hazard_ratio(states: list[str], flagged: str,
                              death: str) -> Callable[[Cohort], Estimate]:
    """Hazard ratio of ``death`` while in state ``flagged`` vs the other ``states`` (the state
    as a time-varying covariate; lifelines CoxTimeVaryingFitter)."""
    def compute(cohort: Cohort) -> Estimate:
        from lifelines import CoxTimeVaryingFitter

        spells = (cohort.state_spells().filter(pl.col("state").is_in(states))
                  .filter(pl.col("stop") > pl.col("start")))
        frame = spells.select(
            "person_id", "start", "stop",
            (pl.col("state") == flagged).cast(pl.Int64).alias("flag"),
            (pl.col("next_state") == death).fill_null(False).cast(pl.Int64).alias("death"),
        ).to_pandas()
        fitted = CoxTimeVaryingFitter().fit(frame, id_col="person_id", event_col="death",
                                            start_col="start", stop_col="stop")
        beta, se = fitted.params_["flag"], fitted.standard_errors_["flag"]
        return Estimate(math.exp(beta), math.exp(beta - Z * se), math.exp(beta + Z * se))
    return compute


# -- the cohorts ---------------------------------------------------------------------------------


def lung() -> Cohort:
    """NCCTG lung cancer: one row per patient, 18 institutions (sites) of 1-36 patients."""
    frame = real_data.load_lung().dropna(subset=["inst", "ph.ecog"])  # 2 rows lack them
    return from_survival_table(frame, "time", "status", site_col="inst", sex_col="sex",
                               sex_map={1: "M", 2: "F"}, age_col="age",
                               covariates=["age", "ph.ecog"], event_state="dead")


EBMT_STATES = ["transplant", "recovery", "adverse_event", "recovery_and_ae", "relapse", "death"]


def ebmt() -> Cohort:
    """EBMT: 2,279 transplanted patients, 6 states in msprep's long format (days)."""
    return from_mstate(real_data.load_ebmt4_long(), state_names=EBMT_STATES,
                       death_states=["death"], covariates=["match", "proph", "year", "agecl"])


def aidssi() -> Cohort:
    """Amsterdam cohort of HIV infection: AIDS vs SI switch as competing first events."""
    frame = real_data.load_aidssi().dropna(subset=["ccr5"])  # 5 persons without genotype
    return from_survival_table(frame, "time", "status", id_col="patnr",
                               status_codes={0: "censored", 1: "aids", 2: "si_switch"},
                               death_states=[], covariates=["ccr5"], time_unit="years",
                               initial_state="event_free")


def cgd() -> Cohort:
    """Chronic granulomatous disease trial: recurrent serious infections, 13 hospitals."""
    frame = real_data.load_cgd()
    return from_counting_process(
        frame, "id", "tstart", "tstop", "status", event_state="infection",
        covariates=["treat", "age", "inherit", "steroids", "propylac"], site_col="center",
        sex_col="sex", initial_state="no_infection")


def pbcseq() -> Cohort:
    """Mayo PBC with repeated labs: one row per patient (death, transplant competing) and the
    visits' bilirubin and albumin as measurements; baseline log bilirubin as a covariate."""
    visits = real_data.load_pbcseq()
    first = visits.sort_values("day").groupby("id", as_index=False).first()
    first["log_bili0"] = np.log(first["bili"])
    first["trt"] = first["trt"].map({0: "placebo", 1: "d_penicillamine"})
    cohort = from_survival_table(
        first, "futime", "status", id_col="id", age_col="age", sex_col="sex",
        status_codes={0: "censored", 1: "transplant", 2: "dead"},
        covariates=["trt", "age", "log_bili0"])
    long = visits.melt(id_vars=["id", "day"], value_vars=["bili", "albumin"],
                       var_name="name", value_name="value").dropna(subset=["value"])
    return add_measurements(cohort, long, time_col="day")


def stanford() -> Cohort:
    """Stanford heart transplants: waiting -> transplanted -> dead, so death after transplant
    is a forward-clock transition entered late (delayed entry)."""
    rows = real_data.load_stanford_heart_transplants().sort_values(["id", "start"])
    later = rows.groupby("id")["transplant"].shift(-1)
    rows["status"] = np.where(later.eq(1) & rows["transplant"].eq(0), 1,
                              np.where(rows["event"].eq(1), 2, 0))
    rows["age"] = rows["age"] + 48.0  # lifelines stores age - 48
    return from_counting_process(rows, "id", "start", "stop", "status",
                                 status_codes={0: "censored", 1: "transplanted", 2: "dead"},
                                 covariates=["year", "surgery"], age_col="age",
                                 initial_state="waiting")


def colon() -> Cohort:
    """Colon cancer adjuvant trial: recurrence and death (illness-death), three arms."""
    raw = real_data.load_colon()
    rec = raw[raw["etype"] == 1].set_index("id")
    dth = raw[raw["etype"] == 2].set_index("id")
    rows = []
    for pid in rec.index:
        r, d = rec.loc[pid], dth.loc[pid]
        base = {"id": pid, "rx": r["rx"], "age": r["age"], "sex": r["sex"],
                "node4": r["node4"], "extent": r["extent"]}
        # a recurrence found on the day of death counts as death (the interval would be empty)
        if r["status"] == 1 and r["time"] < d["time"]:
            rows.append({**base, "start": 0, "stop": r["time"], "status": 1})
            rows.append({**base, "start": r["time"], "stop": d["time"],
                         "status": 2 if d["status"] == 1 else 0})
        else:
            rows.append({**base, "start": 0, "stop": d["time"],
                         "status": 2 if d["status"] == 1 else 0})
    return from_counting_process(
        pd.DataFrame(rows), "id", "start", "stop", "status",
        status_codes={0: "censored", 1: "recurrence", 2: "dead"}, sex_col="sex",
        sex_map={0: "F", 1: "M"}, age_col="age", covariates=["rx", "node4", "extent"],
        initial_state="disease_free")


OS = Endpoint(name="overall_survival", events=["dead"])
CASES = [
    Case("lung", "multi-site, 18 tiny sites", lung, [
        Estimand("HR female vs male, death", hazard_ratio(OS, ["sex", "age", "ph.ecog"],
                                                         "sex[F]", {"sex": "M"})),
        Estimand("survival at 1 year", landmark(OS, 365.25)),
    ]),
    Case("ebmt", "6 states", ebmt, [
        Estimand("HR age >40 vs <=20, death",
                 hazard_ratio(Endpoint(name="os", events=["death"]), ["agecl"], "agecl[gt_40]",
                              {"agecl": "le_20"})),
        Estimand("relapse by 1 year (death competing)",
                 landmark(Endpoint(name="rel", events=["relapse"], competing=["death"]),
                          365.25),
                 why_not="at the lower bound: the monotone families miss the early peak of "
                         "leaving 'transplant' (its sojourn KS check fails); with --families "
                         "piecewise 0.114"),
    ]),
    Case("aidssi", "competing risks", aidssi, [
        Estimand("cause-specific HR CCR5 WM vs WW, AIDS",
                 hazard_ratio(Endpoint(name="aids", events=["aids"], competing=["si_switch"]),
                              ["ccr5"], "ccr5[WM]", {"ccr5": "WW"})),
        Estimand("AIDS by 5 years (SI competing)",
                 landmark(Endpoint(name="aids", events=["aids"], competing=["si_switch"]),
                          5 * 365.25)),
    ]),
    Case("cgd", "recurrent events, 13 sites", cgd, [
        Estimand("rate ratio rIFN-g vs placebo, infections",
                 rate_ratio(["no_infection", *(f"infection{s}" for s in
                                               ["", "_2", "_3", "_4", "_5", "_6", "_7"])],
                            "treat", "rIFN-g")),
        Estimand("rate ratio rIFN-g vs placebo, later infections (2nd on)",
                 rate_ratio([f"infection{s}" for s in ["", "_2", "_3", "_4", "_5", "_6", "_7"]],
                            "treat", "rIFN-g")),
        Estimand("infection-free at 300 days",
                 landmark(Endpoint(name="first", events=["infection"]), 300)),
    ]),
    Case("pbcseq", "repeated measurements", pbcseq, [
        Estimand("HR per log baseline bilirubin, death",
                 hazard_ratio(Endpoint(name="death", events=["dead"], competing=["transplant"]),
                              ["log_bili0", "age"], "log_bili0")),
        Estimand("death by 5 years (transplant competing)",
                 landmark(Endpoint(name="death", events=["dead"], competing=["transplant"]),
                          5 * 365.25)),
    ]),
    Case("stanford", "delayed entry", stanford, [
        Estimand("HR transplanted vs waiting, death (time-varying)",
                 time_varying_hazard_ratio(["waiting", "transplanted"], "transplanted",
                                           "dead")),
        Estimand("survival at 1 year", landmark(OS, 365.25)),
    ]),
    Case("colon", "illness-death", colon, [
        Estimand("HR Lev+5FU vs Obs, recurrence",
                 hazard_ratio(Endpoint(name="rec", events=["recurrence"], competing=["dead"]),
                              ["rx"], "rx[Lev_plus_5FU]", {"rx": "Obs"})),
        Estimand("recurrence by 3 years (death competing)",
                 landmark(Endpoint(name="rec", events=["recurrence"], competing=["dead"]),
                          3 * 365.25)),
    ]),
]


# -- the run -------------------------------------------------------------------------------------


def run_case(case: Case, multiple: int, seed: int) -> dict:
    """Import, fit, simulate ``multiple`` times the size, validate, estimate."""
    timings = {}
    start = time.perf_counter()
    real = case.load()
    timings["import"] = time.perf_counter() - start
    start = time.perf_counter()
    model = MultiStateModel(**case.fit_options).fit(real)
    timings["fit"] = time.perf_counter() - start
    start = time.perf_counter()
    synthetic = model.simulate(n=multiple * real.n_persons, seed=seed)
    timings["simulate"] = time.perf_counter() - start
    start = time.perf_counter()
    report = compare(synthetic, real, seed=seed)
    timings["validate"] = time.perf_counter() - start
    counts = report.counts()
    rows = []
    for estimand in case.estimands:
        ours, theirs = estimand.compute(real), estimand.compute(synthetic)
        inside = ours.lower <= theirs.value <= ours.upper
        rows.append({"estimand": estimand.label, "real": ours, "synthetic": theirs,
                     "inside": inside, "why_not": "" if inside else estimand.why_not})
    return {"case": case, "n": real.n_persons, "states": len(model.state_order_),
            "transitions": len(model.transitions_), "sites": len(model.sites_),
            "passed": counts["pass"], "failed": counts["fail"],
            "failures": [f"{c.group}: {c.name} - {c.subject}" + (f" [{c.site}]" if c.site else "")
                         for c in report.failures],
            "rows": rows, "timings": timings}


def _print(results: list[dict], multiple: int) -> None:
    print(f"\n| cohort (shape) | n | estimand | real [95% CI] | synthetic ({multiple}x) | inside |")
    print("|---|---|---|---|---|---|")
    for result in results:
        case = result["case"]
        for k, row in enumerate(result["rows"]):
            real, syn = row["real"], row["synthetic"]
            head = (f"{case.name} ({case.shape})", f"{result['n']:,}") if k == 0 else ("", "")
            inside = "yes" if row["inside"] else ": ".join(["no", row["why_not"]][
                :2 if row["why_not"] else 1])
            print(f"| {head[0]} | {head[1]} | {row['estimand']} | {real.value:.3f} "
                  f"[{real.lower:.3f}, {real.upper:.3f}] | {syn.value:.3f} | {inside} |")
    print(f"\n| cohort | states | transitions | sites | checks passed | failed | import s | "
          f"fit s | simulate {multiple}x s | validate s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        t = result["timings"]
        print(f"| {result['case'].name} | {result['states']} | {result['transitions']} | "
              f"{result['sites']} | {result['passed']} | {result['failed']} | "
              f"{t['import']:.1f} | {t['fit']:.1f} | {t['simulate']:.1f} | {t['validate']:.1f} |")
    for result in results:
        if result["failures"]:
            print(f"\n{result['case'].name}: failed checks")
            for failure in result["failures"]:
                print(f"  - {failure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multiple", type=int, default=10, help="synthetic size / real size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="run only these cohorts")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or c.name in args.only]
    results, crashed = [], []
    for case in cases:
        start = time.perf_counter()
        try:
            results.append(run_case(case, args.multiple, args.seed))
        except TrajectoriesError as error:  # a clear error is a result too, but not a pass
            crashed.append(f"{case.name}: error: {error}")
        except Exception:  # noqa: BLE001 - the battery's job is to show a traceback as a bug
            crashed.append(f"{case.name}: TRACEBACK\n{traceback.format_exc()}")
        print(f"{case.name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    _print(results, args.multiple)
    for line in crashed:
        print(line)
    outside = sum(not row["inside"] for r in results for row in r["rows"])
    print(f"\n{len(results)} cohorts run, {len(crashed)} crashed; {outside} estimand(s) outside "
          "the real 95% CI")
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
