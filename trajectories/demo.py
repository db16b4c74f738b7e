"""The end-to-end demo: simulate, validate against a stand-in reference, report, export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trajectories.cohort import Cohort, prepare_output_directory
from trajectories.simulate import MarkovSimulator

DEMO_SCENARIO = "oncology_nsclc_two_arm"


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs, and the validation verdict."""

    synthetic: Path
    reference: Path
    report_json: Path
    report_html: Path
    duckdb: Path
    passed: bool
    counts: dict[str, int]


def run_demo(
    out: str | Path,
    n: int = 20_000,
    reference_n: int = 4_000,
    seed: int = 2026,
    overwrite: bool = False,
) -> DemoResult:
    """Simulate ``n`` persons of the oncology scenario, validate them against an independent
    ``reference_n``-person cohort standing in for real data, and write the report."""
    from trajectories.io.omop import write_duckdb
    from validation import compare, write_html

    out = prepare_output_directory(out, overwrite)
    simulator = MarkovSimulator(DEMO_SCENARIO)
    synthetic_dir = simulator.simulate_to(out / "synthetic", n=n, seed=seed, overwrite=True)
    reference_dir = simulator.simulate(reference_n, seed=seed + 1).write(
        out / "reference", overwrite=True)
    synthetic = Cohort.read(synthetic_dir)
    report = compare(synthetic, Cohort.read(reference_dir), seed=seed)
    report_dir = out / "report"
    report_dir.mkdir(exist_ok=True)
    json_path = report.write_json(report_dir / "report.json")
    html_path = write_html(report, report_dir / "report.html")
    duckdb_path = out / "omop.duckdb"
    write_duckdb(synthetic, duckdb_path, overwrite=True)
    return DemoResult(synthetic_dir, reference_dir, json_path, html_path, duckdb_path,
                      report.passed, report.counts())
