"""Differentially private fit (``MultiStateModel(epsilon=...)``, :mod:`trajectories.fit.private`):
the accountant never spends more than asked, each mechanism's noise has its closed-form scale,
the fit reads persons only through the mechanisms (noise off, it releases the exact statistics;
replaying one fit's releases on a cohort with one person replaced gives the same model), the
treatment effect is recovered at epsilon 8, a small cohort at epsilon 1 still simulates, and
the command line fits, simulates, validates and describes a private model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from lifelines.datasets import load_rossi
from typer.testing import CliRunner

from trajectories.cli import app
from trajectories.cohort import Cohort
from trajectories.errors import FitError
from trajectories.fit import MultiStateModel
from trajectories.fit.private import default_delta, fit_private
from trajectories.fit.private.accounting import ORDERS, Accountant, Release, rho_budget
from trajectories.fit.private.effects import FINE_BINS
from trajectories.fit.private.mechanisms import (
    Mechanisms,
    release_ranges,
    simplex_projection,
    tree_histogram,
)
from trajectories.io import from_survival_table
from trajectories.scenario import load_scenario, scenario_from_dict
from trajectories.simulate import MarkovSimulator

ROSSI_COVARIATES = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
TREATMENT_LOG_HR = -0.70
"""oncology_nsclc_two_arm: arm=treatment on progression_free -> progressed."""


def rossi_cohort(frame=None) -> Cohort:
    """Rossi et al. 1980 (lifelines' load_rossi): 432 released prisoners, arrest within a year."""
    return from_survival_table(load_rossi() if frame is None else frame, "week", "arrest",
                               covariates=ROSSI_COVARIATES, time_unit="weeks",
                               event_state="arrested")


@pytest.fixture(scope="module")
def rossi() -> Cohort:
    return rossi_cohort()


def nsclc(n: int, seed: int) -> Cohort:
    """The built-in illness-death trial scenario without visits, measurements and drugs."""
    spec = load_scenario("oncology_nsclc_two_arm").model_dump(by_alias=True, exclude_none=True)
    for key in ("visits", "measurements", "drugs"):
        spec[key] = []
    return MarkovSimulator(scenario_from_dict(spec)).simulate(n, seed=seed)


def private_fit(cohort: Cohort, epsilon: float, seed: int, **options) -> MultiStateModel:
    model = MultiStateModel(epsilon=epsilon, **options)
    fit_private(model, cohort, np.random.default_rng(seed))
    return model


def balle_epsilon(rho: float, delta: float) -> float:
    """Closed form of the RDP -> (epsilon, delta) conversion (Balle et al. 2020, Thm 21) for
    the curve alpha * rho, minimised over the ledger's orders."""
    a = ORDERS
    return float(np.min(rho * a - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)))


# -- accounting --------------------------------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 4.0, 8.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-7])
def test_the_budget_spends_exactly_the_target(epsilon, delta):
    rho = rho_budget(epsilon, delta)
    spent = balle_epsilon(rho, delta)
    assert spent <= epsilon and spent == pytest.approx(epsilon, rel=1e-6)
    # The conversion is tighter than zCDP's classic epsilon = rho + 2 sqrt(rho log 1/delta)
    # (Bun and Steinke 2016, Prop. 1.3), so the budget rho is at least the classic one's.
    classic = (math.sqrt(math.log(1 / delta) + epsilon) - math.sqrt(math.log(1 / delta))) ** 2
    assert rho >= classic


def test_a_gaussian_release_is_alpha_d2_over_2_sigma2_renyi_private():
    release = Release("x", sensitivity=2.0, sigma=3.0, share=1.0, size=1)
    assert np.allclose(release.rdp(), ORDERS * 4.0 / 18.0)
    assert release.rho == pytest.approx(4.0 / 18.0)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 8.0])
def test_the_accountant_never_overspends(epsilon):
    accountant = Accountant(epsilon, 1e-5)
    sigmas = [accountant.charge(f"part {i}", s, share, 3)
              for i, (s, share) in enumerate([(1.0, 0.3), (math.sqrt(2), 0.3), (7.5, 0.4)])]
    for (s, share), sigma in zip([(1.0, 0.3), (math.sqrt(2), 0.3), (7.5, 0.4)], sigmas,
                                 strict=True):
        assert sigma == pytest.approx(s / math.sqrt(2 * accountant.rho * share))
    assert epsilon * (1 - 1e-6) <= accountant.epsilon_spent() <= epsilon
    with pytest.raises(FitError, match="overspend"):
        accountant.charge("one more", 1.0, 0.01, 1)


