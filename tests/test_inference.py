"""Honest inference from synthetic cohorts: combining rules against hand-computed values, a
seeded coverage study of the naive and the combined intervals, the estimators' influence
terms against finite differences and lifelines, `trajectories analyze` on replicate folders
with every user error, and PPI++ with right and badly wrong synthetic sources.

Coverage tolerances are binomial: 3 standard errors of a proportion near 0.95 over the
repetitions run.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from lifelines import CoxPHFitter
from scipy import stats
from typer.testing import CliRunner

from trajectories.cli import app, main
from trajectories.cohort import Cohort, Manifest
from trajectories.errors import InferenceError
from trajectories.inference import (
    HazardRatio,
    Landmark,
    Rmst,
    analyze,
    augment,
    combine,
    prediction_powered,
)
from trajectories.inference.influence import cox_fit, km_log_survival, km_rmst
from trajectories.simulate import MarkovSimulator
from validation.cox import cox_hazard_ratios
from validation.endpoints import endpoint_times
from validation.survival import kaplan_meier, rmst, survival_at

Z95 = float(stats.norm.ppf(0.975))
runner = CliRunner()


def _binomial_band(p: float, reps: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / reps)


# -- combining rules: hand-computed values ------------------------------------------------------

Q, U = [0.1, 0.3, 0.2], [0.010, 0.012, 0.011]  # qbar 0.2, ubar 0.011, b 0.01


def test_simple_and_proper_synthesis_variances_by_hand():
    simple = combine(Q, U, rule="simple", n_reference=100, n_synthetic=1000)
    assert simple.estimate == pytest.approx(0.2)
    assert simple.within == pytest.approx(0.011) and simple.between == pytest.approx(0.01)
    assert simple.variance == pytest.approx(0.011 * (10 + 1 / 3))  # 0.113667
    assert simple.ci == pytest.approx((0.2 - Z95 * math.sqrt(0.1136667),
                                       0.2 + Z95 * math.sqrt(0.1136667)), rel=1e-6)
    assert math.isinf(simple.df)
    proper = combine(Q, U, rule="proper", n_reference=100, n_synthetic=1000)
    assert proper.variance == pytest.approx(0.011 * (10 + 11 / 3))  # 0.150333
    # the naive interval: every synthetic person taken as real, variance ubar / m
    assert proper.naive_ci == pytest.approx((0.2 - Z95 * math.sqrt(0.011 / 3),
                                             0.2 + Z95 * math.sqrt(0.011 / 3)))
    # k < n, and m = 1: still defined (no between-replicate variance needed)
    one = combine([0.5], [0.04], rule="proper", n_reference=400, n_synthetic=100)
    assert one.variance == pytest.approx(0.04 * (0.25 + 1.25)) and one.m == 1


def test_partially_synthetic_rule_and_reiters_degrees_of_freedom():
    partial = combine(Q, U, rule="partially_synthetic", n_reference=100, n_synthetic=1000)
    assert partial.variance == pytest.approx(0.011 * 10 + 0.01 / 3)  # 0.113333
    assert partial.df == pytest.approx(2 * (1 + 0.11 / (0.01 / 3)) ** 2)  # 2312
    half = stats.t.ppf(0.975, 2312) * math.sqrt(0.1133333)
    assert partial.ci == pytest.approx((0.2 - half, 0.2 + half), rel=1e-6)
    # at k = n it is Reiter's T_p = ubar + b/m, df (m - 1)(1 + ubar / (b/m))^2
    reiter = combine(Q, U, rule="partially_synthetic", n_reference=500, n_synthetic=500)
    assert reiter.variance == pytest.approx(0.011 + 0.01 / 3)
    assert reiter.df == pytest.approx(2 * (1 + 0.011 / (0.01 / 3)) ** 2)  # 36.98


def test_fully_synthetic_rule_is_guarded():
    fully = combine(Q, U, rule="fully_synthetic", n_reference=100, n_synthetic=1000)
    assert fully.variance == pytest.approx(4 / 3 * 0.01 - 0.011)  # 0.002333
    assert fully.df == pytest.approx(2 * (1 - 0.011 / (4 / 3 * 0.01)) ** 2)  # 0.06125
    with pytest.raises(InferenceError, match=r"not positive .*use rule 'proper'"):
        combine([0.1, 0.11, 0.12], U, rule="fully_synthetic", n_reference=100,
                n_synthetic=1000)  # b = 1e-4 < ubar
    for rule in ("fully_synthetic", "partially_synthetic"):
        with pytest.raises(InferenceError, match="needs m >= 2"):
            combine([0.1], [0.01], rule=rule, n_reference=100, n_synthetic=1000)


def test_real_rule_and_bad_input():
    real = combine([0.2], [0.01], rule="real")
    assert real.ci == real.naive_ci == pytest.approx((0.2 - Z95 * 0.1, 0.2 + Z95 * 0.1))
    with pytest.raises(InferenceError, match="unknown combining rule 'reiter'"):
        combine(Q, U, rule="reiter", n_reference=1, n_synthetic=1)
    with pytest.raises(InferenceError, match="3 estimate"):
        combine(Q, U[:2], rule="simple", n_reference=1, n_synthetic=1)
    with pytest.raises(InferenceError, match="n_reference"):
        combine(Q, U, rule="simple")


# -- coverage: exponential hazards, a fitted model, k = 10 n -------------------------------------


def _log_rate_ratio(rng, n: int, rates: np.ndarray) -> tuple[float, float, np.ndarray,
                                                             np.ndarray]:
    """Two balanced arms with exponential hazards, censored uniformly on 200-800 days: the MLE
    log rate ratio (the Cox log HR's exponential analogue), its variance, events, exposure."""
    arm = np.arange(n) % 2
    times = rng.exponential(1 / rates[arm])
    censor = rng.uniform(200, 800, n)
    observed, event = np.minimum(times, censor), times <= censor
    d = np.array([event[arm == a].sum() for a in (0, 1)], dtype=float)
    exposure = np.array([observed[arm == a].sum() for a in (0, 1)])
    return float(np.log(d[1] / exposure[1]) - np.log(d[0] / exposure[0])), float(
        1 / d[0] + 1 / d[1]), d, exposure


def test_naive_intervals_at_k_10n_undercover_and_the_rules_cover():
    rng = np.random.default_rng(2026)
    n, k, reps, truth = 100, 1000, 200, math.log(0.6)
    rates = np.array([1 / 400, 0.6 / 400])
    hits = {name: 0 for name in ("naive m=1", "simple m=1", "naive m=5", "proper m=5",
                                 "partially_synthetic m=5")}
    for _ in range(reps):
        _, _, d, exposure = _log_rate_ratio(rng, n, rates)  # the real persons: fit the model
        fitted = d / exposure
        # simple synthesis: one cohort from the fitted rates
        q, u, *_ = _log_rate_ratio(rng, k, fitted)
        simple = combine([q], [u], rule="simple", n_reference=n, n_synthetic=k)
        hits["naive m=1"] += simple.naive_ci[0] < truth < simple.naive_ci[1]
        hits["simple m=1"] += simple.ci[0] < truth < simple.ci[1]
        # proper synthesis: rates drawn from their asymptotic distribution per replicate
        results = [_log_rate_ratio(rng, k, np.exp(rng.normal(np.log(fitted), 1 / np.sqrt(d))))
                   for _ in range(5)]
        qs, us = [r[0] for r in results], [r[1] for r in results]
        proper = combine(qs, us, rule="proper", n_reference=n, n_synthetic=k)
        partial = combine(qs, us, rule="partially_synthetic", n_reference=n, n_synthetic=k)
        hits["naive m=5"] += proper.naive_ci[0] < truth < proper.naive_ci[1]
        hits["proper m=5"] += proper.ci[0] < truth < proper.ci[1]
        hits["partially_synthetic m=5"] += partial.ci[0] < truth < partial.ci[1]
    coverage = {name: count / reps for name, count in hits.items()}
    band = _binomial_band(0.95, reps)
    for name in ("simple m=1", "proper m=5", "partially_synthetic m=5"):
        assert abs(coverage[name] - 0.95) < band, coverage
    # expected: P(|Z| < 1.96 sqrt(1/11)) = 0.445 and P(|Z| < 1.96 sqrt(0.2/12.2)) = 0.198
    assert coverage["naive m=1"] < 0.445 + _binomial_band(0.445, reps), coverage
    assert coverage["naive m=5"] < 0.198 + _binomial_band(0.198, reps), coverage


# -- influence terms ------------------------------------------------------------------------------


def _censored_sample(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    x, z = rng.integers(0, 2, n), rng.normal(size=n)
    t = rng.exponential(100 / np.exp(-0.5 * x + 0.3 * z))
    c = rng.uniform(0, 200, n)
    return np.minimum(t, c), (t <= c).astype(np.int64), x, z


def _weighted_log_km(time, event, weight, t0):
    log_s = 0.0
    for tk in np.unique(time[(time <= t0) & (event == 1)]):
        at_risk, deaths = weight[time >= tk].sum(), weight[(time == tk) & (event == 1)].sum()
        log_s += math.log(1 - deaths / at_risk)
    return log_s


def test_kaplan_meier_influence_is_the_derivative_in_each_persons_weight():
    time, event, *_ = _censored_sample(1)
    log_s, terms = km_log_survival(time, event, 80.0)
    s = survival_at(kaplan_meier(time, event), 80.0)
    assert math.exp(log_s) == pytest.approx(s["value"], rel=1e-12)
    ones, eps = np.ones(time.size), 1e-6
    first_event = int(np.argmin(np.where(event == 1, time, np.inf)))
    for person in (0, 5, first_event, int(np.argmax(time))):
        weight = ones.copy()
        weight[person] += eps
        derivative = (_weighted_log_km(time, event, weight, 80.0)
                      - _weighted_log_km(time, event, ones, 80.0)) / eps
        assert terms[person] == pytest.approx(derivative, rel=1e-4, abs=1e-9)
    assert abs(terms.sum()) < 1e-12
    # the squares: Greenwood's variance of log S, to within its O(1/n) difference
    assert (terms**2).sum() == pytest.approx((s["std_error"] / s["value"]) ** 2, rel=0.05)


def test_rmst_influence_gives_the_greenwood_type_variance():
    time, event, *_ = _censored_sample(2)
    value, terms = km_rmst(time, event, 150.0)
    expected, se = rmst(kaplan_meier(time, event), 150.0)
    assert value == pytest.approx(expected, rel=1e-12)
    assert math.sqrt((terms**2).sum()) == pytest.approx(se, rel=1e-9)


def test_cox_influence_matches_lifelines_fit_and_robust_variance():
    time, event, x, z = _censored_sample(3)
    frame = pl.DataFrame({"time": time, "event": event, "x": x.astype(float), "z": z})
    fit = cox_fit(time, event, np.column_stack([x, z]))
    lifelines = cox_hazard_ratios(frame, "time", "event", ["x", "z"])
    np.testing.assert_allclose(fit.beta, lifelines["log_hr"].to_numpy(), atol=1e-7)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.model_covariance)),
                               lifelines["std_error"].to_numpy(), rtol=1e-6)
    robust = CoxPHFitter().fit(frame.to_pandas(), "time", "event", robust=True)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.robust_covariance)),
                               robust.standard_errors_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(fit.dfbeta.sum(axis=0), 0.0, atol=1e-9)


