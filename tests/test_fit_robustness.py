"""Fits and checks that used to end in a traceback on real cohorts (issue 12): the censoring
rate's root at the end of its bracket, families diverging under delayed entry, a Cox model of a
validation check that does not converge, and a reference in which nobody moves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trajectories.fit import FitError, MultiStateModel
from trajectories.fit.censoring import CENSORED_EXITS, _best_rate, _loglik, fit_censoring
from trajectories.fit.families import AtRisk, fit_parametric
from trajectories.io import from_mstate, from_survival_table
from validation import compare


def _grid_best(t, censored, a, b, rate):
    """The largest censoring log-likelihood over a fine grid of rates around ``rate``."""
    top = 3.0 * max(rate, 1e-3)
    grid = np.linspace(0.0, top, 30_001)[1:]
    values = np.array([_loglik(t, censored, a, b, r) for r in grid])
    return float(values.max()), float(grid[values.argmax()])


def test_censoring_rate_when_the_longest_followup_ends_in_an_event():
    # The last follow-up (146 d) ends in a death; 112 d is censored. With the window at
    # [146, 147) nobody censored lies in it: the slope's root is exactly the bracket's end,
    # n_censored / total follow-up, and rounding made brentq see two positive ends.
    cohort = from_survival_table(
        pl.DataFrame({"time": [112.0, 136.0, 146.0], "event": [0, 1, 1]}), "time", "event")
    t = cohort.persons.get_column("followup_end").to_numpy()
    censored = cohort.persons.get_column("exit").is_in(CENSORED_EXITS).to_numpy()
    fit = fit_censoring(t, censored)  # ValueError: f(a) and f(b) must have different signs
    b = float(t.max()) + 1.0
    assert _best_rate(t, censored, 146.0, b) == pytest.approx(1.0 / 394.0, rel=1e-12)
    for a in (0.0, 112.0, 136.0, 146.0):
        rate = _best_rate(t, censored, a, b)
        best, at = _grid_best(t, censored, a, b, rate)
        assert _loglik(t, censored, a, b, rate) >= best - 1e-9, (a, rate, at)
    # the chosen (window, rate) is the best of all: no grid point beats it
    for a in (0.0, 112.0, 136.0, 146.0):
        assert fit.loglik >= _grid_best(t, censored, a, b, fit.loss_per_day)[0] - 1e-9
    assert fit.n_censored == 1
    assert fit.window_high == 146.0
    assert 0.0 < fit.loss_per_day <= 1.0 / 394.0 + 1e-15


def _transplant_rows() -> pl.DataFrame:
    """Stanford-like mstate rows: waiting from day 0, transplanted at day 1-30 (delayed entry
    on the forward clock), half die within a week of it, the other half live for years."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        transplant = float(rng.integers(1, 31))
        rows.append({"id": i, "from": 1, "to": 2, "Tstart": 0.0, "Tstop": transplant,
                     "status": 1})
        dies = i % 2 == 0
        stop = transplant + float(rng.integers(1, 8)) if dies else 1000.0 + 25 * i
        rows.append({"id": i, "from": 2, "to": 3, "Tstart": transplant, "Tstop": stop,
                     "status": int(dies)})
    return pl.DataFrame(rows)


def test_delayed_entry_leaves_diverging_families_out_of_the_selection():
    cohort = from_mstate(_transplant_rows(), state_names=["waiting", "transplanted", "dead"],
                         death_states=["dead"])
    # Before: the Weibull fit ran to shape -> 0, scale -> 0 (hazard ~ 1/t, which delayed entry
    # allows), exp() underflowed to scale=0.0 and a pydantic ValidationError ended the fit.
    model = MultiStateModel(clock="forward", processes=False).fit(cohort)
    after = model.transition("transplanted->dead")
    summary = after.summary()
    excluded = {c["family"]: c["excluded"] for c in summary["candidates"] if "excluded" in c}
    assert set(excluded) == {"weibull", "lognormal", "loglogistic"}
    assert all("diverged" in why for why in excluded.values())
    kept = {c["family"]: c["aic"] for c in summary["candidates"] if "excluded" not in c}
    assert set(kept) == {"exponential", "gompertz"}
    assert after.fit.family == "gompertz" and after.clock == "forward"
    assert after.fit.aic == min(kept.values())
    assert kept["exponential"] - kept["gompertz"] > 100  # early deaths: a falling hazard
    # the chosen fit is the plain Gompertz MLE on the same rows, with a hazard that dies out
    spells = cohort.state_spells().filter(pl.col("state") == "transplanted")
    data = AtRisk(spells["start"].to_numpy(), spells["stop"].to_numpy(),
                  (spells["next_state"] == "dead").fill_null(False).to_numpy(),
                  np.zeros((spells.height, 0)), [])
    alone = fit_parametric("gompertz", data)
    assert after.fit.hazard.shape == pytest.approx(alone.hazard.shape, rel=1e-6)
    assert after.fit.hazard.rate == pytest.approx(alone.hazard.rate, rel=1e-6)
    assert -0.2 < after.fit.hazard.shape < -0.02
    assert sum("left out of the selection" in note for note in summary["notes"]) == 3
    simulated = model.simulate(200, seed=1)  # the scenario validates and runs
    assert simulated.n_persons == 200
    with pytest.raises(FitError, match=r"transplanted->dead \(forward clock\).*'weibull'.*"
                                       r"diverged"):
        MultiStateModel(families={"transplanted->dead": "weibull"}, clock="forward",
                        processes=False).fit(cohort)


