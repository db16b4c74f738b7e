"""Coverage of the combined intervals against a known truth: repetitions of real cohort ->
MultiStateModel() with defaults -> m synthetic replicates -> analysis -> combining rule.

Each repetition simulates a "real" cohort of n persons from a scenario whose answers are
known (true treatment hazard ratio 0.670, true 1-year overall survival in closed form), fits
``MultiStateModel(processes=False)`` (every other option at its default: families by AIC,
clock by AIC, copula covariates, fixed site effects, empirical censoring), makes m synthetic
replicates of k persons (parameter draws none, asymptotic or bootstrap), runs the Cox log
hazard ratio of the arm and the Kaplan-Meier 1-year survival on each (``trajectories.
inference.analyze`` on in-memory replicates) and combines them by the rule that fits the
draws (simple for none, proper for draws) and, where m >= 2, by Reiter's partially synthetic
rule. The naive interval (synthetic persons taken as real) and the real cohort's own interval
are the anchors. Rows:

- ``weibull_*``: one event (alive -> dead), Weibull hazard (shape 1.2, scale 855 days),
  treatment HR 0.670, no other effect, three sites that differ only in follow-up and loss
  (so the unadjusted Cox HR is exactly 0.670 and S(365) is a two-arm mixture);
- ``bathtub_*`` (misspecified): the same with a piecewise-constant "bathtub" hazard (high for
  90 days, low to day 540, high again), a shape none of the default families (exponential,
  Weibull, Gompertz, log-normal, log-logistic) can follow;
- ``augment_right`` / ``augment_wrong``: PPI++ (``trajectories.inference.augment``) of a real
  cohort of 200 from a one-site trial with a prognostic factor (``risk`` high, HR 3, 40%)
  powered by 2,000 synthetic persons simulated from the true scenario (an external
  natural-history model that is right) or from one whose treatment HR is 1.5 (wrong); the
  truth of the unadjusted (marginal, non-collapsible) log HR comes from one simulation of
  10^6 persons, S(365) in closed form.

Every repetition draws from its own ``SeedSequence(seed, spawn_key=(truth, n, repetition))``
(the real cohort: rows with the same truth and n share their real cohorts) and
``SeedSequence(seed, spawn_key=(truth, n, repetition, k, m, draws))`` (the synthetic side).
No validation runs; cohorts are built in memory.

Run: python benchmarks/coverage.py [--reps 200] [--seed 1] [--only ROW ...] [--quick]
[--list]. Prints a Markdown table: per row, estimand and rule, coverage of the truth with its
Monte Carlo standard error, the naive interval's coverage, bias, mean interval width and its
ratio to the real-only width, and the stated standard error over the spread of the estimates.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajectories.cohort import Cohort
from trajectories.errors import TrajectoriesError
from trajectories.fit import MultiStateModel
from trajectories.inference import (
    HazardRatio,
    Landmark,
    Replicates,
    analyze,
    augment,
    combine,
)
from trajectories.inference.analyses import choose_endpoint, cohort_endpoints
from trajectories.scenario import Scenario, scenario_from_dict
from trajectories.simulate import MarkovSimulator
from validation.endpoints import endpoint_times

HR = 0.670
WRONG_HR = 1.5
LANDMARK_DAYS = 365.0
SHAPE, SCALE = 1.2, 855.0
BATHTUB = {"breakpoints": [90.0, 540.0], "rates": [0.003, 0.0004, 0.0015]}
RISK_HR, RISK_SHARE = 3.0, 0.4
AUGMENT_N, AUGMENT_MULTIPLE = 200, 10
TRUTH_PERSONS = 1_000_000
Z = 1.959963984540054

ANALYSES = {"log HR": HazardRatio(covariate="arm", level="treatment"),
            "S(1 y)": Landmark(days=LANDMARK_DAYS)}
TRUTH_CODES = {"weibull": 1, "bathtub": 2, "prognostic": 3}
DRAW_CODES = {"none": 0, "asymptotic": 1, "bootstrap": 2, "right": 3, "wrong": 4}


# -- the truths -----------------------------------------------------------------------------------


def scenario_dict(truth: str, log_hr: float = math.log(HR)) -> dict:
    """The true scenario ``truth`` as a dict (see the module docstring)."""
    if truth == "bathtub":
        hazard = {"family": "piecewise", **BATHTUB}
    else:
        hazard = {"family": "weibull", "shape": SHAPE, "scale": SCALE}
    effects: dict = {"arm": {"treatment": log_hr}}
    covariates: dict = {"arm": {"kind": "categorical",
                                "levels": {"control": 0.5, "treatment": 0.5}}}
    sites = [{"name": "A", "share": 0.5},
             {"name": "B", "share": 0.3, "followup_days": 730.0},
             {"name": "C", "share": 0.2, "followup_days": 1460.0,
              "loss_to_followup_per_year": 0.08}]
    if truth == "prognostic":
        effects["risk"] = {"high": math.log(RISK_HR)}
        covariates["risk"] = {"kind": "categorical",
                              "levels": {"low": 1 - RISK_SHARE, "high": RISK_SHARE}}
        sites = [{"name": "A", "share": 1.0}]
    return {
        "name": f"coverage_{truth}",
        "description": "benchmarks/coverage.py: a known truth",
        "initial_state": "alive",
        "states": [{"name": "alive"}, {"name": "dead", "absorbing": True}],
        "transitions": [{"from": "alive", "to": "dead", "hazard": hazard, "effects": effects}],
        "covariates": covariates,
        "calendar": {"enrolment_start": "2016-01-01", "enrolment_end": "2018-12-31"},
        "followup": {"max_days": 1095.0, "loss_to_followup_per_year": 0.03},
        "sites": sites,
    }


def baseline_cumulative_hazard(truth: str, t: float) -> float:
    if truth == "bathtub":
        edges = [0.0, *BATHTUB["breakpoints"], math.inf]
        return sum(rate * max(0.0, min(t, hi) - lo)
                   for lo, hi, rate in zip(edges[:-1], edges[1:], BATHTUB["rates"], strict=True))
    return (t / SCALE) ** SHAPE


def true_survival(truth: str, t: float = LANDMARK_DAYS) -> float:
    """The population's marginal survival at ``t``: a mixture over arm (and risk) cells."""
    h0 = baseline_cumulative_hazard(truth, t)
    risk = ([(1 - RISK_SHARE, 1.0), (RISK_SHARE, RISK_HR)] if truth == "prognostic"
            else [(1.0, 1.0)])
    return sum(0.5 * p * math.exp(-h0 * arm * ratio)
               for arm in (1.0, HR) for p, ratio in risk)


