"""Survival benchmark: Kaplan-Meier rows/s on 10M rows (lifelines on 1M for scale), and the
other validation estimators at the sizes compare() meets.

Run: python benchmarks/km.py [--rows 10000000] [--lifelines-rows 1000000] [--skip-cox]
Times are the best of ``--repeat`` runs (wall clock, all cores); data are continuous
exponential times with uniform censoring, so nearly every time is distinct (the worst case).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable

import numpy as np
import polars as pl


def sample(n: int, seed: int) -> tuple[pl.Series, pl.Series]:
    rng = np.random.default_rng(seed)
    t, c = rng.exponential(365.0, n), rng.uniform(0, 1500.0, n)
    return pl.Series("time", np.minimum(t, c)), pl.Series("event", (t <= c).astype(np.int8))


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def report(label: str, rows: int, seconds: float) -> None:
    print(f"{label:<52} {rows:>12,} rows {seconds:8.2f} s {rows / seconds:>14,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--lifelines-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-cox", action="store_true", help="skip the ~20 s Cox case")
    args = parser.parse_args()

    from lifelines import KaplanMeierFitter

    from validation import cox, survival, two_sample

    print(f"cores: {os.cpu_count()}, polars threads: {pl.thread_pool_size()}")
    time_, event = sample(args.rows, 0)
    seconds = best_of(args.repeat, lambda: survival.kaplan_meier(time_, event))
    report("kaplan_meier (validation.survival)", args.rows, seconds)

    small_t, small_e = time_[: args.lifelines_rows], event[: args.lifelines_rows]
    seconds = best_of(args.repeat, lambda: survival.kaplan_meier(small_t, small_e))
    report("kaplan_meier (validation.survival)", args.lifelines_rows, seconds)
    t_np, e_np = small_t.to_numpy(), small_e.to_numpy()
    seconds = best_of(1, lambda: KaplanMeierFitter().fit(t_np, e_np))
    report("KaplanMeierFitter (lifelines)", args.lifelines_rows, seconds)

    status = pl.Series(np.where(event.to_numpy() == 1,
                                1 + (np.arange(args.rows) % 3 == 0), 0).astype(np.int8))
    seconds = best_of(args.repeat, lambda: survival.aalen_johansen(time_, status))
    report("aalen_johansen", args.rows, seconds)
    half = args.rows // 2
    seconds = best_of(args.repeat, lambda: two_sample.logrank(time_[:half], event[:half],
                                                              time_[half:], event[half:]))
    report("logrank (two halves)", args.rows, seconds)

    big_t, big_e = time_[:1_000_000], event[:1_000_000]
    ref_t, ref_e = sample(10_000, 1)
    seconds = best_of(1, lambda: two_sample.distance_threshold(
        big_t, big_e, ref_t, ref_e, n_boot=200, rng=np.random.default_rng(0)))
    report("distance_threshold 1M vs 10k, 200 replicates", 1_010_000, seconds)
    seconds = best_of(1, lambda: two_sample.distance_threshold(
        big_t, big_e, ref_t, ref_e, n_boot=200, rng=np.random.default_rng(0), horizon=365.0))
    report("  same, horizon 365 d", 1_010_000, seconds)

    if not args.skip_cox:
        rng = np.random.default_rng(2)
        n = min(1_000_000, len(time_))
        frame = pl.DataFrame({
            "time": time_[:n], "event": event[:n],
            "arm": rng.choice(["control", "treatment"], n), "age": rng.normal(60, 10, n),
        })
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = best_of(1, lambda: cox.cox_hazard_ratios(
                frame, "time", "event", ["arm", "age"]))
        report(f"cox_hazard_ratios (subsample {cox.COX_MAX_ROWS:,})", n, seconds)


if __name__ == "__main__":
    main()
