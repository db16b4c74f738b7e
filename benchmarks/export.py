"""Export benchmark: OMOP CDM v5.4 to DuckDB and Parquet for 1,000,000 persons of the
oncology scenario, and to PostgreSQL for 100,000; wall and CPU time, rows per second and peak
memory of each export. Targets: DuckDB under 30 s and 3 GiB on 2 cores.

Run: python benchmarks/export.py [--n 1000000] [--postgres-n 100000] [--postgres-url URL]
[--cohort DIR] [--source directory|memory]
(the PostgreSQL case needs a URL, e.g. the output of `bash .ci/postgres.sh`). Each export runs
in a fresh subprocess, so its peak memory (max RSS) is its own. The cohort is simulated to
disk first (or taken from --cohort); with --source directory (the default) the exporter
streams it from disk block by block and the time counts reading and checking it; with
--source memory the subprocess reads it whole first (counted in the peak, not in the time),
the way an exporter handed a Cohort works. CPU time is user + system time of the subprocess:
on a machine that other work also loads, compare it rather than wall time, and note the load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(kind: str, source: str, cohort_dir: str, target: str, url: str | None) -> dict:
    from trajectories import Cohort
    from trajectories.cohort.blocks import cohort_blocks
    from trajectories.io.omop import write_duckdb, write_parquet, write_postgres

    cohort = Cohort.read(cohort_dir) if source == "memory" else cohort_dir
    start, cpu = time.perf_counter(), cpu_seconds()
    if kind == "duckdb":
        counts = write_duckdb(cohort, target, overwrite=True)
    elif kind == "parquet":
        counts = write_parquet(cohort, target, overwrite=True)
    else:
        counts = write_postgres(cohort, url, "bench_export", overwrite=True)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    rows = sum(counts.values())
    return {"kind": kind, "persons": cohort_blocks(cohort).n_persons, "rows": rows,
            "seconds": seconds, "cpu_s": cpu, "rows_per_s": rows / seconds,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(kind: str, source: str, cohort_dir: Path, target: Path, url: str | None) -> dict:
    command = [sys.executable, __file__, "--child", kind, source, str(cohort_dir), str(target),
               url or ""]
    output = subprocess.run(command, capture_output=True, text=True, check=True,
                            env=os.environ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--postgres-n", type=int, default=100_000)
    parser.add_argument("--postgres-url", default=os.environ.get("TRAJECTORIES_TEST_POSTGRES_URL"))
    parser.add_argument("--cohort", type=Path, help="an existing cohort directory to export "
                        "(instead of simulating --n persons)")
    parser.add_argument("--source", choices=("directory", "memory"), default="directory")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, source, cohort_dir, target, url = args.child
        print(json.dumps(child(kind, source, cohort_dir, target, url or None)))
        return

    from trajectories.simulate import MarkovSimulator

    simulator = MarkovSimulator("oncology_nsclc_two_arm")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        large = args.cohort
        if large is None:
            large = simulator.simulate_to(folder / "large", n=args.n, seed=1)
        cases = [("duckdb", large, folder / "omop.duckdb"),
                 ("parquet", large, folder / "omop_parquet")]
        if args.postgres_url:
            simulator.simulate_to(folder / "small", n=args.postgres_n, seed=1)
            cases.append(("postgres", folder / "small", folder / "unused"))
        else:
            print("  (no --postgres-url: PostgreSQL case skipped)")
        print(f"  source: {args.source}; {os.cpu_count()} cores")
        for kind, cohort_dir, target in cases:
            load = os.getloadavg()[0]
            r = run(kind, args.source, cohort_dir, target, args.postgres_url)
            print(f"  {kind:<9} {r['persons']:>9,} persons -> {r['rows']:>11,} CDM rows in "
                  f"{r['seconds']:6.1f} s (CPU {r['cpu_s']:6.1f} s) = "
                  f"{r['rows_per_s'] / 1e6:5.2f} M rows/s, peak memory {r['peak_mib']:,.0f} MiB"
                  f" (load average {load:.1f} -> {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
