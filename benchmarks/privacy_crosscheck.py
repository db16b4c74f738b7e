"""Cross-check of trajectories.privacy's attacks against anonymeter (Giomi et al. 2023), run in a
separate environment: anonymeter pins numpy < 2, which this project's environment cannot hold.

For two public real cohorts (lifelines' Rossi recidivism data and GBSG2 breast cancer, through
trajectories.fit.references) the script splits each into random halves (train T, holdout H),
fits ``MultiStateModel`` on T and simulates a synthetic cohort S with ``covariate_draw=
"resample"`` (copies whole covariate rows) and ``"copula"`` (aggregates only), and adds S = T
verbatim. S, T and H are written as CSV person records (trajectories.privacy.records); ours
are computed on those records here, anonymeter's SinglingOutEvaluator (univariate,
multivariate), LinkabilityEvaluator (covariate row | outcome summary) and InferenceEvaluator
(each secret against every other column) in a subprocess of the venv
``~/.cache/trajectories/anonymeter-venv`` (created with ``pip install anonymeter`` if missing).

Run: python benchmarks/privacy_crosscheck.py [--synthetic 2000] [--seed 1] [--attempts 100000]
Prints, per cohort, generator and attack: train / holdout success rates and the risk with its
95% interval, ours beside anonymeter's, and the ratio of the two risks (of the train success
rates where both risks are below 0.02).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import venv
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from trajectories.cohort import Cohort, holdout_split
from trajectories.fit import MultiStateModel
from trajectories.fit.references import gbsg2
from trajectories.privacy import aligned_records, equal_sizes, inference, linkability, singling_out
from trajectories.privacy.metrics import capped

CACHE = Path.home() / ".cache" / "trajectories"
VENV = CACHE / "anonymeter-venv"
WORK = CACHE / "privacy-crosscheck"
N_ATTACKS = 500

DRIVER = r'''
"""Run anonymeter on the cases of a JSON file; write its results as JSON."""
import json, sys, time, warnings
import pandas as pd
from anonymeter.evaluators import (InferenceEvaluator, LinkabilityEvaluator,
                                   SinglingOutEvaluator)

warnings.simplefilter("ignore")
config = json.load(open(sys.argv[1]))
results = {}
for case in config["cases"]:
    syn, ori, ctl = (pd.read_csv(case[k]) for k in ("synthetic", "train", "holdout"))
    n = case["n_attacks"]
    out = {}

    def record(name, evaluator):
        r, risk = evaluator.results(), evaluator.risk()
        out[name] = {"rate_train": r.attack_rate.value, "rate_holdout": r.control_rate.value,
                     "rate_baseline": r.baseline_rate.value, "risk": risk.value,
                     "interval": list(risk.ci), "n_success": r.n_success,
                     "n_control": r.n_control, "seconds": time.time() - start}

    for mode in ("univariate", "multivariate"):
        start = time.time()
        so = SinglingOutEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n, n_cols=3,
                                  max_attempts=config["attempts"], seed=config["seed"])
        record(f"singling out {mode}", so.evaluate(mode=mode))
        out[f"singling out {mode}"]["predicates_found"] = len(so.queries())
    start = time.time()
    link = LinkabilityEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n, n_neighbors=1,
                                aux_cols=(case["covariates"], case["outcomes"]))
    record("linkability", link.evaluate(n_jobs=1))
    for secret in case["secrets"]:
        start = time.time()
        inf = InferenceEvaluator(ori=ori, syn=syn, control=ctl, n_attacks=n, secret=secret,
                                 aux_cols=[c for c in case["columns"] if c != secret],
                                 regression=secret in case["numeric"])
        record(f"inference {secret}", inf.evaluate(n_jobs=1))
    results[case["name"]] = out
json.dump(results, open(sys.argv[2], "w"), indent=1,
          default=lambda o: o.item() if hasattr(o, "item") else str(o))
'''


def anonymeter_python() -> Path | None:
    """The anonymeter venv's python, created (``pip install anonymeter``) if missing; None if
    pip cannot install it (say, no registry)."""
    python = VENV / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import anonymeter"],
                                           capture_output=True).returncode == 0:
        return python
    print(f"creating {VENV} and installing anonymeter ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    done = subprocess.run([python, "-m", "pip", "install", "-q", "anonymeter"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print("pip could not install anonymeter (no registry?):\n" + done.stderr[-2000:])
        return None
    return python


def rossi() -> Cohort:
    from lifelines.datasets import load_rossi

    from trajectories.io import from_survival_table

    return from_survival_table(load_rossi(), "week", "arrest", time_unit="weeks", age_col="age")


def synthetic_cohorts(train: Cohort, n: int, seed: int) -> dict[str, Cohort]:
    """S for each generator: resampled rows, the copula, and train itself."""
    out = {}
    for draw in ("resample", "copula"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[draw] = MultiStateModel(covariate_draw=draw).fit(train).simulate(n, seed=seed)
    out["copy"] = train
    return out


def ours(s: pl.DataFrame, t: pl.DataFrame, h: pl.DataFrame, records, secrets: list[str],
         n_attacks: int, attempts: int, seed: int) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    columns = records.complete_columns
    results = {}
    for mode in ("univariate", "multivariate"):
        results[f"singling out {mode}"] = singling_out(s, t, h, columns, rng, mode=mode,
                                                       n_attacks=n_attacks,
                                                       max_attempts=attempts)
    results["linkability"] = linkability(s, t, h, (records.covariate_columns,
                                                   records.outcome_columns), rng,
                                         n_attacks=n_attacks)
    for result in inference(s, t, h, columns, secrets, rng, n_attacks=n_attacks):
        results[f"inference {result.subject}"] = result
    return {name: {"rate_train": r.main_rate.value, "rate_holdout": r.control_rate.value,
                   "risk": r.risk[0], "interval": list(r.risk[1:]),
                   "judged": list(r.judged_interval), "n_attacks": r.n_attacks,
                   **({"predicates_found": r.n_attacks} if "singling" in name else {})}
            for name, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=2000, help="synthetic persons")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--attempts", type=int, default=100_000,
                        help="multivariate singling-out attempts (both tools)")
    args = parser.parse_args()
    python = anonymeter_python()
    WORK.mkdir(parents=True, exist_ok=True)
    cases, mine = [], {}
    for cohort_name, load in (("rossi", rossi), ("gbsg2", gbsg2)):
        cohort = load()
        train, holdout = holdout_split(cohort, 0.5, seed=args.seed)
        for generator, synthetic in synthetic_cohorts(train, args.synthetic, args.seed).items():
            name = f"{cohort_name}/{generator}"
            records = aligned_records(synthetic, train, holdout)
            rng = np.random.default_rng(args.seed)
            t, h = equal_sizes(records.train, records.holdout, rng)
            s = capped(records.synthetic, args.synthetic, rng)
            paths = {}
            for part, frame in (("synthetic", s), ("train", t), ("holdout", h)):
                paths[part] = str(WORK / f"{cohort_name}-{generator}-{part}.csv")
                frame.write_csv(paths[part])
            # Ours read what anonymeter reads.
            s, t, h = (pl.read_csv(paths[p], schema=records.train.schema)
                       for p in ("synthetic", "train", "holdout"))
            numeric = [c for c in records.complete_columns if not records.categorical(c)]
            secrets = [c for c in records.complete_columns
                       if c != "site" and t.get_column(c).n_unique() > 1]
            n_attacks = min(N_ATTACKS, t.height)
            start = time.time()
            mine[name] = ours(s, t, h, records, secrets, n_attacks, args.attempts, args.seed)
            mine[name]["seconds"] = time.time() - start
            cases.append({"name": name, **paths, "n_attacks": n_attacks,
                          "columns": records.complete_columns, "numeric": numeric,
                          "covariates": records.covariate_columns,
                          "outcomes": records.outcome_columns, "secrets": secrets})
            print(f"{name}: |S| {s.height}, |T| = |H| = {t.height}, ours in "
                  f"{mine[name]['seconds']:.1f} s", flush=True)
    theirs: dict = {}
    if python is not None:
        config, output = WORK / "cases.json", WORK / "anonymeter.json"
        config.write_text(json.dumps({"cases": cases, "attempts": args.attempts,
                                      "seed": args.seed}))
        (WORK / "driver.py").write_text(DRIVER)
        start = time.time()
        run = subprocess.run([python, WORK / "driver.py", config, output],
                             capture_output=True, text=True)
        if run.returncode != 0:
            print("anonymeter failed:\n" + run.stderr[-4000:])
        else:
            theirs = json.loads(output.read_text())
            print(f"anonymeter: {time.time() - start:.0f} s for every case")
    report(mine, theirs)


def _interval(values: list[float]) -> str:
    return f"[{values[0]:.2f}, {values[1]:.2f}]"


def report(mine: dict, theirs: dict) -> None:
    print("\n| case | attack | train / holdout success, ours | anonymeter | risk [95%], ours "
          "| anonymeter | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, attacks in mine.items():
        for attack, r in attacks.items():
            if attack == "seconds":
                continue
            a = theirs.get(name, {}).get(attack)
            ours_rates = f"{r['rate_train']:.3f} / {r['rate_holdout']:.3f}"
            ours_risk = f"{r['risk']:.3f} {_interval(r['interval'])}"
            if a is None:
                print(f"| {name} | {attack} | {ours_rates} | - | {ours_risk} | - | - |")
                continue
            if max(r["risk"], a["risk"]) >= 0.02:
                ratio = f"risk {r['risk'] / a['risk']:.2f}" if a["risk"] > 0 else "risk inf"
            else:
                ratio = (f"train success {r['rate_train'] / a['rate_train']:.2f}"
                         if a["rate_train"] > 0 else "-")
            print(f"| {name} | {attack} | {ours_rates} | {a['rate_train']:.3f} / "
                  f"{a['rate_holdout']:.3f} | {ours_risk} | {a['risk']:.3f} "
                  f"{_interval(a['interval'])} | {ratio} |")


if __name__ == "__main__":
    main()
