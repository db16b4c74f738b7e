"""Sequence model benchmark, side by side with SDV's PARSynthesizer.

Trains the sequence model on ``--n`` persons of a built-in scenario, samples as many, and
validates the sample against a held-out cohort of the same scenario (validation.compare); does
the same with SDV's PARSynthesizer when a Python with ``sdv`` installed is given (its own
virtual environment, not a project dependency: ``python3 -m venv /work/parvenv &&
/work/parvenv/bin/pip install sdv``). Prints training time, sampling time per 1,000 persons,
the validation verdicts and the distances, for both.

PAR's raw output breaks the data model (times out of order, no initial state, events after
death...), so it is repaired before validation, and the number of persons repaired is printed:
events sorted by time with negative times set to 0, an initial state at time 0 where the first
state is missing or late, everything after the first absorbing state dropped, follow-up
stretched to the last event, exits made to agree with the path, durations cut at follow-up.

PAR is slow (hours for SDV's default 128 epochs on 2 cores), so ``--par-cache DIR`` keeps its
raw sample (CSV) and timings (JSON, wall and CPU seconds) in a folder per scenario, n, epochs,
seed and training data fingerprint, and a later run with the same settings reuses them (the
table says so). ``--skip-sequence-model`` runs PAR alone (to fill the cache in the background).

Run: python benchmarks/sequence.py [--n 10000] [--par-python /work/parvenv/bin/python]
                                   [--par-epochs 1] [--par-cache /work/parcache]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from trajectories import Cohort, Manifest, MarkovSimulator
from trajectories.cohort import EVENT_COLUMNS, PERSON_COLUMNS
from trajectories.sequence import SequenceModel
from validation import compare

PAR_SCRIPT = r"""
import json, sys, time
import pandas as pd
from sdv.metadata import Metadata
from sdv.sequential import PARSynthesizer

source, target, epochs, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context, seed = json.loads(sys.argv[5]), int(sys.argv[6])
import numpy, torch
numpy.random.seed(seed)
torch.manual_seed(seed)
data = pd.read_csv(source)
metadata = Metadata.detect_from_dataframes({"events": data})
metadata.update_column(column_name="person_id", sdtype="id", table_name="events")
metadata.set_sequence_key(column_name="person_id", table_name="events")
metadata.set_sequence_index(column_name="time", table_name="events")
synthesizer = PARSynthesizer(metadata, context_columns=context, epochs=epochs, cuda=False,
                             verbose=False)
start, start_cpu = time.perf_counter(), time.process_time()
synthesizer.fit({"events": data})
trained, trained_cpu = time.perf_counter(), time.process_time()
sample = synthesizer.sample_sequences(num_sequences=n)
sample = sample["events"] if isinstance(sample, dict) else sample
sampled, sampled_cpu = time.perf_counter(), time.process_time()
sample.to_csv(target, index=False)
print(json.dumps({"train_seconds": trained - start, "sample_seconds": sampled - trained,
                  "train_cpu_seconds": trained_cpu - start_cpu,
                  "sample_cpu_seconds": sampled_cpu - trained_cpu,
                  "torch_threads": torch.get_num_threads()}))
