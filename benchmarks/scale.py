"""Scale benchmark: a sharded run of the multi-site scenario on 1 and 2 workers, then lazy
validation of the partitioned cohort and the full compare against an in-memory reference,
both block by block (the cohort is never loaded whole).

Run: python benchmarks/scale.py [--n 10000000] [--workers 1,2] [--executor local|dask]
Each case runs in a fresh subprocess whose workers are pinned to one thread each (polars,
BLAS), so that scaling from 1 to N workers measures the workers, not hidden thread pools.
Peak memory per worker is the largest resident set of any worker process (of the coordinator
itself when one worker runs in process). Targets (issue 7): >= 1.8x from 1 to 2 workers,
< 2 GiB per worker, 10,000,000 persons simulated and written in < 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trajectories.parallel import Parallel

SINGLE_THREAD = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "MKL_NUM_THREADS": "1"}


def peaks_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children so far."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def case_simulate(args: argparse.Namespace, workers: int, out: str) -> dict:
    from trajectories.cohort import read_partitioned
    from trajectories.simulate import MarkovSimulator
    from trajectories.simulate.sharded import simulate_sharded

    simulator = MarkovSimulator(args.scenario, block_size=args.block_size)
    start, cpu = time.perf_counter(), cpu_seconds()
    simulate_sharded(simulator, out, n=args.n, seed=1, parallel=Parallel(args.executor, workers))
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    manifest = read_partitioned(out).manifest.model_dump()
    own, children = peaks_mib()
    return {
        "workers": workers, "seconds": seconds, "cpu_seconds": cpu, "persons": args.n,
        "events": manifest["n_events"], "blocks": manifest["n_blocks"],
        "digests": [(b["persons_sha256"], b["events_sha256"]) for b in manifest["blocks"]],
        "bytes": sum(p.stat().st_size for p in Path(out).rglob("*.parquet")),
        "coordinator_mib": own,
        "worker_mib": own if workers == 1 and args.executor == "local" else children,
    }


def case_validate(args: argparse.Namespace, workers: int, out: str) -> dict:
    from validation.endpoints import Endpoint, default_endpoints
    from validation.lazy import validate_partitioned

    endpoints = [
        *default_endpoints(["progression_free", "progressed", "death"], ["death"]),
        Endpoint(name="progression", events=["progressed"], competing=["death"]),
    ]
    start, cpu = time.perf_counter(), cpu_seconds()
    figures = validate_partitioned(out, endpoints, by=("arm",),
                                   resolution=args.resolution or "auto",
                                   parallel=Parallel(args.executor, workers))
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    own, children = peaks_mib()
    medians = {}
    for name, curve in figures.kaplan_meier.items():
        for arm in ("control", "treatment"):
            rows = curve.filter((curve["arm"] == arm) & (curve["survival"] <= 0.5))
            medians[f"{name}/{arm}"] = rows["time"].min() / 30.44 if rows.height else None
    return {"workers": workers, "seconds": seconds, "cpu_seconds": cpu,
            "persons": figures.n_persons,
            "coordinator_mib": own,
            "worker_mib": own if workers == 1 and args.executor == "local" else children,
            "medians_months": medians, "transitions": figures.transitions.rows()}


def case_compare(args: argparse.Namespace, workers: int, out: str) -> dict:
    from trajectories.cohort import read_partitioned
    from trajectories.simulate import MarkovSimulator
    from validation import compare

    reference = MarkovSimulator(args.scenario).simulate(args.reference_n, seed=2)
    start, cpu = time.perf_counter(), cpu_seconds()
    report = compare(read_partitioned(out), reference, parallel=Parallel(args.executor, workers),
                     resolution=args.resolution if args.resolution else "auto")
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    own, children = peaks_mib()
    return {"workers": workers, "seconds": seconds, "cpu_seconds": cpu,
            "coordinator_mib": own,
            "worker_mib": own if workers == 1 and args.executor == "local" else children,
            "counts": report.counts(), "failed": [f"{c.group}: {c.name} ({c.subject})"
                                                  for c in report.failures],
            "context": report.context}


def run_child(args: argparse.Namespace, case: str, workers: int, out: str) -> dict:
    env = {**os.environ, **SINGLE_THREAD}
    command = [sys.executable, __file__, "--n", str(args.n), "--scenario", args.scenario,
               "--block-size", str(args.block_size), "--executor", args.executor,
               *(["--resolution", str(args.resolution)] if args.resolution else []),
               "--reference-n", str(args.reference_n),
               "--child", case, str(workers), out]
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"case {case} with {workers} worker(s) failed:\n{finished.stderr}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000_000, help="persons")
    parser.add_argument("--scenario", default="oncology_nsclc_two_arm")
    parser.add_argument("--block-size", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--executor", default="local", choices=["local", "dask"])
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--resolution", type=float, default=None,
                        help="validate on times rounded up to this many days (default: auto, "
                             "whole days above 2,000,000 persons)")
    parser.add_argument("--reference-n", type=int, default=10_000,
                        help="persons of the in-memory reference for the full compare")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        case, workers, out = args.child
        run = {"simulate": case_simulate, "validate": case_validate,
               "compare": case_compare}[case]
        print(json.dumps(run(args, int(workers), out)))
        return

    counts = [int(w) for w in args.workers.split(",")]
    root = Path(tempfile.mkdtemp(prefix="scale-", dir=args.dir))
    print(f"scale benchmark: {args.n:,} persons of {args.scenario}, blocks of "
          f"{args.block_size:,}, executor {args.executor}, one thread per worker, "
          f"{os.cpu_count()} CPUs")
    try:
        runs = {}
        for workers in counts:
            out = str(root / f"w{workers}")
            r = runs[workers] = run_child(args, "simulate", workers, out)
            print(f"  simulate + write, {workers} worker(s): {r['seconds']:.1f} s "
                  f"(CPU {r['cpu_seconds']:.1f} s: {r['persons'] / r['cpu_seconds']:,.0f} "
                  f"persons per CPU-second), "
                  f"{r['persons'] / r['seconds']:,.0f} persons/s, "
                  f"{r['events'] / r['seconds'] / 1e6:.2f} M events/s ({r['events']:,} events, "
                  f"{r['blocks']} blocks, {r['bytes'] / 2**30:.2f} GiB on disk); peak memory "
                  f"per worker {r['worker_mib']:,.0f} MiB, coordinator "
                  f"{r['coordinator_mib']:,.0f} MiB")
        base, last = runs[counts[0]], runs[counts[-1]]
        if len(counts) > 1:
            same = all(r["digests"] == base["digests"] for r in runs.values())
            print(f"  scaling {counts[0]} -> {counts[-1]} workers: "
                  f"{base['seconds'] / last['seconds']:.2f}x in wall time; CPU per person "
                  f"{last['cpu_seconds'] / base['cpu_seconds']:.2f}x of the single worker's "
                  f"(1.00 = no overhead); files identical: {same}")
        for workers in counts[:-1]:
            shutil.rmtree(root / f"w{workers}", ignore_errors=True)
        v = run_child(args, "validate", counts[-1], str(root / f"w{counts[-1]}"))
        timing = (f"rounded up to {args.resolution:g} d" if args.resolution else
                  "auto: whole days above 2,000,000 persons, else exact")
        medians = ", ".join(f"{k} {m:.2f}" for k, m in v["medians_months"].items()
                            if m is not None)
        print(f"  lazy validation, {counts[-1]} worker(s): {v['seconds']:.1f} s "
              f"(CPU {v['cpu_seconds']:.1f} s) "
              f"({v['persons'] / v['seconds']:,.0f} persons/s; 3 endpoints by arm, transitions, "
              f"sojourns; times {timing}"
              f"); peak memory per worker {v['worker_mib']:,.0f} MiB, coordinator "
              f"{v['coordinator_mib']:,.0f} MiB")
        print(f"  median months: {medians}")
        c = run_child(args, "compare", counts[-1], str(root / f"w{counts[-1]}"))
        print(f"  full compare (validation.compare, as `trajectories validate`) against "
              f"{args.reference_n:,} reference persons, {counts[-1]} worker(s): "
              f"{c['seconds']:.1f} s (CPU {c['cpu_seconds']:.1f} s); {c['counts']['pass']} "
              f"passed, {c['counts']['fail']} failed; peak memory per worker "
              f"{c['worker_mib']:,.0f} MiB, coordinator {c['coordinator_mib']:,.0f} MiB; "
              f"{c['context'].get('synthetic read')}; resolution "
              f"{c['context'].get('resolution (days)', 'exact')}")
        for failure in c["failed"]:
            print(f"    failed: {failure}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