def overall_survival_rows(cohort: Cohort):
    endpoint = choose_endpoint(cohort_endpoints(cohort), None, ANALYSES["log HR"], "truth")
    return endpoint_times(cohort, endpoint)


def true_values(truth: str, persons: int, seed: int) -> dict[str, float]:
    """Truths on the working scales (log HR, log(-log S)); the marginal Cox log HR of the
    prognostic scenario from one simulation of ``persons`` (non-collapsible: not log 0.670)."""
    survival = true_survival(truth)
    values = {"S(1 y)": math.log(-math.log(survival))}
    if truth == "prognostic":
        big = MarkovSimulator(scenario(truth)).simulate(persons, seed=seed)
        rows = overall_survival_rows(big).select("time", "event", "arm")
        bound = ANALYSES["log HR"].bind(rows, ["arm"], "truth")
        values["log HR"], _ = bound.influence(rows)
    else:
        values["log HR"] = math.log(HR)
    return values


_SCENARIOS: dict[tuple[str, float], Scenario] = {}


def scenario(truth: str, log_hr: float = math.log(HR)) -> Scenario:
    key = (truth, log_hr)
    if key not in _SCENARIOS:
        _SCENARIOS[key] = scenario_from_dict(scenario_dict(truth, log_hr),
                                             source=f"<coverage {truth}>")
    return _SCENARIOS[key]