@pytest.mark.parametrize("epsilon", [1.0, 2.0, 8.0])
def test_a_private_fit_spends_at_most_its_epsilon(rossi, epsilon):
    model = private_fit(rossi, epsilon, seed=3)
    record = model.privacy_
    assert record["epsilon_spent"] <= epsilon
    assert record["accountant"] == "rdp (opacus)"
    assert sum(r["share"] for r in record["releases"]) <= 1 + 1e-9
    for release in record["releases"]:  # every noise sd is the closed form of its share
        assert release["sigma"] == pytest.approx(
            release["sensitivity"] / math.sqrt(2 * record["rho"] * release["share"]))
    assert "the number of persons" in record["public"]
    # Sensitivities of a replacement: a histogram sqrt(2); one event per transition and at
    # most 1 move here (2 states): sqrt(2 * 1); person-time at most one bin width per cell and
    # the horizon in all: sqrt(2) horizon / sqrt(bins).
    sensitivity = {r["what"]: r["sensitivity"] for r in record["releases"]}
    assert sensitivity["events per candidate transition"] == pytest.approx(math.sqrt(2))
    assert sensitivity["person-time per state and time bin"] == pytest.approx(
        math.sqrt(2) * record["bounds"]["horizon_days"] / math.sqrt(FINE_BINS))
    assert sensitivity["persons per site and initial state; paths per final state and "
                       "ending"] == 2.0


def test_default_delta_stays_below_one_over_n():
    assert default_delta(432) == 1e-5
    assert default_delta(1_000_000) == pytest.approx(1e-6 ** 1.1)
    assert default_delta(1_000_000) < 1 / 1_000_000


# -- mechanisms --------------------------------------------------------------------------------


def test_gaussian_noise_has_the_closed_form_sd():
    accountant = Accountant(1.0, 1e-5)
    mechanisms = Mechanisms(accountant, np.random.default_rng(0))
    noisy, sigma = mechanisms.gaussian("zeros", np.zeros(40_000), math.sqrt(2), 0.25)
    assert sigma == pytest.approx(math.sqrt(2) / math.sqrt(2 * accountant.rho * 0.25))
    # The sample sd of N draws has sd sigma / sqrt(2 N): 4 of those.
    assert abs(noisy.std() - sigma) < 4 * sigma / math.sqrt(2 * noisy.size)
    assert abs(noisy.mean()) < 4 * sigma / math.sqrt(noisy.size)


def test_simplex_projection_is_the_nearest_consistent_histogram():
    # Sorted 5, 2, 0.3, -1: the threshold is (5 + 2 - 6) / 2 = 0.5.
    assert np.allclose(simplex_projection(np.array([5.0, -1.0, 2.0, 0.3]), 6.0),
                       [4.5, 0.0, 1.5, 0.0])
    assert np.allclose(simplex_projection(np.array([1.0, 2.0, 3.0]), 6.0), [1.0, 2.0, 3.0])


def test_the_tree_histogram_resolves_an_atom_to_a_day_without_noise():
    mechanisms = Mechanisms(Accountant(1.0, 1e-5), np.random.default_rng(0), noise=False)
    day = 10_957.0  # 2000-01-01: every index date of an imported table
    (leaves,) = tree_histogram(mechanisms, "index dates", np.full(432, day),
                               np.zeros(432, dtype=np.int64), np.array([432.0]), -25_567.0,
                               47_482.0, (200, 16, 23), 0.05, sparse=True)
    assert leaves.total == pytest.approx(432.0)
    quantiles = leaves.quantiles(np.linspace(0, 1, 11))
    assert np.all(np.abs(quantiles - day) <= (47_482 + 25_567) / (200 * 16 * 23))


def test_ranges_without_noise_cover_the_data():
    mechanisms = Mechanisms(Accountant(8.0, 1e-5), np.random.default_rng(0), noise=False)
    flag = np.repeat([0.0, 1.0], 300)
    ages = np.random.default_rng(1).integers(18, 45, 600).astype(float)
    (flag_low, flag_high), (age_low, age_high) = release_ranges(
        mechanisms, "ranges", [flag, ages], [True, True], 0.5, 600)
    assert math.ceil(flag_low) == 0 and math.ceil(flag_high) - 1 == 1  # whole numbers 0..1
    assert age_low <= 18 and age_high > 44


# -- the fit reads persons only through the mechanisms ----------------------------------------


