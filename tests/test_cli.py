"""The command line as a user runs it: listing, simulating, describing, exporting, the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
from typer.testing import CliRunner

from trajectories import Cohort
from trajectories.cli import app

runner = CliRunner()


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real entry point (with its error handling) in a subprocess."""
    return subprocess.run([sys.executable, "-m", "trajectories.cli", *args],
                          capture_output=True, text=True)


def test_scenarios_lists_the_builtins():
    result = runner.invoke(app, ["scenarios"])
    assert result.exit_code == 0
    for name in ("als_natural_history", "oncology_nsclc_two_arm", "ckd_progression"):
        assert name in result.output


def test_simulate_describe_and_refusals(tmp_path: Path):
    out = tmp_path / "ckd"
    result = runner.invoke(app, ["simulate", "ckd_progression", "--n", "800", "--seed", "4",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    cohort = Cohort.read(out)
    assert cohort.n_persons == 800 and cohort.manifest.seed == 4
    assert cohort.manifest.scenario_name == "ckd_progression"
    assert set(cohort.persons["site"].unique()) == {"nephrology_clinic", "primary_care_network"}

    described = runner.invoke(app, ["describe", str(out)], terminal_width=200)
    assert described.exit_code == 0
    assert "800 persons" in " ".join(described.output.split())
    for title in ("Persons per site", "Follow-up (years)", "States entered", "Events per code"):
        assert title in described.output
    per_code = cohort.events.group_by("code").len()
    egfr = per_code.filter(pl.col("code") == "measurement:egfr")["len"][0]
    assert f"{egfr:,}" in described.output

    again = cli("simulate", "ckd_progression", "--n", "10", "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr
    assert "Traceback" not in again.stderr
    unknown = cli("simulate", "no_such_scenario", "--n", "10", "--out", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "built-ins: als_natural_history" in unknown.stderr
    overwritten = runner.invoke(app, ["simulate", "ckd_progression", "--n", "50", "--seed",
                                      "4", "--out", str(out), "--overwrite"])
    assert overwritten.exit_code == 0 and Cohort.read(out).n_persons == 50


def test_bad_scenario_file_exits_2_with_the_field(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\ninitial_state = "a"\n[[states]]\nname = "a"\n[[states]]\n'
                   'name = "d"\nabsorbing = true\n[[transitions]]\nfrom = "a"\nto = "x"\n'
                   'hazard = { family = "exponential", rate = 0.1 }\n')
    result = cli("simulate", str(bad), "--n", "5", "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "unknown state 'x' in 'to'" in result.stderr and "bad.toml" in result.stderr


def test_export_omop_and_check(tmp_path: Path):
    runner.invoke(app, ["simulate", "oncology_nsclc_two_arm", "--n", "400", "--out",
                        str(tmp_path / "onc")])
    database = tmp_path / "onc.duckdb"
    result = runner.invoke(app, ["export", "omop", str(tmp_path / "onc"), "--duckdb",
                                 str(database)])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("select count(*) from person").fetchone()[0] == 400
    checked = runner.invoke(app, ["check-omop", "--duckdb", str(database)])
    assert checked.exit_code == 0 and " 0 failed" in checked.output
    both = cli("export", "omop", str(tmp_path / "onc"))
    assert both.returncode == 2 and "exactly one of --duckdb" in both.stderr


def test_demo_runs_end_to_end(tmp_path: Path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--n", "2000",
                                 "--reference-n", "1000"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["counts"]["pass"] > 50
    assert (out / "report" / "report.html").stat().st_size > 50_000
    assert Cohort.read(out / "synthetic").n_persons == 2000
    with duckdb.connect(str(out / "omop.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from person").fetchone()[0] == 2000