# -- rows -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One design: truth, n real persons, k = multiple * n per replicate, m replicates, draws
    (augment rows: the synthetic source, right or wrong)."""

    truth: str
    n: int
    multiple: int
    m: int
    draws: str

    @property
    def k(self) -> int:
        return self.multiple * self.n

    @property
    def augmented(self) -> bool:
        return self.draws in ("right", "wrong")

    @property
    def name(self) -> str:
        if self.augmented:
            return f"augment_{self.draws}"
        return f"{self.truth}_n{self.n}_k{self.multiple}n_m{self.m}_{self.draws}"


DEFAULT_ROWS = [  # in the order they run (priority first)
    Row("weibull", 500, 10, 5, "asymptotic"),
    Row("weibull", 500, 10, 1, "none"),
    Row("weibull", 200, 10, 5, "asymptotic"),
    Row("weibull", 200, 1, 1, "none"),
    Row("weibull", 500, 10, 5, "bootstrap"),
    Row("weibull", 200, 10, 5, "bootstrap"),
    Row("bathtub", 500, 10, 5, "asymptotic"),
    Row("bathtub", 500, 10, 1, "none"),
    Row("prognostic", AUGMENT_N, AUGMENT_MULTIPLE, 1, "right"),
    Row("prognostic", AUGMENT_N, AUGMENT_MULTIPLE, 1, "wrong"),
]
EXTRA_ROWS = [  # run with --only
    Row("weibull", 500, 1, 5, "asymptotic"),
    Row("weibull", 500, 10, 5, "none"),
    Row("weibull", 500, 10, 1, "asymptotic"),
    Row("weibull", 200, 10, 1, "none"),
    Row("weibull", 200, 1, 5, "none"),
    Row("weibull", 200, 1, 5, "asymptotic"),
    Row("bathtub", 200, 10, 5, "asymptotic"),
]
ROWS = {row.name: row for row in DEFAULT_ROWS + EXTRA_ROWS}


# -- one repetition -------------------------------------------------------------------------------


def real_seed(seed: int, row: Row, rep: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(TRUTH_CODES[row.truth], row.n, rep))


def synthetic_seed(seed: int, row: Row, rep: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(
        TRUTH_CODES[row.truth], row.n, rep, row.multiple, row.m, DRAW_CODES[row.draws]))


def _int_seed(sequence: np.random.SeedSequence) -> int:
    return int(sequence.generate_state(1)[0])


def one_replicates_rep(row: Row, seed: int, rep: int) -> dict[str, dict[str, tuple]]:
    """Per estimand: rule -> (theta, variance, lower, upper) on the working scale, plus
    'naive' and 'real' (lower, upper or the real cohort's own estimate)."""
    real = MarkovSimulator(scenario(row.truth)).simulate(
        row.n, seed=_int_seed(real_seed(seed, row, rep)))
    model = MultiStateModel(processes=False).fit(real)
    sequence = synthetic_seed(seed, row, rep)
    draw_seq, *sim_seqs = sequence.spawn(row.m + 1)
    rng = np.random.default_rng(draw_seq)
    provenance = model.provenance()
    cohorts = []
    for i, sim in enumerate(sim_seqs, start=1):
        drawn = model.draw(rng, row.draws, reference=real)
        replicate = {"index": i, "m": row.m, "draws": row.draws, "n_reference": row.n}
        cohorts.append(MarkovSimulator(drawn, provenance={**provenance, "replicate": replicate})
                       .simulate(row.k, seed=_int_seed(sim)))
    replicates = Replicates(Path("<memory>"), cohorts, [f"replicate-{i}" for i in
                                                         range(1, row.m + 1)],
                            row.draws, row.n, folder=True)
    own = Replicates(Path("<real>"), [real], ["real"], None, None, folder=False)
    out: dict[str, dict[str, tuple]] = {}
    for label, analysis in ANALYSES.items():
        result = analyze(replicates, analysis)
        c = result.combined
        here = {c.rule: (c.estimate, c.variance, *c.ci), "naive": c.naive_ci}
        if row.m >= 2:
            p = combine([e.theta for e in result.per_replicate],
                        [e.variance for e in result.per_replicate], rule="partially_synthetic",
                        n_reference=row.n, n_synthetic=result.n_synthetic)
            here[p.rule] = (p.estimate, p.variance, *p.ci)
        mine = analyze(own, analysis).combined
        here["real"] = (mine.estimate, mine.variance, *mine.ci)
        out[label] = here
    return out


def one_augment_rep(row: Row, seed: int, rep: int) -> dict[str, dict[str, tuple]]:
    """Per estimand: 'ppi++' and 'real' (influence variance) (theta, variance, lower, upper),
    'naive' (pooled) bounds, and lambda."""
    real = MarkovSimulator(scenario(row.truth)).simulate(
        row.n, seed=_int_seed(real_seed(seed, row, rep)))
    log_hr = math.log(HR if row.draws == "right" else WRONG_HR)
    synthetic = MarkovSimulator(scenario(row.truth, log_hr)).simulate(
        row.k, seed=_int_seed(synthetic_seed(seed, row, rep)))
    out: dict[str, dict[str, tuple]] = {}
    for label, analysis in ANALYSES.items():
        r = augment(real, synthetic, analysis)
        out[label] = {
            "ppi++": (r.theta, r.variance, *_working(label, r.ci)),
            "real": (r.real_theta, r.real_variance, *_working(label, r.real_ci)),
            "naive": _working(label, r.naive_ci),
            "lambda": (r.lam,),
        }
    return out


def _working(label: str, ci: tuple[float, float]) -> tuple[float, float]:
    """A reported interval (HR, survival) back on the working scale (log HR, log(-log S))."""
    lower, upper = ci
    if label == "log HR":
        return math.log(lower), math.log(upper)
    return math.log(-math.log(upper)), math.log(-math.log(lower))


# -- a row: repetitions and their summary -------------------------------------------------------


def run_row(row: Row, reps: int, seed: int, truths: dict[str, float],
            warned: Counter) -> dict:
    runs: list[dict] = []
    errors: Counter = Counter()
    start = time.perf_counter()
    one = one_augment_rep if row.augmented else one_replicates_rep
    for rep in range(reps):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                runs.append(one(row, seed, rep))
            except TrajectoriesError as error:  # a failed repetition is counted, not hidden
                errors[f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"] += 1
        for w in caught:
            warned[f"{w.category.__name__}: {str(w.message).splitlines()[0][:100]}"] += 1
        if (rep + 1) % 25 == 0:
            print(f"  {row.name}: {rep + 1}/{reps} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)
    return {"row": row, "reps": reps, "runs": runs, "errors": errors, "truths": truths,
            "seconds": time.perf_counter() - start}


def summarise(result: dict) -> list[dict]:
    """Lines of the table: one per estimand and rule."""
    row, runs = result["row"], result["runs"]
    lines = []
    if not runs:
        return lines
    for label in ANALYSES:
        truth = result["truths"][label]
        real = np.array([r[label]["real"] for r in runs])
        real_width = _width(label, real[:, 2], real[:, 3])
        naive = np.array([r[label]["naive"] for r in runs])
        rules = [k for k in runs[0][label] if k not in ("naive", "real", "lambda")] + ["real"]
        for rule in rules:
            a = np.array([r[label][rule] for r in runs])
            theta, variance, lower, upper = a.T
            covered = (lower <= truth) & (truth <= upper)
            p = float(covered.mean())
            naive_p = (float(np.mean((naive[:, 0] <= truth) & (truth <= naive[:, 1])))
                       if rule != "real" else math.nan)
            width = _width(label, lower, upper)
            sd = float(theta.std(ddof=1)) if theta.size > 1 else math.nan
            lam = (float(np.mean([r[label]["lambda"][0] for r in runs]))
                   if rule == "ppi++" else math.nan)
            lines.append({
                "row": row, "estimand": label, "rule": rule, "reps": len(runs),
                "coverage": p, "mc_se": math.sqrt(p * (1 - p) / len(runs)),
                "naive": naive_p, "bias": _bias(label, theta, truth), "width": width,
                "width_ratio": width / real_width,
                "se_ratio": math.sqrt(float(variance.mean())) / sd if sd > 0 else math.nan,
                "lambda": lam,
            })
    return lines


def _width(label: str, lower: np.ndarray, upper: np.ndarray) -> float:
    """Mean width: log HR scale for the hazard ratio, survival scale for the landmark."""
    if label == "log HR":
        return float(np.mean(upper - lower))
    return float(np.mean(np.exp(-np.exp(lower)) - np.exp(-np.exp(upper))))


def _bias(label: str, theta: np.ndarray, truth: float) -> float:
    """Mean error: of the log HR, or of the survival (reported scale)."""
    if label == "log HR":
        return float(np.mean(theta - truth))
    return float(np.mean(np.exp(-np.exp(theta))) - math.exp(-math.exp(truth)))


def _design(row: Row) -> tuple[str, str, str, str]:
    if row.augmented:
        source = f"truth, HR {HR}" if row.draws == "right" else f"wrong, HR {WRONG_HR}"
        return f"{row.n}", f"{row.k:,}", "1", f"PPI++ ({source})"
    return f"{row.n}", f"{row.k:,} ({row.multiple}n)", f"{row.m}", row.draws


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\nCoverage of the truth by 95% intervals (seed {args.seed}; truths: HR {HR}, "
          f"S(365) weibull {true_survival('weibull'):.4f}, bathtub "
          f"{true_survival('bathtub'):.4f}, prognostic {true_survival('prognostic'):.4f}). "
          "Fit: MultiStateModel(processes=False), defaults otherwise. Width: log HR, or "
          "survival; 'x real' divides it by the real cohort's own interval width. SE/SD: stated "
          "standard error (root mean variance, working scale) over the spread of the "
          "estimates.\n")
    print("| row | truth | n | k | m | draws | estimand | rule | reps | coverage (MC SE) | "
          "naive coverage | bias | mean width | x real | SE/SD |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        first = True
        for line in summarise(result):
            row = line["row"]
            n, k, m, draws = _design(row)
            head = (row.name, row.truth, n, k, m, draws) if first else ("",) * 6
            first = False
            rule = line["rule"] + (f" (lambda {line['lambda']:.2f})"
                                   if line["rule"] == "ppi++" else "")
            if line["rule"] == "real":
                rule = "real only" + (" (influence)" if row.augmented else "")
            naive = "" if math.isnan(line["naive"]) else f"{line['naive']:.3f}"
            print(f"| {' | '.join(head)} | {line['estimand']} | {rule} | {line['reps']} | "
                  f"{line['coverage']:.3f} ({line['mc_se']:.3f}) | {naive} | "
                  f"{line['bias']:+.4f} | {line['width']:.4f} | {line['width_ratio']:.2f} | "
                  f"{line['se_ratio']:.2f} |")
    print("\n| row | reps asked | failed | seconds | s / rep |")
    print("|---|---|---|---|---|")
    for result in results:
        failed = sum(result["errors"].values())
        print(f"| {result['row'].name} | {result['reps']} | {failed} | "
              f"{result['seconds']:.0f} | {result['seconds'] / max(result['reps'], 1):.2f} |")
        for message, count in result["errors"].most_common(3):
            print(f"|  | {count} x {message} | | | |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="repetitions per row")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", nargs="*", metavar="ROW", help="run only these rows")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 3 repetitions per row, truth from 10^5 persons")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    if args.list:
        for row in DEFAULT_ROWS + EXTRA_ROWS:
            print(row.name + ("" if row in DEFAULT_ROWS else "  (--only)"))
        return 0
    unknown = sorted(set(args.only or []) - set(ROWS))
    if unknown:
        parser.error(f"unknown row(s) {unknown}; --list shows them")
    rows = [ROWS[name] for name in args.only] if args.only else DEFAULT_ROWS
    reps = 3 if args.quick else args.reps
    persons = 100_000 if args.quick else TRUTH_PERSONS
    truths: dict[str, dict[str, float]] = {}
    results, crashed, warned = [], [], Counter()
    total = time.perf_counter()
    for row in rows:
        start = time.perf_counter()
        try:
            if row.truth not in truths:
                truths[row.truth] = true_values(row.truth, persons, args.seed)
            results.append(run_row(row, reps, args.seed, truths[row.truth], warned))
        except Exception:  # noqa: BLE001 - a crash is shown, the other rows still run
            crashed.append(f"{row.name}: TRACEBACK\n{traceback.format_exc()}")
        print(f"{row.name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    print_table(results, args)
    if truths.get("prognostic"):
        print(f"\nprognostic truth: marginal log HR {truths['prognostic']['log HR']:.4f} (HR "
              f"{math.exp(truths['prognostic']['log HR']):.4f}) from {persons:,} persons")
    if warned:
        print("\nwarnings (count: message)")
        for message, count in warned.most_common(10):
            print(f"- {count}: {message}")
    for line in crashed:
        print(line)
    print(f"\n{len(results)} rows run, {len(crashed)} crashed; "
          f"{time.perf_counter() - total:.0f} s")
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
