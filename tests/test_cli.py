"""The command line as a user runs it: listing, simulating, describing, exporting, the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
from pg_server import drop_schema, postgres_url, unique_schema
from typer.testing import CliRunner

from trajectories import Cohort, load_scenario
from trajectories.cli import app
from trajectories.io.omop import read_omop_postgres
from trajectories.io.omop.read import mapping_from_cohort, mapping_to_toml

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
    neither = cli("export", "omop", str(tmp_path / "onc"))
    assert neither.returncode == 2 and "exactly one of --duckdb" in neither.stderr


def test_export_omop_to_postgres_and_check(tmp_path: Path):
    url = postgres_url()
    schema = unique_schema("cli")
    runner.invoke(app, ["simulate", "oncology_nsclc_two_arm", "--n", "300", "--out",
                        str(tmp_path / "onc")])
    try:
        result = runner.invoke(app, ["export", "omop", str(tmp_path / "onc"), "--postgres", url,
                                     "--schema", schema])
        assert result.exit_code == 0, result.output
        assert read_omop_postgres(url, schema, "person").height == 300
        checked = runner.invoke(app, ["check-omop", "--postgres", url, "--schema", schema])
        assert checked.exit_code == 0 and " 0 failed" in checked.output
        original = Cohort.read(tmp_path / "onc")
        mapping = tmp_path / "mapping.toml"
        mapping.write_text(mapping_to_toml(mapping_from_cohort(original)))
        imported = runner.invoke(app, ["import", "omop", url, "--schema", schema, "--mapping",
                                       str(mapping), "--out", str(tmp_path / "back")])
        assert imported.exit_code == 0, imported.output
        back = Cohort.read(tmp_path / "back")
        assert back.n_persons == 300
        assert back.persons["exit"].eq("death").sum() == original.persons["exit"].eq(
            "death").sum()
    finally:
        drop_schema(url, schema)


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


def test_meds_and_omop_round_trips_through_the_cli(tmp_path: Path):
    runner.invoke(app, ["simulate", "ckd_progression", "--n", "300", "--seed", "2", "--out",
                        str(tmp_path / "ckd")])
    original = Cohort.read(tmp_path / "ckd")
    exported = runner.invoke(app, ["export", "meds", str(tmp_path / "ckd"), "--out",
                                   str(tmp_path / "meds")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "meds" / "metadata" / "codes.parquet").is_file()
    back = runner.invoke(app, ["import", "meds", str(tmp_path / "meds"), "--out",
                               str(tmp_path / "from_meds")])
    assert back.exit_code == 0, back.output
    again = Cohort.read(tmp_path / "from_meds")
    assert again.n_persons == 300
    assert again.events["code"].value_counts().sort("code").equals(
        original.events["code"].value_counts().sort("code"))

    mapping = tmp_path / "mapping.toml"
    mapping.write_text(mapping_to_toml(mapping_from_cohort(original)))
    runner.invoke(app, ["export", "omop", str(tmp_path / "ckd"), "--duckdb",
                        str(tmp_path / "ckd.duckdb")])
    imported = runner.invoke(app, ["import", "omop", str(tmp_path / "ckd.duckdb"), "--mapping",
                                   str(mapping), "--out", str(tmp_path / "from_omop")])
    assert imported.exit_code == 0, imported.output
    from_omop = Cohort.read(tmp_path / "from_omop")
    assert from_omop.n_persons == 300
    states = pl.col("code").str.starts_with("state:")
    assert from_omop.events.filter(states).height == original.events.filter(states).height


def test_fit_then_simulate_from_the_model(tmp_path: Path):
    fitted = runner.invoke(app, ["fit", "gbsg2", "--out", str(tmp_path / "model")],
                           terminal_width=200)
    assert fitted.exit_code == 0, fitted.output
    assert "disease_free->recurrence_or_death" in fitted.output
    assert (tmp_path / "model" / "scenario.toml").is_file()
    result = runner.invoke(app, ["simulate", "--model", str(tmp_path / "model"), "--n", "500",
                                 "--seed", "3", "--out", str(tmp_path / "syn")])
    assert result.exit_code == 0, result.output
    synthetic = Cohort.read(tmp_path / "syn")
    assert synthetic.n_persons == 500 and "horTh" in synthetic.persons.columns
    both = cli("simulate", "ckd_progression", "--model", str(tmp_path / "model"), "--out",
               str(tmp_path / "x"))
    assert both.returncode == 2 and "not both" in both.stderr


def test_calibrate_reaches_published_targets(tmp_path: Path):
    examples = Path(__file__).resolve().parents[1] / "examples" / "published"
    result = runner.invoke(app, ["calibrate", "oncology_nsclc_two_arm", "--targets",
                                 str(examples / "keynote189.toml"), "--out",
                                 str(tmp_path / "calibrated.toml"), "--n", "4000"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert load_scenario(tmp_path / "calibrated.toml").name == "oncology_nsclc_two_arm"


def test_sharded_simulation_matches_whatever_the_workers(tmp_path: Path):
    common = ["simulate", "ckd_progression", "--n", "900", "--seed", "5", "--block-size", "300",
              "--shards", "auto"]
    one = runner.invoke(app, [*common, "--out", str(tmp_path / "one")])
    two = runner.invoke(app, [*common, "--workers", "2", "--out", str(tmp_path / "two")])
    assert one.exit_code == 0 and two.exit_code == 0, (one.output, two.output)
    parts = sorted(p.relative_to(tmp_path / "one")
                   for p in (tmp_path / "one").rglob("*.parquet"))
    assert len(parts) == 6
    for part in parts:
        assert (tmp_path / "one" / part).read_bytes() == (tmp_path / "two" / part).read_bytes()
    sharded = Cohort.read(tmp_path / "one")
    whole = runner.invoke(app, ["simulate", "ckd_progression", "--n", "900", "--seed", "5",
                                "--block-size", "300", "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0
    assert sharded.events.equals(Cohort.read(tmp_path / "whole").events)
    for name in ("one", "whole"):  # the OMOP export streams the part files block by block
        exported = runner.invoke(app, ["export", "omop", str(tmp_path / name), "--parquet",
                                       str(tmp_path / f"omop_{name}"), "--batch-size", "250"])
        assert exported.exit_code == 0, exported.output
    for table in ("person", "visit_occurrence", "measurement", "death"):
        assert pl.read_parquet(tmp_path / "omop_one" / f"{table}.parquet").equals(
            pl.read_parquet(tmp_path / "omop_whole" / f"{table}.parquet"))
    bad = cli(*common, "--workers", "zero", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--workers must be a positive number" in bad.stderr


def test_train_then_sample(tmp_path: Path):
    runner.invoke(app, ["simulate", "oncology_nsclc_two_arm", "--n", "400", "--seed", "8",
                        "--out", str(tmp_path / "ref")])
    trained = runner.invoke(app, ["train", str(tmp_path / "ref"), "--out",
                                  str(tmp_path / "model"), "--epochs", "2"])
    assert trained.exit_code == 0, trained.output
    assert "trained 2 epoch(s)" in trained.output
    sampled = runner.invoke(app, ["sample", str(tmp_path / "model"), "--n", "150", "--seed", "1",
                                  "--condition", "site=asia_pacific", "--out",
                                  str(tmp_path / "syn")])
    assert sampled.exit_code == 0, sampled.output
    synthetic = Cohort.read(tmp_path / "syn")
    assert synthetic.n_persons == 150
    assert synthetic.persons["site"].unique().to_list() == ["asia_pacific"]
    bad = cli("sample", str(tmp_path / "model"), "--condition", "site", "--out",
              str(tmp_path / "x"))
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr
