"""compare(), the report and `trajectories validate`: verdicts that pass and fail as they should."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from trajectories import Cohort, MarkovSimulator, TrajectoriesError
from trajectories.cli import app
from trajectories.scenario import scenario_from_dict
from validation import Thresholds, compare, load_thresholds, write_html
from validation.published import load_published

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "published"

ILLNESS_DEATH = {
    "name": "illness_death_sites",
    "initial_state": "healthy",
    "states": [{"name": "healthy"}, {"name": "ill"}, {"name": "dead", "absorbing": True}],
    "transitions": [
        {"from": "healthy", "to": "ill", "hazard": {"family": "exponential", "rate": 0.002},
         "effects": {"arm": {"treated": -0.4}}},
        {"from": "healthy", "to": "dead", "hazard": {"family": "exponential", "rate": 0.0008}},
        {"from": "ill", "to": "dead", "clock": "reset",
         "hazard": {"family": "weibull", "shape": 1.3, "scale": 400.0}},
    ],
    "covariates": {"arm": {"kind": "categorical", "levels": {"control": 0.5, "treated": 0.5}}},
    "sites": [{"name": "A", "share": 0.6}, {"name": "B", "share": 0.4, "followup_days": 900}],
    "followup": {"max_days": 1500, "loss_to_followup_per_year": 0.03},
    "visits": [{"type": "outpatient", "rates_per_year": {"healthy": 2, "ill": 6}}],
    "measurements": [{"name": "crp", "mean": {"healthy": 3, "ill": 20}, "noise_sd": 2}],
}


def simulate(data: dict, n: int, seed: int) -> Cohort:
    return MarkovSimulator(scenario_from_dict(data)).simulate(n, seed=seed)


@pytest.fixture(scope="module")
def synthetic() -> Cohort:
    return simulate(ILLNESS_DEATH, 2500, 1)


@pytest.fixture(scope="module")
def reference() -> Cohort:
    return simulate(ILLNESS_DEATH, 2500, 2)


def doubled_death() -> dict:
    data = copy.deepcopy(ILLNESS_DEATH)
    data["transitions"][1]["hazard"]["rate"] *= 2
    data["transitions"][2]["hazard"]["scale"] /= 2 ** (1 / 1.3)  # Weibull hazard x 2
    return data


def test_a_cohort_compared_with_itself_passes_everything(synthetic):
    report = compare(synthetic, synthetic, figures=False)
    assert report.passed, [c.name for c in report.failures]
    judged = [c for c in report.checks if c.verdict != "info"]
    groups = {c.group for c in judged}
    assert groups == {"integrity", "survival", "hazard ratios", "transitions", "utility",
                      "follow-up"}
    assert len(judged) > 60
    logrank = [c for c in judged if c.name == "log-rank"]
    assert logrank and all(c.metric == pytest.approx(1.0) for c in logrank)


def test_two_seeds_of_one_scenario_pass(synthetic, reference):
    report = compare(synthetic, reference, figures=False)
    assert report.passed, [(c.name, c.subject, c.site, c.metric) for c in report.failures]
    assert report.context["sites judged separately"] == "A, B"
    assert {c.site for c in report.checks} == {None, "A", "B"}


def test_doubled_death_hazard_fails_survival_and_names_the_endpoint(reference):
    worse = simulate(doubled_death(), 2500, 3)
    report = compare(worse, reference, figures=False)
    failed = {(c.group, c.name, c.subject) for c in report.failures}
    assert ("survival", "log-rank", "overall_survival") in failed
    assert ("survival", "Kaplan-Meier max distance", "overall_survival") in failed
    assert any(name.startswith("survival at") and subject == "overall_survival"
               for group, name, subject in failed)
    assert not any(c.group == "integrity" for c in report.failures)


def _inject_forbidden_moves(cohort: Cohort, count: int) -> Cohort:
    """Send ``count`` censored ill persons back to healthy halfway through their stay."""
    spells = cohort.state_spells()
    chosen = spells.filter(
        (pl.col("state") == "ill") & pl.col("next_state").is_null()
        & (pl.col("stop") > pl.col("start"))
    ).head(count)
    extra = chosen.select(
        "person_id", ((pl.col("start") + pl.col("stop")) / 2).alias("time"),
        pl.lit(None, pl.Float64).alias("end_time"), pl.lit("state:healthy").alias("code"),
        pl.lit(None, pl.Float64).alias("value"),
    )
    events = pl.concat([cohort.events, extra]).sort("person_id", "time", maintain_order=True)
    return Cohort(cohort.persons, events, cohort.manifest)


def test_injected_forbidden_transition_fails_the_transition_check(synthetic, reference):
    tampered = _inject_forbidden_moves(synthetic, 7)
    report = compare(tampered, reference, figures=False)
    forbidden = [c for c in report.checks if c.name == "forbidden transitions" and c.site is None]
    assert forbidden[0].verdict == "fail" and forbidden[0].metric == 7
    assert forbidden[0].details["moves"][0]["from_state"] == "ill"
    assert forbidden[0].details["moves"][0]["to_state"] == "healthy"


def test_injected_time_reversals_fail_integrity(synthetic, reference):
    visits = synthetic.events.with_row_index().filter(pl.col("code") == "visit:outpatient")
    targets = visits.group_by("person_id", maintain_order=True).first().head(4)
    rows = set(targets["index"].to_list())
    events = synthetic.events.with_columns(
        pl.when(pl.int_range(pl.len()).is_in(list(rows))).then(pl.col("time") + 1e4)
        .otherwise(pl.col("time")).alias("time"))
    broken = Cohort(synthetic.persons, events, synthetic.manifest, check=False)
    report = compare(broken, reference, figures=False)
    time_order = next(c for c in report.checks if c.name == "time_order")
    assert time_order.verdict == "fail" and time_order.metric >= 1
    assert not report.passed
    assert report.context["note"].startswith("statistical checks skipped")
    assert {c.group for c in report.checks} == {"integrity"}


def test_published_figures_pass_and_a_wrong_figure_fails(tmp_path):
    cohort = MarkovSimulator("oncology_nsclc_two_arm").simulate(6000, seed=5)
    published = load_published(EXAMPLES / "keynote189.toml")
    report = compare(cohort, published, figures=False)
    assert report.passed and len(report.checks) == 5
    text = (EXAMPLES / "keynote189.toml").read_text().replace(
        "value = 4.9\nlower = 4.7\nupper = 5.5", "value = 7.0\nlower = 6.5\nupper = 7.5")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text)
    failed = compare(cohort, load_published(wrong), figures=False).failures
    assert [(c.name, c.subject) for c in failed] == [
        ("median", "progression_free_survival (arm=control)")]
    assert 4.5 < failed[0].metric < 5.4


def test_report_files(synthetic, reference, tmp_path):
    report = compare(simulate(doubled_death(), 1500, 4), reference, figures=True)
    data = json.loads(report.write_json(tmp_path / "report.json").read_text())
    assert data["passed"] is False and data["counts"]["fail"] == len(report.failures)
    assert {"group", "name", "metric", "threshold", "verdict", "details"} <= set(data["checks"][0])
    html = write_html(report, tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(report.figures) >= 5
    first_verdict = html.index("<h2>Verdicts</h2>")
    assert html.index("FAIL", first_verdict) < html.index("PASS", first_verdict)


def test_thresholds_file(tmp_path):
    good = tmp_path / "t.toml"
    good.write_text("[thresholds]\nalpha = 0.01\nlanding_days = [1]\n")
    with pytest.raises(TrajectoriesError,
                       match=r"invalid thresholds file .*\n  landing_days: Extra inputs"):
        load_thresholds(good)
    good.write_text("[thresholds]\nalpha = 0.01\nlandmark_days = [100.0]\n")
    assert load_thresholds(good) == Thresholds(alpha=0.01, landmark_days=[100.0])


def test_validate_cli_exit_codes(synthetic, reference, tmp_path):
    synthetic.write(tmp_path / "syn")
    reference.write(tmp_path / "ref")
    simulate(doubled_death(), 2500, 6).write(tmp_path / "worse")
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(tmp_path / "syn"), "--reference",
                             str(tmp_path / "ref"), "--report", str(tmp_path / "r1")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "r1" / "report.html").is_file()
    bad = runner.invoke(app, ["validate", str(tmp_path / "worse"), "--reference",
                              str(tmp_path / "ref"), "--report", str(tmp_path / "r2")])
    assert bad.exit_code == 1 and "FAIL" in bad.output and "overall_survival" in bad.output
    missing = subprocess.run(
        [sys.executable, "-m", "trajectories.cli", "validate", str(tmp_path / "syn"),
         "--reference", str(tmp_path / "nothing"), "--report", str(tmp_path / "r3")],
        capture_output=True, text=True)
    assert missing.returncode == 2
    assert "error:" in missing.stderr and "not a cohort directory" in missing.stderr
    assert "Traceback" not in missing.stderr
