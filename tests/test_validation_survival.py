"""validation.survival against lifelines (its own data sets), closed forms and seeded statistics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines import AalenJohansenFitter, CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_gbsg2, load_lymphoma, load_rossi, load_waltons
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times, restricted_mean_survival_time

from trajectories.errors import TrajectoriesError
from validation.cox import cox_hazard_ratios, design_matrix
from validation.endpoints import Endpoint, endpoint_times
from validation.survival import (
    SurvivalDataError,
    aalen_johansen,
    kaplan_meier,
    median_survival,
    rmst,
    rmst_difference,
    survival_at,
)
from validation.two_sample import distance_threshold, logrank, max_vertical_distance

TOL = 1e-10


def _tied_with_zeros() -> pd.DataFrame:
    """Integer times with heavy ties, some at 0, and a last time where everyone dies."""
    rng = np.random.default_rng(11)
    t = np.floor(rng.exponential(8.0, 400))
    e = (rng.random(400) < 0.7).astype(int)
    t[:5], e[:5] = 0.0, 1
    t[5:8], e[5:8] = t.max() + 3, 1
    return pd.DataFrame({"T": t, "E": e})


DATASETS = {
    "waltons": (load_waltons, "T", "E"),
    "rossi": (load_rossi, "week", "arrest"),
    "lymphoma": (load_lymphoma, "Time", "Censor"),
    "gbsg2": (load_gbsg2, "time", "cens"),
    "tied_with_zeros": (_tied_with_zeros, "T", "E"),
}


def _data(name: str) -> tuple[pl.Series, pl.Series, pd.Series, pd.Series]:
    loader, t, e = DATASETS[name]
    df = loader()
    return pl.Series(df[t].to_numpy()), pl.Series(df[e].to_numpy()), df[t], df[e]


def _close(actual, expected, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=0,
                               atol=tol)


# -- Kaplan-Meier -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
def test_kaplan_meier_matches_lifelines(name: str) -> None:
    time, event, t, e = _data(name)
    kmf = KaplanMeierFitter().fit(t, e)
    curve = kaplan_meier(time, event)
    table = kmf.event_table
    _close(curve["time"], kmf.survival_function_.index.to_numpy(), 0)
    _close(curve["survival"], kmf.survival_function_.iloc[:, 0], TOL)
    _close(curve["at_risk"], table["at_risk"], 0)
    _close(curve["events"], table["observed"], 0)
    _close(curve["censored"], table["censored"], 0)
    _close(curve["lower"], kmf.confidence_interval_.iloc[:, 0], TOL)
    _close(curve["upper"], kmf.confidence_interval_.iloc[:, 1], TOL)
    greenwood = kmf.survival_function_.iloc[:, 0].to_numpy() * np.sqrt(kmf._cumulative_sq_)
    _close(curve["std_error"], greenwood, TOL)


def test_kaplan_meier_without_censoring_is_the_empirical_survival() -> None:
    rng = np.random.default_rng(5)
    x = np.round(rng.exponential(30.0, 200), 1)
    curve = kaplan_meier(pl.Series(x), pl.Series(np.ones(200, dtype=int)))
    times = curve["time"].to_numpy()
    empirical = (x[None, :] > times[:, None]).mean(axis=1)
    _close(curve["survival"], empirical, 1e-12)
    # Greenwood's variance reduces to the binomial one, S (1 - S) / n
    _close(curve["std_error"], np.sqrt(empirical * (1 - empirical) / 200), 1e-12)
    assert curve["survival"][-1] == 0.0 and curve["lower"][-1] == 0.0


def test_censoring_at_infinity_keeps_persons_at_risk() -> None:
    time, event, *_ = _data("rossi")
    finite = kaplan_meier(time, event)
    moved = kaplan_meier(time.cast(pl.Float64).set(event == 0, float("inf")), event)
    # censored rows moved to +inf stay at risk: the curve drops at the same times, less deeply
    assert moved["time"][-1] == math.inf and moved["censored"][-1] == (event == 0).sum()
    events_only = moved.filter(pl.col("events") > 0)
    assert events_only["time"].equals(finite.filter(pl.col("events") > 0)["time"])
    assert (events_only["survival"] >= finite.filter(pl.col("events") > 0)["survival"]).all()
    n_at_risk = events_only["at_risk"].to_numpy()
    assert (n_at_risk >= (event == 0).sum()).all()


def test_kaplan_meier_accepts_boolean_events_and_numpy() -> None:
    time, event, *_ = _data("waltons")
    by_bool = kaplan_meier(time.to_numpy(), event.cast(pl.Boolean))
    assert by_bool.equals(kaplan_meier(time, event))


@pytest.mark.parametrize(
    ("time", "event", "message"),
    [
        ([1.0, -2.0], [1, 0], "time: values must be >= 0"),
        ([1.0, float("nan")], [1, 0], "time: values must be >= 0"),
        ([1.0, float("inf")], [1, 1], "finite unless censored"),
        ([1.0, 2.0], [1, 2], "event: values must be 0"),
        ([1.0, 2.0], [1], "time has 2 values but event has 1"),
        ([], [], "no observations"),
    ],
)
def test_kaplan_meier_rejects_bad_input(time, event, message) -> None:
    with pytest.raises(SurvivalDataError, match=message):
        kaplan_meier(pl.Series(time, dtype=pl.Float64), pl.Series(event, dtype=pl.Int64))
    assert issubclass(SurvivalDataError, TrajectoriesError)


# -- Aalen-Johansen -----------------------------------------------------------------------------


def _competing_gbsg2() -> tuple[np.ndarray, np.ndarray]:
    """gbsg2 with its events split into two causes by parity of the day: ties occur only
    within a cause, which lifelines handles without jittering."""
    df = load_gbsg2()
    t = df["time"].to_numpy().astype(float)
    status = np.where(df["cens"] == 1, 1 + df["time"].to_numpy() % 2, 0)
    return t, status


def _competing_continuous() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    t1, t2, c = rng.exponential(100, 500), rng.weibull(1.5, 500) * 150, rng.uniform(0, 250, 500)
    t = np.minimum.reduce([t1, t2, c])
    return t, np.select([t == t1, t == t2], [1, 2], 0)


@pytest.mark.parametrize("make", [_competing_gbsg2, _competing_continuous])
@pytest.mark.parametrize("cause", [1, 2])
def test_aalen_johansen_matches_lifelines(make, cause: int) -> None:
    t, status = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a jitter warning would mean lifelines changed the data
        ajf = AalenJohansenFitter().fit(t, status, event_of_interest=cause)
    curve = aalen_johansen(pl.Series(t), pl.Series(status), cause=cause)
    _close(curve["time"], ajf.cumulative_density_.index.to_numpy(), 0)
    _close(curve["cumulative_incidence"], ajf.cumulative_density_.iloc[:, 0], TOL)
    _close(curve["at_risk"], ajf.event_table["at_risk"], 0)
    _close(curve["events"], ajf.event_table[f"observed_{cause}"], 0)
    _close(curve["std_error"] ** 2, ajf.variance_, TOL)
    bounds = ajf.confidence_interval_.to_numpy()
    defined = np.isfinite(bounds).all(axis=1)  # lifelines leaves CIF = 0 rows undefined
    _close(curve["lower"].to_numpy()[defined], bounds.min(axis=1)[defined], TOL)
    _close(curve["upper"].to_numpy()[defined], bounds.max(axis=1)[defined], TOL)
    assert (curve["lower"].to_numpy()[~defined] == 0).all()


def test_cumulative_incidences_add_up_to_one_minus_overall_survival() -> None:
    t, status = _competing_gbsg2()
    cif = [aalen_johansen(t, status, cause=k)["cumulative_incidence"] for k in (1, 2)]
    overall = kaplan_meier(t, (status > 0).astype(int))["survival"]
    _close(cif[0] + cif[1], 1 - overall, 1e-12)


def test_aalen_johansen_without_competing_events_is_one_minus_kaplan_meier() -> None:
    time, event, *_ = _data("tied_with_zeros")  # time-0 events count here (not in lifelines)
    _close(aalen_johansen(time, event)["cumulative_incidence"],
           1 - kaplan_meier(time, event)["survival"], 1e-12)


# -- summaries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["waltons", "lymphoma", "gbsg2"])
def test_survival_at_median_and_rmst_match_lifelines(name: str) -> None:
    time, event, t, e = _data(name)
    kmf = KaplanMeierFitter().fit(t, e)
    curve = kaplan_meier(time, event)
    times = [*np.quantile(t, [0.0, 0.1, 0.37, 0.5, 0.9, 1.0]), 1.5 * t.max()]
    for at in map(float, times):
        got = survival_at(curve, at)
        assert got["value"] == pytest.approx(float(kmf.predict(at)), abs=TOL)
        interval = kmf.confidence_interval_.asof(at)
        assert (got["lower"], got["upper"]) == pytest.approx(tuple(interval), abs=TOL)
        if at > 0:
            value, _ = rmst(curve, at)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert value == pytest.approx(restricted_mean_survival_time(kmf, at), abs=1e-9)
    median = median_survival(curve)
    assert median["median"] == kmf.median_survival_time_
    expected = median_survival_times(kmf.confidence_interval_).to_numpy().ravel()
    assert (median["lower"], median["upper"]) == tuple(expected)


def test_survival_at_before_the_first_row_and_on_incidence_curves() -> None:
    curve = kaplan_meier(pl.Series([2.0, 3.0]), pl.Series([1, 1]))
    assert survival_at(curve, -1.0) == {"time": -1.0, "value": 1.0, "std_error": 0.0,
                                        "lower": 1.0, "upper": 1.0}
    assert survival_at(curve, 2.5)["value"] == 0.5
    incidence = aalen_johansen(pl.Series([2.0, 3.0]), pl.Series([1, 2]))
    assert survival_at(incidence, 2.0)["value"] == 0.5
    assert survival_at(incidence, 10.0)["value"] == 0.5
    with pytest.raises(SurvivalDataError, match="needs a Kaplan-Meier curve"):
        median_survival(incidence)


def test_median_is_infinite_when_the_curve_stays_above_one_half() -> None:
    time, event, *_ = _data("rossi")
    assert median_survival(kaplan_meier(time, event)) == {"median": math.inf,
                                                          "lower": math.inf, "upper": math.inf}


def test_rmst_standard_error_without_censoring_is_that_of_a_mean() -> None:
    # without censoring RMST is the mean of min(T, tau) and the Greenwood-type variance
    # reduces exactly to its plug-in variance over n
    x = np.random.default_rng(3).exponential(100.0, 80)
    curve = kaplan_meier(pl.Series(x), pl.Series(np.ones(80, dtype=int)))
    for horizon in (50.0, 120.0, x.max() + 10):
        value, se = rmst(curve, horizon)
        capped = np.minimum(x, horizon)
        assert value == pytest.approx(capped.mean(), abs=1e-9)
        assert se == pytest.approx(math.sqrt(capped.var() / x.size), rel=1e-10)


def test_rmst_standard_error_matches_the_spread_of_replicates() -> None:
    rng = np.random.default_rng(8)
    reps, n, horizon = 400, 200, 150.0
    values, errors = [], []
    for _ in range(reps):
        t, c = rng.exponential(120.0, n), rng.uniform(0, 300.0, n)
        curve = kaplan_meier(pl.Series(np.minimum(t, c)), pl.Series((t <= c).astype(int)))
        value, se = rmst(curve, horizon)
        values.append(value)
        errors.append(se)
    empirical_sd = float(np.std(values, ddof=1))
    typical_se = float(np.sqrt(np.mean(np.square(errors))))
    # an SD from 400 replicates has a relative standard error of about 1 / sqrt(2 * 399)
    assert abs(typical_se / empirical_sd - 1) < 4 / math.sqrt(2 * (reps - 1))
    truth = 120.0 * (1 - math.exp(-horizon / 120.0))  # integral of exp(-t/120) to horizon
    assert abs(np.mean(values) - truth) < 4 * empirical_sd / math.sqrt(reps)


def test_rmst_difference_is_the_difference_with_a_normal_interval() -> None:
    time, event, *_ = _data("rossi")
    a = kaplan_meier(time[:200], event[:200])
    b = kaplan_meier(time[200:], event[200:])
    (va, sa), (vb, sb) = rmst(a, 40.0), rmst(b, 40.0)
    diff, lower, upper = rmst_difference(a, b, 40.0)
    assert diff == pytest.approx(va - vb, abs=1e-12)
    half = 1.959963984540054 * math.hypot(sa, sb)
    assert (lower, upper) == pytest.approx((diff - half, diff + half), abs=1e-9)
    with pytest.raises(SurvivalDataError, match="horizon"):
        rmst(a, 0.0)


# -- two samples --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "split"),
    [("rossi", lambda d: d["fin"] == 1), ("waltons", lambda d: d["group"] == "miR-137"),
     ("gbsg2", lambda d: d["horTh"] == "yes"), ("lymphoma", lambda d: d["Stage_group"] == 1)],
)
def test_logrank_matches_lifelines(name: str, split) -> None:
    loader, t, e = DATASETS[name]
    df = loader()
    mask = split(df).to_numpy()
    a, b = df[mask], df[~mask]
    expected = logrank_test(a[t], b[t], a[e], b[e])
    statistic, p = logrank(a[t].to_numpy(), a[e].to_numpy(), b[t].to_numpy(), b[e].to_numpy())
    assert statistic == pytest.approx(expected.test_statistic, rel=TOL)
    assert p == pytest.approx(expected.p_value, rel=1e-8)


def test_max_vertical_distance_by_hand_and_by_brute_force() -> None:
    a = kaplan_meier(pl.Series([1.0, 2.0, 3.0, 4.0]), pl.Series([1, 1, 1, 1]))
    b = kaplan_meier(pl.Series([2.5, 5.0]), pl.Series([1, 0]))
    # S_a: 1, .75 (1), .5 (2), .25 (3), 0 (4); S_b: 1, .5 from 2.5 on
    assert max_vertical_distance(a, b) == pytest.approx(0.5)
    assert max_vertical_distance(a, b, horizon=2.4) == pytest.approx(0.5)
    assert max_vertical_distance(a, b, horizon=1.5) == pytest.approx(0.25)
    assert max_vertical_distance(a, b, horizon=3.5) == max_vertical_distance(b, a, 3.5)

    time, event, t, e = _data("gbsg2")
    first, second = kaplan_meier(time[:300], event[:300]), kaplan_meier(time[300:], event[300:])
    grid = np.linspace(0, 3000, 30001)
    fa = KaplanMeierFitter().fit(t[:300], e[:300]).survival_function_.iloc[:, 0]
    fb = KaplanMeierFitter().fit(t[300:], e[300:]).survival_function_.iloc[:, 0]
    brute = np.abs(fa.asof(grid).to_numpy() - fb.asof(grid).to_numpy()).max()
    assert max_vertical_distance(first, second) == pytest.approx(brute, abs=1e-12)


def _sample(rng: np.random.Generator, n: int, rate: float, decimals: int | None = None):
    t, c = rng.exponential(1 / rate, n), rng.uniform(0, 200.0, n)
    time = np.minimum(t, c)
    if decimals is not None:
        time = np.round(time, decimals)
    return pl.Series(time), pl.Series((t <= c).astype(int))


@pytest.mark.parametrize("decimals", [None, -1])  # continuous times; times rounded to 10 days
def test_distance_threshold_holds_its_level_under_the_null(decimals) -> None:
    rng = np.random.default_rng(2024)
    reps, alpha = 400, 0.05
    exceed = 0
    for _ in range(reps):
        ta, ea = _sample(rng, 300, 0.01, decimals)
        tb, eb = _sample(rng, 120, 0.01, decimals)
        observed = max_vertical_distance(kaplan_meier(ta, ea), kaplan_meier(tb, eb))
        exceed += observed > distance_threshold(ta, ea, tb, eb, alpha, 200, rng=rng)
    # binomial(400, 0.05): mean 20, sd 4.4; allow 4 sd either side
    sd = math.sqrt(reps * alpha * (1 - alpha))
    assert abs(exceed - reps * alpha) < 4 * sd


def test_distance_threshold_detects_a_doubled_hazard() -> None:
    rng = np.random.default_rng(7)
    detected = 0
    for _ in range(20):
        ta, ea = _sample(rng, 300, 0.01)
        tb, eb = _sample(rng, 300, 0.02)
        observed = max_vertical_distance(kaplan_meier(ta, ea), kaplan_meier(tb, eb))
        detected += observed > distance_threshold(ta, ea, tb, eb, rng=rng)
    assert detected == 20


def test_distance_threshold_is_seeded_and_respects_the_horizon() -> None:
    rng = np.random.default_rng(1)
    ta, ea = _sample(rng, 2000, 0.01)
    tb, eb = _sample(rng, 500, 0.01)

    def threshold(horizon=None, seed=3):
        return distance_threshold(ta, ea, tb, eb, rng=np.random.default_rng(seed),
                                  horizon=horizon)

    assert threshold() == threshold()
    assert threshold(horizon=1e-9) == 0.0  # nothing happens before the horizon
    assert 0 < threshold(horizon=20.0) < threshold()  # few events by day 20: a smaller sup
    with pytest.raises(SurvivalDataError, match="n_boot"):
        distance_threshold(ta, ea, tb, eb, n_boot=0, rng=rng)


# -- Cox ----------------------------------------------------------------------------------------


def test_cox_matches_lifelines_on_rossi() -> None:
    df = load_rossi()
    covariates = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
    expected = CoxPHFitter().fit(df, "week", "arrest").summary
    got = cox_hazard_ratios(pl.from_pandas(df), "week", "arrest", covariates)
    assert got["covariate"].to_list() == covariates
    _close(got["log_hr"], expected["coef"], 1e-8)
    _close(got["std_error"], expected["se(coef)"], 1e-8)
    _close(got["hazard_ratio"], expected["exp(coef)"], 1e-8)
    _close(got["lower"], expected["exp(coef) lower 95%"], 1e-8)
    _close(got["upper"], expected["exp(coef) upper 95%"], 1e-8)
    _close(got["p"], expected["p"], 1e-10)


def test_cox_one_hot_encodes_strings_without_the_reference_level() -> None:
    df = load_rossi()
    df["prio_group"] = np.select([df["prio"] == 0, df["prio"] <= 3], ["none", "few"], "many")
    frame = pl.from_pandas(df[["week", "arrest", "fin", "prio_group"]])
    got = cox_hazard_ratios(frame, "week", "arrest", ["fin", "prio_group"])
    assert got["covariate"].to_list() == ["fin", "prio_group[many]", "prio_group[none]"]
    dummies = df[["week", "arrest", "fin"]].assign(
        many=(df["prio_group"] == "many").astype(float),
        none=(df["prio_group"] == "none").astype(float),
    )
    expected = CoxPHFitter().fit(dummies, "week", "arrest").summary
    _close(got["log_hr"], expected["coef"], 1e-8)
    releveled = cox_hazard_ratios(frame, "week", "arrest", ["prio_group"],
                                  reference_levels={"prio_group": "none"})
    assert releveled["covariate"].to_list() == ["prio_group[few]", "prio_group[many]"]
    assert design_matrix(frame, ["prio_group"]).columns == ["prio_group[many]",
                                                            "prio_group[none]"]


def test_cox_errors_name_the_covariate() -> None:
    frame = pl.from_pandas(load_rossi()).with_columns(pl.lit("x").alias("constant"))
    with pytest.raises(SurvivalDataError, match="covariate 'constant' is constant"):
        cox_hazard_ratios(frame, "week", "arrest", ["fin", "constant"])
    with pytest.raises(SurvivalDataError, match="covariate 'nope': no such column"):
        cox_hazard_ratios(frame, "week", "arrest", ["nope"])
    with pytest.raises(SurvivalDataError, match="reference level 'z'"):
        cox_hazard_ratios(frame.with_columns(pl.col("fin").cast(pl.String)), "week", "arrest",
                          ["fin"], reference_levels={"fin": "z"})


def test_cox_subsamples_large_frames_with_a_seed() -> None:
    frame = pl.from_pandas(load_rossi())
    full = cox_hazard_ratios(frame, "week", "arrest", ["fin", "age"])
    sub = cox_hazard_ratios(frame, "week", "arrest", ["fin", "age"], max_rows=300, seed=4)
    assert sub.equals(cox_hazard_ratios(frame, "week", "arrest", ["fin", "age"], max_rows=300,
                                        seed=4))
    assert not sub.equals(full)
    # fewer rows, wider intervals: standard errors grow roughly like sqrt(432 / 300)
    ratio = (sub["std_error"] / full["std_error"]).to_numpy()
    assert ((ratio > 1.0) & (ratio < 1.6)).all()


def test_cox_recovers_the_simulated_log_hazard_ratios(full_scenario, simulate) -> None:
    # site A has neither frailty nor loss to follow-up: progression's cause-specific hazard is
    # Weibull with log HR -0.5 for treatment, 0.01 per year of age and none for sex
    cohort = simulate(full_scenario, 8000, seed=5)
    progression = Endpoint(name="progression", events=["progressed"], competing=["death"])
    frame = endpoint_times(cohort, progression).filter(pl.col("site") == "A")
    fit = cox_hazard_ratios(frame, "time", "event", ["arm", "age", "sex"])
    truth = {"arm[treatment]": -0.5, "age": 0.01, "sex[M]": 0.0}
    for row in fit.iter_rows(named=True):
        assert abs(row["log_hr"] - truth[row["covariate"]]) < 4 * row["std_error"], row


def test_moved_names_are_still_found_in_validation_survival_for_one_release() -> None:
    from validation import cox, survival, two_sample

    for module, names in ((two_sample, ["logrank", "logrank_from_counts", "distance_threshold",
                                        "distance_threshold_from_counts",
                                        "max_vertical_distance"]),
                          (cox, ["design_matrix", "cox_hazard_ratios", "CoxConvergenceError",
                                 "COX_MAX_ROWS"])):
        for name in names:
            assert getattr(survival, name) is getattr(module, name), name