def test_without_noise_the_releases_are_the_exact_statistics(rossi):
    trace: list = []
    model = MultiStateModel(epsilon=1.0)
    fit_private(model, rossi, np.random.default_rng(0), noise=False, trace=trace)
    released = {what: (exact, value) for what, exact, value in trace}
    assert all(np.array_equal(exact, value) for exact, value in released.values())
    frame = load_rossi()
    days = frame["week"].to_numpy() * 7.0
    arrests = int(frame["arrest"].sum())
    # States sorted (alive, arrested): candidates alive->arrested and arrested->alive.
    assert released["events per candidate transition"][1].tolist() == [arrests, 0]
    horizon = model.privacy_["bounds"]["horizon_days"]
    time = released["person-time per state and time bin"][1]
    assert time[0].sum() == pytest.approx(np.minimum(days, horizon).sum())
    assert time[1].sum() == 0.0
    structure = released["persons per site and initial state; paths per final state and "
                         "ending"][1]
    # site x (alive, arrested) starts; (alive, arrested) x (death, absorbed, censored) ends.
    assert structure.tolist() == [432, 0, 0, 0, 432 - arrests, arrests, 0, 0]
    # The hazard is the exact piecewise-exponential MLE on its released cut points.
    hazard = model.transition("alive->arrested").fit.hazard
    edges = [0.0, *getattr(hazard, "breakpoints", []), math.inf]
    rates = getattr(hazard, "rates", None) or [hazard.rate]
    for low, high, rate in zip(edges[:-1], edges[1:], rates, strict=True):
        events = int(((days >= low) & (days < high) & (frame["arrest"] == 1)).sum())
        exposure = float(np.clip(np.minimum(days, horizon) - low, 0, high - low).sum())
        assert rate == pytest.approx(events / exposure)


def test_replaying_the_releases_on_a_neighbouring_cohort_gives_the_same_model(monkeypatch):
    """One person replaced: the same released values must give the same model, so that no
    estimate reads persons past the mechanisms."""
    frame = load_rossi()
    neighbour = frame.copy()
    neighbour.iloc[0] = frame.iloc[5].to_numpy()  # person 1 now has person 6's values
    first, second = rossi_cohort(frame), rossi_cohort(neighbour)
    trace: list = []
    a = MultiStateModel(epsilon=2.0)
    fit_private(a, first, np.random.default_rng(11), trace=trace)
    # The two cohorts' exact statistics differ (person 1 was arrested, person 6 was not):
    # only the replay can make the models agree.
    exact_b = _exact_releases(second)
    assert not np.array_equal(trace[0][1], exact_b[0][1])
    replay = iter(trace)
    original = Mechanisms.gaussian

    def replayed(self, what, value, sensitivity, share):
        recorded_what, recorded_exact, recorded = next(replay)
        assert what == recorded_what and np.shape(value) == recorded_exact.shape
        original(self, what, value, sensitivity, share)  # charges the same budget
        return recorded.copy(), self.accountant.releases[-1].sigma

    monkeypatch.setattr(Mechanisms, "gaussian", replayed)
    b = MultiStateModel(epsilon=2.0)
    fit_private(b, second, np.random.default_rng(12), trace=None)
    assert next(replay, None) is None  # the same releases, in the same order
    assert b.scenario_dict() == a.scenario_dict()
    assert b.covariate_model_ == a.covariate_model_
    assert b.privacy_ == a.privacy_


def _exact_releases(cohort: Cohort) -> list:
    trace: list = []
    fit_private(MultiStateModel(epsilon=2.0), cohort, np.random.default_rng(11), noise=False,
                trace=trace)
    return trace


# -- estimates ---------------------------------------------------------------------------------


def third_order_bias(log_hr: float) -> float:
    """Largest error of the third-order cumulant estimate of a binary covariate's log HR in a
    two-group exponential model, over treated person-time shares 0.3 to 0.9: it solves
    g = f + f(1-f) b + f(1-f)(1-2f) b^2 / 2, g the treated share of events."""
    r, worst = math.exp(log_hr), 0.0
    for f in np.linspace(0.3, 0.9, 61):
        g = r * f / (r * f + 1 - f)
        roots = np.roots([f * (1 - f) * (1 - 2 * f) / 2, f * (1 - f), f - g])
        root = roots[np.argmin(np.abs(roots - log_hr))].real
        worst = max(worst, abs(root - log_hr))
    return worst


def test_epsilon_8_recovers_the_treatment_log_hazard_ratio():
    cohort = nsclc(5_000, seed=3)
    model = private_fit(cohort, 8.0, seed=5, centers={"age": 64.0})
    assert model.privacy_["epsilon_spent"] <= 8.0
    assert {t.key for t in model.transitions_} >= {"progression_free->progressed",
                                                   "progressed->death"}
    assert model.transition("progressed->death").clock == "reset"
    beta, se = model.transition("progression_free->progressed").fit.log_hazard_ratios()[
        "arm[treatment]"]
    # se holds the sampling variance and the released noise; the expansion's bias is bounded
    # in closed form (0.027 at -0.7).
    bias = third_order_bias(TREATMENT_LOG_HR)
    assert bias < 0.03
    assert abs(beta - TREATMENT_LOG_HR) <= 4 * se + bias
    assert se < 0.1  # informative: 5,000 persons at epsilon 8