"""
SAMPLE_FILE, TIMINGS_FILE = "sample.csv", "timings.json"

GROUPS = ("integrity", "survival", "transitions")


def run_sequence_model(reference: Cohort, n: int, args) -> dict:
    if args.model:
        # A model trained earlier (SequenceModel.save): its recorded training time is shown.
        model = SequenceModel.load(args.model, device=args.device)
        if model.training_.get("fingerprint") != reference.fingerprint():
            raise SystemExit(f"{args.model}: trained on other data than --n/--scenario give")
        trained = {"train_seconds": model.training_.get("seconds"),
                   "train_cpu_seconds": model.training_.get("cpu_seconds"),
                   "epochs": len(model.training_.get("history", [])), "source": "loaded"}
    else:
        overrides = {"device": args.device}
        if args.epochs:
            overrides["max_epochs"] = args.epochs
        if args.train_seed is not None:
            overrides["seed"] = args.train_seed
        model = SequenceModel(**overrides)
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(reference)
        trained = {"train_seconds": time.perf_counter() - wall,
                   "train_cpu_seconds": time.process_time() - cpu,
                   "epochs": len(model.training_["history"]), "source": "this run"}
        if args.save_model:
            model.save(args.save_model, overwrite=True)
    wall, cpu = time.perf_counter(), time.process_time()
    sampled = model.sample(n, seed=args.seed)
    return {"cohort": sampled, **trained, "sample_seconds": time.perf_counter() - wall,
            "sample_cpu_seconds": time.process_time() - cpu}


def _par_table(reference: Cohort) -> tuple[pl.DataFrame, list[str]]:
    persons = reference.persons.with_columns(
        pl.col("index_date").cast(pl.Int64).alias("index_day")).drop("index_date",
                                                                     "birth_date")
    context = [c for c in persons.columns if c != "person_id"]
    events = reference.events.with_columns(
        (pl.col("end_time") - pl.col("time")).alias("duration")).drop("end_time")
    return events.join(persons, on="person_id", how="left"), context


def repair_par(sample: pl.DataFrame, reference: Cohort, n: int) -> tuple[Cohort, int]:
    """PAR's rows as a valid Cohort (see the module docstring); also the persons repaired."""
    states = reference.state_spells()
    initial = states.filter(pl.col("first"))["state"].mode()[0]
    absorbing = set(states.filter(pl.col("next_state").is_null() & (
        pl.col("exit").is_in(["death", "absorbed"])))["state"].unique().to_list())
    absorbing -= set(states.filter(pl.col("next_state").is_not_null())["state"].to_list())
    rows = sample.with_columns(pl.col("time").clip(0.0).fill_null(0.0),
                               pl.col("code").fill_null(f"state:{initial}"))
    rows = rows.filter(pl.col("code").str.contains(r"^[a-z_]+:.+$"))
    rows = rows.sort("person_id", "time", pl.col("code").str.starts_with("state:").not_(),
                     maintain_order=True)
    first_state = rows.filter(pl.col("code").str.starts_with("state:")).group_by(
        "person_id").agg(pl.col("time").min().alias("first_state"))
    persons = rows.group_by("person_id", maintain_order=True).first().join(
        first_state, on="person_id", how="left")
    needs_initial = persons.filter(pl.col("first_state").is_null() | (pl.col("first_state") > 0))
    added = needs_initial.select("person_id", pl.lit(0.0).alias("time"),
                                 pl.lit(f"state:{initial}").alias("code"))
    rows = pl.concat([added, rows.select("person_id", "time", "code", "value", "duration")],
                     how="diagonal").sort("person_id", "time", maintain_order=True)
    # One state at time 0, and no state repeating the one before it (among the states kept
    # after the time-0 ones are dropped, so that A, B at 0, A becomes A alone).
    is_state = pl.col("code").str.starts_with("state:")
    rows = rows.with_row_index("row")
    same = (pl.col("person_id") == pl.col("person_id").shift(1)).fill_null(False)
    state_rows = rows.filter(is_state).with_columns(same.alias("same"))
    late = state_rows.filter(~(pl.col("same") & (pl.col("time") == 0))).with_columns(
        same.alias("same"), pl.col("code").shift(1).alias("before"))
    dropped = pl.concat([
        state_rows.filter(pl.col("same") & (pl.col("time") == 0)).select("row", "person_id"),
        late.filter(pl.col("same") & (pl.col("code") == pl.col("before")))
        .select("row", "person_id")])
    rows = rows.join(dropped.select("row"), on="row", how="anti").drop("row")
    is_absorbing = pl.col("code").is_in([f"state:{s}" for s in absorbing])
    rows = rows.with_columns(is_absorbing.alias("absorbing")).filter(
        (pl.col("absorbing").cum_sum().over("person_id") - pl.col("absorbing")) == 0)
    ends = rows.group_by("person_id", maintain_order=True).agg(
        pl.col("time").max().alias("last"), pl.col("absorbing").last().alias("absorbed"))
    persons = persons.join(ends, on="person_id").with_columns(
        pl.when(pl.col("absorbed")).then(pl.col("last"))
        .otherwise(pl.max_horizontal("followup_end", "last")).alias("followup_end"),
        pl.when(pl.col("absorbed")).then(pl.lit("death"))
        .when(pl.col("exit").is_in(["death", "absorbed"])).then(pl.lit("censored"))
        .otherwise(pl.col("exit")).alias("exit"))
    persons = persons.with_columns(
        pl.col("index_day").round().cast(pl.Int32).cast(pl.Date).alias("index_date"),
        (pl.col("index_day").round().cast(pl.Int64)
         - (pl.col("age") * 365.25).round().cast(pl.Int64)).cast(pl.Int32).cast(pl.Date)
        .alias("birth_date"),
        pl.col("sex").cast(pl.String))
    persons = persons.select(*PERSON_COLUMNS, *reference.covariates).with_columns(
        pl.col(c).cast(t) for c, t in PERSON_COLUMNS.items())
    has_value = reference.events.filter(pl.col("value").is_not_null())["code"].unique()
    has_end = reference.events.filter(pl.col("end_time").is_not_null())["code"].unique()
    rows = rows.join(persons.select("person_id", "followup_end"), on="person_id").with_columns(
        pl.when(pl.col("code").is_in(has_end.implode()))
        .then((pl.col("time") + pl.col("duration").fill_null(0).clip(0.0))
              .clip(upper_bound=pl.col("followup_end"))).alias("end_time"),
        pl.when(pl.col("code").is_in(has_value.implode())).then(pl.col("value"))
        .alias("value"))
    events = rows.select(*EVENT_COLUMNS).with_columns(
        pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items())
    repaired = int(pl.concat([needs_initial["person_id"], dropped["person_id"]]).n_unique())
    return Cohort(persons, events, Manifest.new("PARSynthesizer", persons.height)), repaired


