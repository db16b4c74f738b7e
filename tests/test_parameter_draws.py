"""Parameter draws and replicates: asymptotic draws spread as the estimates' standard errors,
shares by the Bayesian bootstrap, a saved model draws as the model in memory, and `simulate
--replicates` writes cohorts whose manifests say which draw they are."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from trajectories.cli import app
from trajectories.cohort import Cohort
from trajectories.fit import MultiStateModel
from trajectories.fit.draws import bootstrap_cohort, draw_scenario
from trajectories.fit.references import stanford_heart
from trajectories.scenario import load_scenario
from trajectories.simulate import MarkovSimulator

DRAWS = 400


@pytest.fixture(scope="module")
def reference() -> Cohort:
    return stanford_heart()


@pytest.fixture(scope="module")
def model(reference) -> MultiStateModel:
    return MultiStateModel(processes=False).fit(reference)


def test_asymptotic_draws_spread_as_the_standard_errors(model):
    rng = np.random.default_rng(1)
    drawn = [model.draw(rng) for _ in range(DRAWS)]
    for tr in model.transitions_:
        for name, (estimate, se) in tr.fit.log_hazard_ratios().items():
            values = np.array([next(t for t in s.transitions if t.key == tr.key).effects[name]
                               for s in drawn])
            # mean within 4 standard errors of the mean; sd within 4 sd of a sample sd
            assert abs(values.mean() - estimate) < 4 * se / math.sqrt(DRAWS), (tr.key, name)
            assert abs(values.std(ddof=1) / se - 1) < 4 / math.sqrt(2 * DRAWS), (tr.key, name)


def test_shares_are_drawn_by_the_bayesian_bootstrap(model):
    rng = np.random.default_rng(2)
    n = model.reference_["n_persons"]
    p = model.covariate_model_.marginals["surgery"].probabilities[1]
    values = np.array([model.draw(rng).covariates["surgery"].probabilities[1]
                       for _ in range(DRAWS)])
    # Dirichlet(n p, n (1 - p)) has sd sqrt(p (1 - p) / (n + 1))
    sd = math.sqrt(p * (1 - p) / (n + 1))
    assert abs(values.mean() - p) < 4 * sd / math.sqrt(DRAWS)
    assert abs(values.std(ddof=1) / sd - 1) < 4 / math.sqrt(2 * DRAWS)


def test_a_saved_model_draws_as_the_model_in_memory(model, tmp_path):
    directory = model.save(tmp_path / "model")
    saved = load_scenario(directory / "scenario.toml").model_dump(mode="json", by_alias=True)
    summary = json.loads((directory / "fit.json").read_text())
    ours = model.draw(np.random.default_rng(5))
    theirs = draw_scenario(saved, summary, np.random.default_rng(5))
    for a, b in zip(ours.transitions, theirs["transitions"], strict=True):
        assert a.effects == pytest.approx(b["effects"], rel=1e-12)
        numbers = {k: v for k, v in b["hazard"].items() if k != "family"}
        assert a.hazard.family == b["hazard"]["family"]
        assert {k: v for k, v in a.hazard.model_dump().items() if k != "family"} == \
            pytest.approx(numbers, rel=1e-12)


def test_none_draws_the_estimates_and_bootstrap_needs_the_reference(model, reference):
    assert model.draw(np.random.default_rng(0), "none") is model.to_scenario()
    with pytest.raises(Exception, match="pass reference="):
        model.draw(np.random.default_rng(0), "bootstrap")
    scenario = model.draw(np.random.default_rng(0), "bootstrap", reference=reference)
    assert MarkovSimulator(scenario).simulate(200, seed=1).n_persons == 200
    resampled = bootstrap_cohort(reference, np.random.default_rng(3))
    assert resampled.n_persons == reference.n_persons
    assert resampled.persons["person_id"].to_list() == list(range(1, reference.n_persons + 1))
    assert set(resampled.events["person_id"].unique().to_list()) <= set(
        resampled.persons["person_id"].to_list())


def replicates(model, tmp_path, n: int, seed: int):
    """The saved model's directory, after `simulate --replicates 3` wrote tmp_path/reps."""
    directory = model.save(tmp_path / "model")
    result = CliRunner().invoke(app, ["simulate", "--model", str(directory), "--replicates",
                                      "3", "--n", str(n), "--seed", str(seed), "--out",
                                      str(tmp_path / "reps")])
    assert result.exit_code == 0, result.output
    return directory


def test_simulate_replicates_writes_manifests_that_say_which_draw(model, reference, tmp_path):
    directory = replicates(model, tmp_path, n=300, seed=4)
    seen = []
    for i in (1, 2, 3):
        cohort = Cohort.read(tmp_path / "reps" / f"replicate-{i}")
        extra = cohort.manifest.model_extra
        assert extra["replicate"] == {"index": i, "m": 3, "draws": "asymptotic",
                                      "n_reference": reference.n_persons}
        assert cohort.manifest.reference_fingerprint == model.reference_["fingerprint"]
        seen.append(cohort.manifest.scenario_hash)
    assert len(set(seen)) == 3  # each replicate its own draw
    failed = subprocess.run([sys.executable, "-m", "trajectories.cli", "simulate", "--model",
                             str(directory), "--draws", "bootstrap", "--out",
                             str(tmp_path / "boot")], capture_output=True, text=True)
    assert failed.returncode == 2 and "give --reference" in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr


def test_validate_shows_the_interval_combined_over_a_replicate_folder(model, reference, tmp_path):
    replicates(model, tmp_path, n=400, seed=2)
    runner = CliRunner()
    reference.write(tmp_path / "reference")
    validated = runner.invoke(app, ["validate", str(tmp_path / "reps" / "replicate-1"),
                                    "--reference", str(tmp_path / "reference"), "--report",
                                    str(tmp_path / "report")])
    assert validated.exit_code in (0, 1), validated.output
    context = json.loads((tmp_path / "report" / "report.json").read_text())["context"]
    combined = {k: v for k, v in context.items() if k.startswith("combined survival at day 365")}
    assert len(combined) == 1 and "over 3 replicates (proper)" in next(iter(combined))
    (estimate, ci), = [(float(v.split(" [")[0]), v.split("; naive")[0]) for v in combined.values()]
    low, high = (float(x) for x in ci.split("[")[1].rstrip("]").split(", "))
    naive = next(iter(combined.values())).split("naive [")[1].split("]")[0].split(", ")
    assert low < estimate < high and high - low > float(naive[1]) - float(naive[0])
