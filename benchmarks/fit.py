"""Fitting benchmark: MultiStateModel on the Stanford heart transplant and GBSG2 cohorts
(lifelines), simulated at ten times their size; prints reference versus synthetic median
survival, 1-year survival and the key hazard ratio (a Markdown table for the README), the
chosen families, and the fit time on 20,000 simulated persons.

Run: python benchmarks/fit.py [--multiple 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import time

import polars as pl

from trajectories import MarkovSimulator
from trajectories.fit import MultiStateModel
from trajectories.fit.references import gbsg2, stanford_heart, transplant_hazard_ratio
from validation import compare
from validation.cox import cox_hazard_ratios
from validation.endpoints import Endpoint, endpoint_times
from validation.survival import kaplan_meier, median_survival, survival_at

OS = Endpoint(name="overall_survival", events=["dead"])
RFS = Endpoint(name="recurrence_free_survival", events=["recurrence_or_death"])
GBSG2_COVARIATES = ["horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec", "estrec"]


def _curve_figures(cohort, endpoint) -> tuple[str, str]:
    frame = endpoint_times(cohort, endpoint)
    curve = kaplan_meier(frame["time"], frame["event"] == 1)
    median = median_survival(curve)
    year = survival_at(curve, 365.25)
    return (f"{median['median']:.0f} ({median['lower']:.0f}-{median['upper']:.0f})",
            f"{year['value']:.3f} ({year['lower']:.3f}-{year['upper']:.3f})")


def _horth(cohort) -> dict:
    table = cox_hazard_ratios(endpoint_times(cohort, RFS), "time", "event", GBSG2_COVARIATES)
    return table.filter(pl.col("covariate") == "horTh[yes]").row(0, named=True)


def _row(label, reference, synthetic, endpoint, hr_name, hr_of) -> list[str]:
    rows = []
    for side, cohort in (("reference", reference), ("synthetic", synthetic)):
        median, year = _curve_figures(cohort, endpoint)
        hr = hr_of(cohort)
        rows.append(f"| {label} | {side} ({cohort.n_persons:,}) | {median} | {year} | "
                    f"{hr_name} {hr['hazard_ratio']:.2f} ({hr['lower']:.2f}-{hr['upper']:.2f})"
                    " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--multiple", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    table = ["| data | cohort | median survival, days (95% CI) | 1-year survival (95% CI) | "
             "hazard ratio (95% CI) |", "|---|---|---|---|---|"]
    for label, load, endpoint, hr_name, hr_of, endpoints in (
        ("Stanford heart transplant", stanford_heart, OS, "transplant",
         transplant_hazard_ratio, None),
        ("GBSG2 recurrence-free", gbsg2, RFS, "horTh", _horth, [RFS]),
    ):
        reference = load()
        start = time.perf_counter()
        model = MultiStateModel().fit(reference)
        fitted = time.perf_counter() - start
        synthetic = model.simulate(args.multiple * reference.n_persons, seed=args.seed)
        report = compare(synthetic, reference, endpoints=endpoints, figures=False)
        print(f"{label}: fitted in {fitted:.2f} s; validation "
              f"{'passed' if report.passed else 'FAILED'} {report.counts()}")
        for tr in model.transitions_:
            print(f"  {tr.key}: {tr.fit.family} ({tr.clock} clock), {tr.fit.n_events} events")
        table += _row(label, reference, synthetic, endpoint, hr_name, hr_of)
    print()
    print("\n".join(table))

    from trajectories.scenario import load_scenario

    scenario = load_scenario("oncology_nsclc_two_arm")
    reference = MarkovSimulator(scenario).simulate(20_000, seed=args.seed)
    start = time.perf_counter()
    MultiStateModel().fit(reference)
    print(f"\nfit of 20,000 persons of {scenario.name}: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