# -- analyze on replicate folders -----------------------------------------------------------------

N_REFERENCE, K, M = 100, 400, 3


def _replicate(cohort: Cohort, **key) -> Cohort:
    manifest = Manifest.model_validate({**cohort.manifest.model_dump(), "replicate": key})
    return Cohort(cohort.persons, cohort.events, manifest)


def _edit_manifest(directory: Path, **changes) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    data["replicate"] = {**data["replicate"], **changes}
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """Three replicates of 400 persons (a model of 100 real persons, asymptotic draws), a
    stand-in real cohort of 300 and a synthetic cohort of 4,000 from the oncology scenario."""
    base = tmp_path_factory.mktemp("inference")
    simulator = MarkovSimulator("oncology_nsclc_two_arm")
    for i in range(1, M + 1):
        cohort = simulator.simulate(K, seed=i)
        _replicate(cohort, index=i, m=M, draws="asymptotic", n_reference=N_REFERENCE).write(
            base / "replicates" / f"replicate-{i}")
    simulator.simulate(300, seed=11).write(base / "real")
    simulator.simulate(4000, seed=12).write(base / "synthetic")
    return {"replicates": base / "replicates", "real": base / "real",
            "synthetic": base / "synthetic", "base": base}


def _json(*args: str) -> dict:
    result = runner.invoke(app, ["analyze", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _overall_survival(cohort: Cohort) -> pl.DataFrame:
    from trajectories.inference.analyses import cohort_endpoints

    endpoint = next(e for e in cohort_endpoints(cohort) if e.name == "overall_survival")
    return endpoint_times(cohort, endpoint)


def test_analyze_json_combines_the_replicates_cox_fits_by_the_proper_rule(cohorts):
    data = _json(str(cohorts["replicates"]), "--hazard-ratio", "arm=treatment")
    assert set(data) == {"estimate", "ci", "naive_ci", "m", "rule", "df", "analysis"}
    assert data["m"] == M and data["rule"] == "proper" and data["df"] is None
    assert data["analysis"] == "hazard ratio of arm=treatment vs control, overall_survival"
    fits = [cox_hazard_ratios(_overall_survival(Cohort.read(cohorts["replicates"]
                                                            / f"replicate-{i}")),
                              "time", "event", ["arm"]) for i in range(1, M + 1)]
    q = np.array([f["log_hr"][0] for f in fits])
    u = np.array([f["std_error"][0] ** 2 for f in fits])
    ratio = K / N_REFERENCE
    total = u.mean() * (ratio + (1 + ratio) / M)
    assert data["estimate"] == pytest.approx(math.exp(q.mean()), rel=1e-9)
    assert data["ci"] == pytest.approx([math.exp(q.mean() - Z95 * math.sqrt(total)),
                                        math.exp(q.mean() + Z95 * math.sqrt(total))], rel=1e-9)
    assert data["naive_ci"] == pytest.approx(
        [math.exp(q.mean() - Z95 * math.sqrt(u.mean() / M)),
         math.exp(q.mean() + Z95 * math.sqrt(u.mean() / M))], rel=1e-9)
    table = runner.invoke(app, ["analyze", str(cohorts["replicates"]), "--hazard-ratio", "arm"],
                          terminal_width=200)
    assert table.exit_code == 0 and "naive 95% CI" in table.output and "proper" in table.output


def test_analyze_landmark_and_rmst_on_their_scales(cohorts):
    landmark = _json(str(cohorts["replicates"]), "--landmark", "365")
    values = []
    for i in range(1, M + 1):
        rows = _overall_survival(Cohort.read(cohorts["replicates"] / f"replicate-{i}"))
        at = survival_at(kaplan_meier(rows["time"], rows["event"]), 365.0)
        values.append((math.log(-math.log(at["value"])),
                       (at["std_error"] / at["value"] / math.log(at["value"])) ** 2))
    q, u = np.array(values).T
    ratio = K / N_REFERENCE
    half = Z95 * math.sqrt(u.mean() * (ratio + (1 + ratio) / M))
    assert landmark["estimate"] == pytest.approx(math.exp(-math.exp(q.mean())), rel=1e-9)
    # log(-log S) rises as S falls: the upper bound of S comes from the lower one of the scale
    assert landmark["ci"] == pytest.approx([math.exp(-math.exp(q.mean() + half)),
                                            math.exp(-math.exp(q.mean() - half))], rel=1e-9)
    partial = _json(str(cohorts["replicates"]), "--rmst", "365", "--rule",
                    "partially_synthetic")
    assert partial["rule"] == "partially_synthetic" and partial["df"] > 0
    lo, hi = partial["ci"]
    assert lo < partial["estimate"] < hi and hi - lo > partial["naive_ci"][1] - partial[
        "naive_ci"][0]


def test_a_real_cohort_is_analysed_as_real_data(cohorts):
    data = _json(str(cohorts["real"]), "--hazard-ratio", "arm")
    assert data["rule"] == "real" and data["m"] == 1 and data["ci"] == data["naive_ci"]
    fit = cox_hazard_ratios(_overall_survival(Cohort.read(cohorts["real"])), "time", "event",
                            ["arm"])
    assert data["ci"] == pytest.approx([fit["lower"][0], fit["upper"][0]], rel=1e-9)


def test_the_rule_follows_the_draws(cohorts):
    simple = cohorts["base"] / "simple"
    shutil.copytree(cohorts["replicates"], simple)
    for i in range(1, M + 1):
        _edit_manifest(simple / f"replicate-{i}", draws="none")
    data = _json(str(simple), "--hazard-ratio", "arm")
    proper = _json(str(cohorts["replicates"]), "--hazard-ratio", "arm")
    assert data["rule"] == "simple" and data["estimate"] == pytest.approx(proper["estimate"])
    assert data["ci"][1] - data["ci"][0] < proper["ci"][1] - proper["ci"][0]
    # the Python API gives the same, with what went into it
    result = analyze(simple, HazardRatio(covariate="arm"))
    assert result.rule == "simple" and result.estimate == pytest.approx(data["estimate"])
    assert (result.m, result.n_reference, result.n_synthetic) == (M, N_REFERENCE, K)
    assert result.combined.variance == pytest.approx(
        np.mean([e.variance for e in result.per_replicate]) * (K / N_REFERENCE + 1 / M))


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The real entry point in this process: exit status and stderr."""
    monkeypatch.setattr(sys, "argv", ["trajectories", "analyze", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0), capsys.readouterr().err


def test_every_user_error_exits_2_with_a_message(cohorts, monkeypatch, capsys):
    base, replicates = cohorts["base"], str(cohorts["replicates"])
    (base / "empty").mkdir()
    single = base / "single"
    shutil.copytree(cohorts["replicates"] / "replicate-1", single)
    _edit_manifest(single, m=1)
    lone = base / "lone"
    shutil.copytree(cohorts["replicates"] / "replicate-1", lone / "replicate-1")
    _edit_manifest(lone / "replicate-1", m=1)
    for name, change in (("other_n", {"n_reference": 250}), ("other_draws",
                                                             {"draws": "bootstrap"})):
        shutil.copytree(cohorts["replicates"], base / name)
        _edit_manifest(base / name / "replicate-2", **change)
    gap = base / "gap"
    shutil.copytree(cohorts["replicates"], gap)
    shutil.rmtree(gap / "replicate-3")
    none = base / "none_draws"
    shutil.copytree(cohorts["replicates"], none)
    for i in range(1, M + 1):
        _edit_manifest(none / f"replicate-{i}", draws="none")

    cases = [
        ((replicates, "--hazard-ratio", "stage"),
         "unknown covariate 'stage'; known covariates: site, sex, age, arm, ecog"),
        ((replicates, "--hazard-ratio", "arm=placebo"),
         "unknown level 'placebo' of covariate 'arm'; known levels: 'control', 'treatment'"),
        ((replicates, "--hazard-ratio", "age=old"), "covariate 'age' is numeric"),
        ((replicates, "--landmark", "365", "--endpoint", "pfs"),
         "unknown endpoint 'pfs'; endpoints: overall_survival, event_free_survival"),
        ((str(base / "empty"), "--rmst", "365"),
         "no cohort here (manifest.json missing) and no replicate-* cohort directories"),
        ((str(single), "--hazard-ratio", "arm", "--rule", "partially_synthetic"),
         "one cohort, no replicates; rule 'partially_synthetic' needs m >= 2"),
        ((str(lone), "--hazard-ratio", "arm", "--rule", "partially_synthetic"),
         "m = 1 replicate; rule 'partially_synthetic' needs m >= 2"),
        ((str(base / "other_n"), "--hazard-ratio", "arm"),
         "replicates disagree on n_reference (replicate-1 has 100, replicate-2 has 250"),
        ((str(base / "other_draws"), "--hazard-ratio", "arm"),
         "replicates disagree on draws (replicate-1 has 'asymptotic', replicate-2 has "
         "'bootstrap'"),
        ((str(gap), "--hazard-ratio", "arm"), "m = 3 replicates but their indices are [1, 2]; "
                                              "missing [3]"),
        ((str(none), "--hazard-ratio", "arm", "--rule", "fully_synthetic"),
         "rule 'fully_synthetic' needs parameter draws"),
        ((str(cohorts["real"]), "--hazard-ratio", "arm", "--rule", "proper"),
         "a real cohort (no 'replicate' key in manifest.json) is analysed as real data"),
        ((replicates, "--hazard-ratio", "arm", "--landmark", "30"),
         "give exactly one of --hazard-ratio"),
        ((replicates, "--landmark", "-3"), "--landmark must be a number of days > 0"),
        ((replicates, "--hazard-ratio", "arm", "--rule", "reiter"),
         "unknown combining rule 'reiter'"),
        ((str(cohorts["real"]), "--augment", replicates, "--landmark", "365"),
         "a folder of 3 replicates; give one cohort directory"),
    ]
    for args, message in cases:
        code, err = _cli(monkeypatch, capsys, *args)
        assert code == 2, (args, err)
        assert message in " ".join(err.split()), (args, err)
        assert "Traceback" not in err


# -- PPI++: a small real cohort powered by a synthetic one ----------------------------------------


def _trial(rng, n: int, arm_log_hr: float = math.log(0.6), risk_log_hr: float = math.log(8),
           base: float = 1 / 700, p_high: float = 0.5) -> pl.DataFrame:
    """Endpoint rows of a two-arm trial with a strong prognostic factor: exponential hazards,
    censoring uniform on 1-3 years."""
    arm, high = rng.integers(0, 2, n), rng.random(n) < p_high
    rate = base * np.exp(arm_log_hr * arm + risk_log_hr * high)
    t, c = rng.exponential(1 / rate), rng.uniform(365, 1095, n)
    return pl.DataFrame({"time": np.minimum(t, c), "event": (t <= c).astype(np.int8),
                         "arm": np.where(arm == 1, "treatment", "control"),
                         "risk": np.where(high, "high", "low")})


def _landmark_truth(days: float = 365.0, base: float = 1 / 700) -> float:
    """log(-log S(days)) of the real population: no censoring before a year, so the marginal
    survival is the mixture of the four cells' exponential survivals."""
    survival = np.mean([math.exp(-base * math.exp(math.log(0.6) * a + math.log(8) * h) * days)
                        for a in (0, 1) for h in (0, 1)])
    return math.log(-math.log(survival))


@pytest.fixture(scope="module")
def ppi_setting():
    rng = np.random.default_rng(7)
    hazard_ratio = HazardRatio(covariate="arm").bind(_trial(rng, 50), ["arm", "risk"], "real")
    # the marginal Cox log HR of arm (non-collapsible: not log 0.6) from 400,000 persons
    truth, _ = hazard_ratio.influence(_trial(rng, 400_000))
    return {"hr": (hazard_ratio, truth), "landmark": (Landmark(days=365), _landmark_truth())}


def _repeat(setting, seed: int, reps: int, **synthetic) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    runs: dict[str, list] = {"hr": [], "landmark": []}
    for _ in range(reps):
        real, source = _trial(rng, 200), _trial(rng, 3000, **synthetic)
        for key, (analysis, truth) in setting.items():
            r = prediction_powered(real, source, analysis, match_on=["arm", "risk"])
            runs[key].append((r.theta, r.variance, r.real_theta, r.real_variance, truth, r.lam,
                              r.synthetic_theta))
    return {key: np.array(rows) for key, rows in runs.items()}


def _covers(theta, variance, truth) -> float:
    return float(np.mean(np.abs(theta - truth) < Z95 * np.sqrt(variance)))


def test_ppi_with_a_right_synthetic_source_is_narrower_than_real_only(ppi_setting):
    reps = 150
    for key, a in _repeat(ppi_setting, 11, reps).items():
        theta, variance, real_theta, real_variance, truth, lam, _ = a.T
        assert np.all(variance <= real_variance + 1e-15), key  # lambda in [0, 1] at its optimum
        assert np.mean(variance / real_variance) < 0.8, key  # ~0.6 expected
        assert np.mean(lam) > 0.5, key
        # the estimates really vary less, not only their stated variance
        assert theta.var() < 0.9 * real_theta.var(), key
        assert abs(_covers(theta, variance, truth) - 0.95) < _binomial_band(0.95, reps), key


def test_ppi_stays_valid_with_a_badly_wrong_synthetic_source(ppi_setting):
    # the source gets the arm's HR (1.5 against 0.6), the risk HR (2 against 8) and the
    # baseline hazard (1/300 against 1/700) wrong, but draws the same covariate mix
    reps = 200
    runs = _repeat(ppi_setting, 12, reps, arm_log_hr=math.log(1.5),
                   risk_log_hr=math.log(2), base=1 / 300)
    for key, a in runs.items():
        theta, variance, _, _, truths, _, synthetic_theta = a.T
        truth = truths[0]
        assert abs(_covers(theta, variance, truth) - 0.95) < _binomial_band(0.95, reps), key
        # unbiased, while the source's own answer is many standard errors off
        assert abs(theta.mean() - truth) < 3 * math.sqrt(variance.mean() / reps), key
        assert abs(synthetic_theta.mean() - truth) > 4 * math.sqrt(variance.mean()), key


def test_ppi_flags_a_synthetic_covariate_mix_unlike_the_real_one(ppi_setting):
    rng = np.random.default_rng(13)
    analysis, _ = ppi_setting["landmark"]
    real = _trial(rng, 200)
    shifted = prediction_powered(real, _trial(rng, 3000, p_high=0.15), analysis,
                                 match_on=["arm", "risk"])
    matched = prediction_powered(real, _trial(rng, 3000), analysis, match_on=["arm", "risk"])
    assert shifted.shift_z > 3 > abs(matched.shift_z)
    with pytest.raises(InferenceError, match="risk='high', which no synthetic person has"):
        prediction_powered(real, _trial(rng, 500, p_high=0.0), analysis, match_on=["risk"])


def test_augment_cohorts_through_the_command_line(cohorts):
    data = _json(str(cohorts["real"]), "--augment", str(cohorts["synthetic"]),
                 "--hazard-ratio", "arm")
    assert data["rule"] == "ppi++" and data["m"] == 1 and 0 <= data["lambda"] <= 1
    for key in ("ci", "real_ci", "naive_ci"):
        assert data[key][0] < data[key][1]
    assert data["ci"][0] < data["estimate"] < data["ci"][1]
    assert data["ci"][1] / data["ci"][0] <= data["real_ci"][1] / data["real_ci"][0] * (1 + 1e-12)
    # the real-only interval is the Cox fit's with the robust variance (Lin & Wei 1989),
    # times n / (n - 1) as for every variance of the influence terms
    rows = _overall_survival(Cohort.read(cohorts["real"])).select("time", "event", "arm")
    frame = rows.with_columns((pl.col("arm") == "treatment").cast(pl.Float64)).to_pandas()
    robust = CoxPHFitter().fit(frame, "time", "event", robust=True)
    log_hr = robust.params_["arm"]
    se = robust.standard_errors_["arm"] * math.sqrt(rows.height / (rows.height - 1))
    assert data["real_ci"] == pytest.approx([math.exp(log_hr - Z95 * se),
                                             math.exp(log_hr + Z95 * se)], rel=1e-5)
    result = augment(cohorts["real"], cohorts["synthetic"], Rmst(days=365))
    assert result.match_on == ["site", "sex", "age", "arm", "ecog"] and result.cells > 10
    assert result.variance <= result.real_variance
