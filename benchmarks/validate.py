"""Validation benchmark: 1,000,000 synthetic persons against 10,000 reference persons,
every check, report (JSON + HTML with figures) included.

Run: python benchmarks/validate.py [--n 1000000] [--reference-n 10000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from trajectories import MarkovSimulator
from validation import compare, write_html


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--reference-n", type=int, default=10_000)
    parser.add_argument("--scenario", default="oncology_nsclc_two_arm")
    args = parser.parse_args()

    simulator = MarkovSimulator(args.scenario)
    start = time.perf_counter()
    synthetic = simulator.simulate(args.n, seed=1)
    reference = simulator.simulate(args.reference_n, seed=2)
    print(f"simulated {args.n:,} + {args.reference_n:,} persons "
          f"({synthetic.events.height:,} synthetic events) in "
          f"{time.perf_counter() - start:.1f} s (not counted below)")

    start, cpu = time.perf_counter(), time.process_time()
    report = compare(synthetic, reference, seed=0)
    compared = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        report.write_json(Path(folder) / "report.json")
        write_html(report, Path(folder) / "report.html")
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu
    counts = report.counts()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"validated {args.n:,} vs {args.reference_n:,} persons: compare {compared:.1f} s, "
          f"with report {total:.1f} s ({cpu:.1f} s of CPU over the cores); "
          f"{counts['pass']} passed, {counts['fail']} failed, {counts['info']} shown; "
          f"peak memory {peak:,.0f} MiB (simulation included)")


if __name__ == "__main__":
    main()