def _par_cache_folder(root: Path, reference: Cohort, n: int, args) -> Path:
    """The cache folder of one PAR run: scenario, n, epochs, seed and the data's fingerprint."""
    key = f"{args.scenario}_n{n}_epochs{args.par_epochs}_seed{args.par_seed}"
    return root / f"{key}_{reference.fingerprint()[:12]}"


def _run_par_process(reference: Cohort, n: int, args, target: Path) -> dict | None:
    """Train and sample PAR in its own Python; its sample goes to ``target``; its timings
    (wall and CPU seconds, CPU of the child process as the OS counts it) are returned."""
    table, context = _par_table(reference)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "reference.csv"
        table.write_csv(source)
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            done = subprocess.run(
                [str(args.par_python), "-c", PAR_SCRIPT, str(source), str(target),
                 str(args.par_epochs), str(n), json.dumps(context), str(args.par_seed)],
                capture_output=True, text=True, timeout=args.par_timeout, check=False)
        except subprocess.TimeoutExpired:
            print(f"PARSynthesizer: no result within {args.par_timeout} s")
            return None
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        print(f"PARSynthesizer failed:\n{done.stderr[-2000:]}")
        return None
    timings = json.loads(done.stdout.strip().splitlines()[-1])
    timings["wall_seconds"] = time.perf_counter() - start
    timings["process_cpu_seconds"] = (after.ru_utime - before.ru_utime
                                      + after.ru_stime - before.ru_stime)
    timings |= {"scenario": args.scenario, "n": n, "epochs": args.par_epochs,
                "seed": args.par_seed, "reference_fingerprint": reference.fingerprint(),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    return timings


def run_par(reference: Cohort, n: int, args) -> dict | None:
    folder = None
    if args.par_cache:
        folder = _par_cache_folder(Path(args.par_cache), reference, n, args)
        if (folder / SAMPLE_FILE).is_file() and (folder / TIMINGS_FILE).is_file():
            timings = json.loads((folder / TIMINGS_FILE).read_text(encoding="utf-8"))
            timings["source"] = "cache"
            print(f"PARSynthesizer: reusing the cached result in {folder} (finished "
                  f"{timings.get('finished', '?')})")
            return _par_result(folder / SAMPLE_FILE, timings, reference, n)
    python = Path(args.par_python)
    if not python.is_file():
        print(f"PARSynthesizer: skipped ({python} not found)")
        return None
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / SAMPLE_FILE
        timings = _run_par_process(reference, n, args, target)
        if timings is None:
            return None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / SAMPLE_FILE).write_bytes(target.read_bytes())
            (folder / TIMINGS_FILE).write_text(json.dumps(timings, indent=1) + "\n",
                                               encoding="utf-8")
            print(f"PARSynthesizer: result stored in {folder}")
        timings["source"] = "this run"
        return _par_result(target, timings, reference, n)


def _par_result(path: Path, timings: dict, reference: Cohort, n: int) -> dict:
    sample = pl.read_csv(path, schema_overrides={"site": pl.String, "sex": pl.String})
    cohort, repaired = repair_par(sample, reference, n)
    print(f"PARSynthesizer: {repaired:,} of {cohort.n_persons:,} sampled persons needed repair "
          f"({sample.height:,} raw rows)")
    return {"cohort": cohort, **timings, "repaired_persons": repaired,
            "raw_rows": sample.height}