def test_collinear_covariates_in_a_cox_fit_name_the_transition():
    rng = np.random.default_rng(2)
    n = 80
    a = rng.normal(size=n)
    frame = pl.DataFrame({"time": np.round(rng.uniform(10, 900, n)),
                          "event": (np.arange(n) % 3 != 0).astype(int), "a": a, "b": 2.0 * a})
    cohort = from_survival_table(frame, "time", "event", covariates=["a", "b"])
    with pytest.raises(FitError, match=r"transition alive->death .*'cox'.*did not converge"):
        MultiStateModel(families="cox", processes=False).fit(cohort)


def _collinear_cohorts():
    rng = np.random.default_rng(0)
    n = 120
    time = np.round(rng.uniform(10, 500, n))
    event = (np.arange(n) % 2 == 0).astype(int)
    a = rng.normal(size=n)
    reference = from_survival_table(
        pl.DataFrame({"time": time, "event": event, "a": a, "b": 2.0 * a}), "time", "event",
        covariates=["a", "b"])
    synthetic = from_survival_table(
        pl.DataFrame({"time": rng.permutation(time), "event": event, "a": rng.normal(size=n),
                      "b": rng.normal(size=n)}), "time", "event", covariates=["a", "b"])
    return synthetic, reference


def test_a_cox_model_that_does_not_converge_is_a_check_not_a_crash(tmp_path: Path):
    synthetic, reference = _collinear_cohorts()
    # Before: SurvivalDataError out of compare(), `trajectories validate` exited 2.
    report = compare(synthetic, reference, figures=False)
    hazard = [c for c in report.checks if c.group == "hazard ratios"]
    assert len(hazard) == 1
    (check,) = hazard
    assert (check.name, check.verdict, check.metric) == ("log HR (not evaluable)", "info", None)
    assert check.details["reason"].startswith("reference: Cox model on ['a', 'b'] did not "
                                              "converge")
    assert check.details["covariates"] == ["a", "b"]
    # the other checks still ran: survival of the endpoint, and utility with its own fits
    assert any(c.group == "survival" and c.name == "log-rank" for c in report.checks)
    assert any(c.group == "utility" for c in report.checks)

    # a synthetic cohort that cannot reproduce the reference's Cox estimate fails the check
    swapped = compare(reference, synthetic, figures=False)
    (failed,) = [c for c in swapped.checks if c.group == "hazard ratios"]
    assert failed.verdict == "fail" and failed.details["reason"].startswith("synthetic:")

    syn_dir, ref_dir = synthetic.write(tmp_path / "syn"), reference.write(tmp_path / "ref")
    result = subprocess.run(
        [sys.executable, "-m", "trajectories.cli", "validate", str(syn_dir), "--reference",
         str(ref_dir), "--report", str(tmp_path / "report")], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [c["verdict"] for c in written["checks"] if c["group"] == "hazard ratios"] == ["info"]


def test_a_reference_in_which_nobody_moves_is_refused_at_fit():
    frame = pl.DataFrame({"time": [10.0, 20.0, 30.0, 40.0], "event": [0, 0, 0, 0]})
    cohort = from_survival_table(frame, "time", "event")
    # Before: the fit "succeeded" and wrote a scenario without transitions, which
    # `trajectories simulate --model` refused (transitions: Field required).
    with pytest.raises(FitError, match=r"no person moves from state 'alive': nothing to fit "
                                       r"\(all 4 persons stay"):
        MultiStateModel().fit(cohort)
    one_moves = from_survival_table(frame.with_columns(pl.Series("event", [0, 1, 0, 0])),
                                    "time", "event")
    model = MultiStateModel(processes=False).fit(one_moves)
    assert [t.key for t in model.transitions_] == ["alive->death"]
    assert model.transitions_[0].fit.hazard.rate == pytest.approx(1.0 / 100.0)


def test_a_synthetic_cohort_of_one_site_is_validated_against_several():
    # `trajectories sample --condition site=...` gives one site; the reference has two. Before:
    # "covariate 'site' is constant" (SurvivalDataError) ended `validate` with exit 2.
    rng = np.random.default_rng(4)
    n = 120
    time = np.round(rng.uniform(10, 500, n))
    event = (rng.random(n) < 0.6).astype(int)
    x = rng.normal(size=n)
    reference = from_survival_table(
        pl.DataFrame({"time": time, "event": event, "x": x,
                      "inst": np.where(np.arange(n) % 2 == 0, "a", "b")}),
        "time", "event", covariates=["x"], site_col="inst")
    synthetic = from_survival_table(
        pl.DataFrame({"time": rng.permutation(time), "event": event, "x": rng.normal(size=n),
                      "inst": ["a"] * n}), "time", "event", covariates=["x"], site_col="inst")
    report = compare(synthetic, reference, figures=False)
    hazard = {c.name: c for c in report.checks if c.group == "hazard ratios"}
    skipped = hazard["log HR (not evaluable)"]
    assert skipped.verdict == "info" and skipped.details["covariates"] == ["site"]
    assert "do not vary in the synthetic cohort" in skipped.details["reason"]
    compared = hazard["log HR x"]  # the covariate both cohorts vary in is still compared
    assert compared.verdict in ("pass", "fail")
    assert np.isfinite(compared.details["hazard_ratio_reference"])
    (utility,) = [c for c in report.checks if c.group == "utility"]
    assert utility.verdict in ("pass", "fail") and np.isfinite(utility.metric)
