"""Export benchmark: OMOP CDM v5.4 to DuckDB and Parquet for 1,000,000 persons of the oncology
scenario, and to PostgreSQL for 100,000; rows per second and peak memory of each export.

Run: python benchmarks/export.py [--n 1000000] [--postgres-n 100000] [--postgres-url URL]
(the PostgreSQL case needs a URL, e.g. the output of `bash .ci/postgres.sh`). Each export runs
in a fresh subprocess, so its peak memory (max RSS) is its own; the cohort is simulated to disk
first and read back inside the subprocess (counted in the peak, not in the time).
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


def child(kind: str, cohort_dir: str, target: str, url: str | None) -> dict:
    from trajectories import Cohort
    from trajectories.io.omop import write_duckdb, write_parquet, write_postgres

    cohort = Cohort.read(cohort_dir)
    start = time.perf_counter()
    if kind == "duckdb":
        counts = write_duckdb(cohort, target, overwrite=True)
    elif kind == "parquet":
        counts = write_parquet(cohort, target, overwrite=True)
    else:
        counts = write_postgres(cohort, url, "bench_export", overwrite=True)
    seconds = time.perf_counter() - start
    rows = sum(counts.values())
    return {"kind": kind, "persons": cohort.n_persons, "rows": rows, "seconds": seconds,
            "rows_per_s": rows / seconds,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(kind: str, cohort_dir: Path, target: Path, url: str | None) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(cohort_dir), str(target),
               url or ""]
    output = subprocess.run(command, capture_output=True, text=True, check=True,
                            env=os.environ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--postgres-n", type=int, default=100_000)
    parser.add_argument("--postgres-url", default=os.environ.get("TRAJECTORIES_TEST_POSTGRES_URL"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, cohort_dir, target, url = args.child
        print(json.dumps(child(kind, cohort_dir, target, url or None)))
        return

    from trajectories.simulate import MarkovSimulator

    simulator = MarkovSimulator("oncology_nsclc_two_arm")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        simulator.simulate_to(folder / "large", n=args.n, seed=1)
        cases = [("duckdb", folder / "large", folder / "omop.duckdb"),
                 ("parquet", folder / "large", folder / "omop_parquet")]
        if args.postgres_url:
            simulator.simulate_to(folder / "small", n=args.postgres_n, seed=1)
            cases.append(("postgres", folder / "small", folder / "unused"))
        else:
            print("  (no --postgres-url: PostgreSQL case skipped)")
        for kind, cohort_dir, target in cases:
            r = run(kind, cohort_dir, target, args.postgres_url)
            print(f"  {kind:<9} {r['persons']:>9,} persons -> {r['rows']:>11,} CDM rows in "
                  f"{r['seconds']:6.1f} s = {r['rows_per_s'] / 1e6:5.2f} M rows/s, "
                  f"peak memory {r['peak_mib']:,.0f} MiB")


if __name__ == "__main__":
    main()
