"""Simulation benchmark: engine transitions/s per hazard family, and whole-cohort throughput.

Run: python benchmarks/simulate.py [--n 1000000] [--scenario oncology_nsclc_two_arm]
Each case runs in a fresh subprocess pinned to one thread, so peak memory (max RSS) is its own.
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

SINGLE_THREAD = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def engine_scenario(family: str) -> dict:
    """A progressive four-state model (well -> ill -> severe, death from each) in one family."""

    def hazard(median_days: float) -> dict:
        if family == "exponential":
            return {"family": "exponential", "rate": 0.6931 / median_days}
        if family == "weibull":
            return {"family": "weibull", "shape": 1.3, "scale": median_days / 0.6931 ** (1 / 1.3)}
        return {"family": "piecewise", "breakpoints": [90.0, 365.0],
                "rates": [0.4 / median_days, 0.7 / median_days, 1.0 / median_days]}

    moves = [("well", "ill", 400), ("well", "dead", 2500), ("ill", "severe", 300),
             ("ill", "dead", 1200), ("severe", "dead", 200)]
    return {
        "name": f"engine_{family}",
        "initial_state": "well",
        "states": [{"name": s} for s in ("well", "ill", "severe")]
        + [{"name": "dead", "absorbing": True}],
        "transitions": [{"from": a, "to": b, "hazard": hazard(m)} for a, b, m in moves],
        "followup": {"max_days": 3650},
    }


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_engine(family: str, n: int) -> dict:
    from trajectories.scenario import scenario_from_dict
    from trajectories.simulate import MarkovSimulator
    from trajectories.simulate.blocks import block_rng
    from trajectories.simulate.engine import run_paths
    from trajectories.simulate.population import draw_population

    plan = MarkovSimulator(scenario_from_dict(engine_scenario(family))).plan
    population = draw_population(plan, 0, n, block_rng(0, 0))
    seconds = float("inf")
    for _ in range(3):  # best of three: the figure is the engine's, not the machine's noise
        start = time.perf_counter()
        paths = run_paths(plan, population.initial_state, population.censor_time,
                          population.multipliers, block_rng(0, 1))
        seconds = min(seconds, time.perf_counter() - start)
    jumps = paths.jump_person.size
    return {"case": f"engine/{family}", "persons": n, "transitions": jumps, "seconds": seconds,
            "transitions_per_s": jumps / seconds, "peak_mib": peak_mib()}


def case_cohort(scenario: str, n: int, write: bool) -> dict:
    from trajectories.simulate import MarkovSimulator

    simulator = MarkovSimulator(scenario)
    events = transitions = 0
    start = time.perf_counter()
    if write:
        with tempfile.TemporaryDirectory() as folder:
            simulator.simulate_to(folder, n=n, seed=1)
            seconds = time.perf_counter() - start
            import polars as pl

            counts = pl.scan_parquet(f"{folder}/events.parquet").select(
                pl.len(), pl.col("code").str.starts_with("state:").sum()
            ).collect()
            events, states = counts.row(0)
            transitions = states - n
    else:
        for _, _, block_events in simulator.iter_blocks(n, seed=1):
            events += block_events.height
            transitions += block_events["code"].str.starts_with("state:").sum()
        transitions -= n
        seconds = time.perf_counter() - start
    return {"case": f"cohort/{'with' if write else 'without'} Parquet writing", "persons": n,
            "events": events, "transitions": transitions, "seconds": seconds,
            "persons_per_s": n / seconds, "events_per_s": events / seconds,
            "peak_mib": peak_mib()}


def run_child(options: argparse.Namespace, case: list[str]) -> dict:
    env = {**os.environ, **SINGLE_THREAD}
    command = [sys.executable, __file__, "--n", str(options.n), "--scenario", options.scenario,
               "--child", *case]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="persons per case")
    parser.add_argument("--scenario", default="oncology_nsclc_two_arm")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        result = (case_engine(rest[0], args.n) if kind == "engine"
                  else case_cohort(args.scenario, args.n, write=rest[0] == "write"))
        print(json.dumps(result))
        return
    print(f"simulation benchmark: {args.n:,} persons, one thread per case")
    for family in ("exponential", "piecewise", "weibull"):
        r = run_child(args, ["engine", family])
        print(f"  engine {family:<12} {r['transitions']:>10,} transitions in {r['seconds']:.3f} s"
              f" = {r['transitions_per_s'] / 1e6:6.1f} M transitions/s")
    for mode in ("nowrite", "write"):
        r = run_child(args, ["cohort", mode])
        print(f"  {args.scenario} {r['case']}: {r['seconds']:.1f} s, "
              f"{r['persons_per_s']:,.0f} persons/s, {r['events_per_s'] / 1e6:.2f} M events/s "
              f"({r['events']:,} events, {r['transitions']:,} transitions), "
              f"peak memory {r['peak_mib']:,.0f} MiB")


if __name__ == "__main__":
    main()