def summarise(cohort: Cohort, held_out: Cohort) -> dict:
    report = compare(cohort, held_out, seed=0, figures=False)
    judged = [c for c in report.checks if c.group in GROUPS and c.verdict != "info"]
    summary = {f"{g} passed": f"{sum(c.group == g and not c.failed for c in judged)}/"
                              f"{sum(c.group == g for c in judged)}" for g in GROUPS}

    def metric(group: str, name: str, subject: str | None = None) -> float | None:
        values = [c.metric for c in report.checks if c.group == group and c.name == name
                  and c.site is None and (subject is None or c.subject == subject)
                  and c.metric is not None]
        return max(values) if values else None

    summary |= {
        "KM max distance, OS": metric("survival", "Kaplan-Meier max distance",
                                      "overall_survival"),
        "KM max distance, EFS": metric("survival", "Kaplan-Meier max distance",
                                       "event_free_survival"),
        "jump chain TV (max)": metric("transitions", "jump chain total variation"),
        "occupation max diff": metric("transitions", "state occupation max difference"),
        "sojourn |log ratio| (max)": metric("transitions", "median sojourn |log ratio|"),
        "failed checks": [f"{c.group}: {c.name} ({c.subject}, {c.site or 'pooled'})"
                          for c in judged if c.failed],
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--scenario", default="oncology_nsclc_two_arm")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--par-python", default="/work/parvenv/bin/python")
    parser.add_argument("--par-epochs", type=int, default=1,
                        help="PAR's epochs (SDV's default is 128; one epoch is one full-batch "
                             "step taking ~52 minutes for 10,000 persons on 2 cores, so more "
                             "are infeasible here: use --par-cache)")
    parser.add_argument("--par-seed", type=int, default=0, help="PAR's numpy/torch seed")
    parser.add_argument("--par-timeout", type=int, default=3600 * 6)
    parser.add_argument("--par-cache", default=None,
                        help="folder keeping PAR's sample and timings, reused when the scenario, "
                             "n, epochs, seed and training data match")
    parser.add_argument("--skip-sequence-model", action="store_true",
                        help="run PAR only (for example to fill --par-cache)")
    parser.add_argument("--seed", type=int, default=3, help="the sequence model's sample seed")
    parser.add_argument("--train-seed", type=int, default=None,
                        help="the sequence model's training seed (default: the config's)")
    parser.add_argument("--model", default=None,
                        help="load this saved sequence model instead of training one (its "
                             "recorded training time is shown)")
    parser.add_argument("--save-model", default=None, help="save the trained sequence model here")
    args = parser.parse_args()

    simulator = MarkovSimulator(args.scenario)
    reference = simulator.simulate(args.n, seed=1)
    held_out = simulator.simulate(args.n, seed=2)
    print(f"{args.scenario}: {args.n:,} training persons ({reference.events.height:,} events), "
          f"{args.n:,} held-out persons; {torch.get_num_threads()} torch thread(s) on "
          f"{os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (CPU seconds below are robust "
          "to other processes, wall seconds are not)")
    results = {}
    if not args.skip_sequence_model:
        results["SequenceModel"] = run_sequence_model(reference, args.n, args)
    par = run_par(reference, args.n, args)
    if par is not None:
        results["PARSynthesizer"] = par

    rows: dict[str, dict] = {}
    for name, result in results.items():
        per_1000 = 1000 * result["sample_seconds"] / args.n
        rows[name] = {
            "training (s)": result["train_seconds"],
            "training CPU (s)": result.get("train_cpu_seconds"),
            "epochs": result["epochs"],
            "sampling per 1,000 persons (s)": per_1000,
            "persons sampled per second": args.n / result["sample_seconds"],
            **summarise(result["cohort"], held_out),
        }
        if "sample_cpu_seconds" in result:
            rows[name]["sampling CPU per 1,000 (s)"] = (1000 * result["sample_cpu_seconds"]
                                                        / args.n)
        if "process_cpu_seconds" in result:
            rows[name]["whole process CPU (s)"] = result["process_cpu_seconds"]
            rows[name]["whole process wall (s)"] = result["wall_seconds"]
        if "repaired_persons" in result:
            rows[name]["persons needing repair"] = result["repaired_persons"]
        if "source" in result:
            rows[name]["result from"] = result["source"]
    names = list(rows)
    keys = [k for k in dict.fromkeys(k for r in rows.values() for k in r) if k != "failed checks"]
    width = max(len(k) for k in keys) + 2
    print("\n" + "".ljust(width) + "".join(n.rjust(18) for n in names))
    for key in keys:
        cells = []
        for name in names:
            value = rows[name].get(key)
            cells.append(("-" if value is None else f"{value:,.3f}" if isinstance(value, float)
                          else str(value)).rjust(18))
        print(key.ljust(width) + "".join(cells))
    for name in names:
        failed = rows[name]["failed checks"]
        shown = "".join(f"\n  {f}" for f in failed[:12])
        more = f"\n  ... and {len(failed) - 12} more" if len(failed) > 12 else ""
        print(f"\n{name}: {len(failed)} failed check(s){shown}{more}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