def test_epsilon_1_on_500_persons_still_simulates_a_valid_cohort():
    cohort = nsclc(500, seed=4)
    model = private_fit(cohort, 1.0, seed=2)
    synthetic = model.simulate(800, seed=1)  # Cohort() checks the schema and temporal rules
    assert synthetic.n_persons == 800
    states = {s["name"] for s in model.states_}
    assert states <= {"progression_free", "progressed", "death"}
    assert set(synthetic.persons.get_column("site").unique()) <= set(model.sites_)
    assert model.privacy_["epsilon_spent"] <= 1.0
    assert model.processes_.scenario_entries() == {"visits": [], "measurements": [],
                                                   "drugs": []}


def test_options_the_private_fit_refuses(rossi):
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(FitError, match="epsilon"):
            MultiStateModel(epsilon=bad)
    with pytest.raises(FitError, match="delta"):
        MultiStateModel(epsilon=1.0, delta=1.5)
    with pytest.raises(FitError, match="delta"):
        MultiStateModel(delta=1e-6)
    with pytest.raises(FitError, match="parametric"):
        MultiStateModel(epsilon=1.0, censoring="parametric").fit(rossi)
    with pytest.raises(FitError, match="resample"):
        MultiStateModel(epsilon=1.0, covariate_draw="resample").fit(rossi)


# -- the command line --------------------------------------------------------------------------


def test_cli_fits_simulates_validates_and_describes_a_private_model(tmp_path: Path):
    runner = CliRunner()
    load_rossi().to_csv(tmp_path / "rossi.csv", index=False)
    reference, model, synthetic = tmp_path / "ref", tmp_path / "model", tmp_path / "syn"
    steps = [
        ["import", "table", str(tmp_path / "rossi.csv"), "--out", str(reference), "--time",
         "week", "--status", "arrest", "--time-unit", "weeks", "--event-state", "arrested",
         "--covariates", ",".join(ROSSI_COVARIATES)],
        # the CLI's noise is fresh OS entropy: epsilon 4 keeps rossi's event counts far above
        # the noise threshold in every run (at 1 about one run in a thousand falls below it)
        ["fit", str(reference), "--out", str(model), "--epsilon", "4"],
        ["simulate", "--model", str(model), "--n", "1000", "--out", str(synthetic)],
    ]
    outputs = []
    for step in steps:
        result = runner.invoke(app, step, terminal_width=200)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "differential privacy: epsilon" in outputs[1]
    record = json.loads((model / "fit.json").read_text())["privacy"]
    assert record["epsilon"] == 4.0 and record["epsilon_spent"] <= 4.0
    assert not (model / "baseline.parquet").exists()  # no rows of real persons
    validated = runner.invoke(app, ["validate", str(synthetic), "--reference", str(reference),
                                    "--report", str(tmp_path / "report")], terminal_width=200)
    assert validated.exit_code in (0, 1), validated.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    integrity = [c["verdict"] for c in report["checks"] if c["group"] == "integrity"]
    assert len(integrity) >= 20 and set(integrity) == {"pass"}  # a valid cohort, whatever noise
    described = runner.invoke(app, ["describe", "--model", str(model)], terminal_width=200)
    assert described.exit_code == 0 and "epsilon_spent" in described.output


def test_a_public_horizon_is_not_released_and_is_said_to_be_public(rossi):
    trace: list = []
    model = MultiStateModel(epsilon=2.0, horizon_days=400.0)
    fit_private(model, rossi, np.random.default_rng(4), trace=trace)
    assert not any("follow-up ends on the range grid" in what for what, *_ in trace)
    assert model.privacy_["bounds"]["horizon_days"] == 400.0
    assert any("horizon (400 days, given)" in item for item in model.privacy_["public"])
    assert model.privacy_["epsilon_spent"] <= 2.0
    with pytest.raises(FitError, match="goes with epsilon"):
        MultiStateModel(horizon_days=400.0)


def test_validate_uses_the_split_of_a_private_model_though_its_fingerprint_is_withheld(rossi):
    from validation import compare

    model = MultiStateModel(epsilon=4.0, holdout_fraction=0.5, holdout_seed=2)
    fit_private(model, rossi, np.random.default_rng(6))
    synthetic = model.simulate(1000, seed=1)
    assert synthetic.manifest.reference_fingerprint == "dp-withheld"
    report = compare(synthetic, rossi, figures=False)
    judged = [c for c in report.checks if c.group == "privacy" and c.verdict != "info"]
    assert len(judged) >= 5
    assert "is not checked" in report.context["privacy train"]
