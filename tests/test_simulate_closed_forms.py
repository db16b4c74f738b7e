"""The simulator against closed forms: every tolerance is a multiple of a standard error from n.

Each test simulates a small scenario with a fixed seed and compares the cohort to the exact
answer (exponential means, competing-risk shares, quantile formulas, illness-death occupation,
conditional sojourns, censoring shares, frailty marginals, Cox log hazard ratios, Poisson
visit counts, measurement means and trends).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from lifelines import CoxPHFitter
from scipy.stats import norm, truncnorm

from trajectories import ScenarioError
from trajectories.hazards import Gompertz, LogLogistic, LogNormal, PiecewiseConstant, Weibull
from trajectories.simulate.population import DAYS_PER_YEAR, EPOCH_ORDINAL

Z = 4.0  # tolerance in standard errors


def _spells(cohort, state: str) -> pl.DataFrame:
    return cohort.state_spells().filter(pl.col("state") == state)


def _close(observed: float, expected: float, se: float, what: str) -> None:
    assert abs(observed - expected) < Z * se, (
        f"{what}: observed {observed:.6g}, expected {expected:.6g}, "
        f"{abs(observed - expected) / se:.1f} standard errors apart (se {se:.3g})"
    )


def _proportion(observed: float, p: float, n: int, what: str) -> None:
    _close(observed, p, np.sqrt(p * (1 - p) / n), what)


def _exit(rate_or_hazard: dict, target: str = "d", source: str = "a", **more) -> dict:
    return {"from": source, "to": target, "hazard": rate_or_hazard, **more}


# -- exponential and competing risks ---------------------------------------------------------


def test_single_exponential_mean_time_and_exits(make_scenario, simulate) -> None:
    n, rate = 20_000, 0.01
    cohort = simulate(make_scenario([_exit({"family": "exponential", "rate": rate})]), n, 1)
    assert cohort.persons.get_column("exit").unique().to_list() == ["death"]
    times = _spells(cohort, "a").get_column("stop").to_numpy()
    assert times.size == n
    _close(times.mean(), 1 / rate, (1 / rate) / np.sqrt(n), "mean time to exit")
    _proportion(np.mean(times > np.log(2) / rate), 0.5, n, "share past the median")
    np.testing.assert_array_equal(cohort.persons.get_column("followup_end").to_numpy(), times)


def test_competing_exponential_risks(make_scenario, simulate) -> None:
    n = 30_000
    rates = {"b": 0.002, "c": 0.005, "d": 0.003}
    total = sum(rates.values())
    transitions = [_exit({"family": "exponential", "rate": r}, target=k) for k, r in rates.items()]
    spells = _spells(simulate(make_scenario(transitions), n, 2), "a")
    for target, rate in rates.items():
        share = spells.filter(pl.col("next_state") == target).height / n
        _proportion(share, rate / total, n, f"share exiting to {target}")
    times = spells.get_column("stop").to_numpy()
    _close(times.mean(), 1 / total, (1 / total) / np.sqrt(n), "mean time to first exit")
    # The exit time is independent of the cause: each cause has the same mean time.
    for target in rates:
        cause = spells.filter(pl.col("next_state") == target).get_column("stop").to_numpy()
        _close(cause.mean(), 1 / total, (1 / total) / np.sqrt(cause.size), f"mean time to {target}")


# -- quantiles of every family ---------------------------------------------------------------

QUANTILE_FAMILIES = [
    Weibull(shape=1.5, scale=200.0),
    Weibull(shape=0.7, scale=50.0),
    Gompertz(shape=0.01, rate=0.002),
    LogNormal(mu=5.0, sigma=0.8),
    LogLogistic(scale=150.0, shape=3.0),
    PiecewiseConstant(breakpoints=[30.0, 90.0], rates=[0.002, 0.02, 0.005]),
]


@pytest.mark.parametrize("hazard", QUANTILE_FAMILIES, ids=lambda h: h.family)
def test_exit_time_quantiles_match_the_family(hazard, make_scenario, simulate) -> None:
    n = 20_000
    scenario = make_scenario([_exit(hazard.model_dump())])
    times = _spells(simulate(scenario, n, 3), "a").get_column("stop").to_numpy()
    for p in (0.1, 0.5, 0.9):
        q = float(hazard.quantile(np.array(p)))
        density = float(hazard.hazard(np.array(q)) * hazard.survival(np.array(q)))
        se = np.sqrt(p * (1 - p) / n) / density  # asymptotic SE of the empirical quantile
        _close(float(np.quantile(times, p)), q, se, f"{hazard.family} {p:.0%} quantile")


def test_gompertz_negative_shape_leaves_a_cured_fraction(make_scenario, simulate) -> None:
    n, shape, rate = 20_000, -0.01, 0.012
    scenario = make_scenario([_exit({"family": "gompertz", "shape": shape, "rate": rate})])
    persons = simulate(scenario, n, 4).persons
    cured = np.exp(-rate / -shape)
    never = persons.filter(pl.col("exit") == "administrative_censoring")
    _proportion(never.height / n, cured, n, "share never leaving")
    assert (never.get_column("followup_end") == scenario.followup.max_days).all()


# -- illness-death occupation ----------------------------------------------------------------


def test_illness_death_state_occupation(make_scenario, simulate) -> None:
    n, a, b, c = 20_000, 0.004, 0.001, 0.002
    transitions = [
        {"from": "healthy", "to": "ill", "hazard": {"family": "exponential", "rate": a}},
        {"from": "healthy", "to": "dead", "hazard": {"family": "exponential", "rate": b}},
        {"from": "ill", "to": "dead", "hazard": {"family": "exponential", "rate": c}},
    ]
    cohort = simulate(make_scenario(transitions, initial_state="healthy"), n, 5)
    assert (cohort.persons.get_column("exit") == "death").all()
    spells = cohort.state_spells()
    for t in (50.0, 200.0, 500.0, 1000.0):
        occupied = spells.filter(
            (pl.col("start") <= t) & ((pl.col("stop") > t) | (pl.col("state") == "dead"))
        )
        assert occupied.height == n  # exactly one state per person at t
        p_healthy = np.exp(-(a + b) * t)
        p_ill = a / (a + b - c) * (np.exp(-c * t) - np.exp(-(a + b) * t))
        expected = {"healthy": p_healthy, "ill": p_ill, "dead": 1 - p_healthy - p_ill}
        for state, p in expected.items():
            share = occupied.filter(pl.col("state") == state).height / n
            _proportion(share, p, n, f"P({state}) at t={t}")


# -- clock reset versus clock forward --------------------------------------------------------

ENTRY_RATE = 1 / 300  # a -> b, so b is entered at widely varying times


def _sojourn_pit(hazard, clock: str, entry: np.ndarray, sojourn: np.ndarray) -> np.ndarray:
    """Probability integral transform of sojourns: Uniform(0, 1) under the stated clock."""
    if clock == "reset":
        return hazard.survival(sojourn)
    return np.exp(-(hazard.cumulative_hazard(entry + sojourn) - hazard.cumulative_hazard(entry)))


def _sojourns(make_scenario, simulate, hazard, clock: str, seed: int, n: int):
    transitions = [
        _exit({"family": "exponential", "rate": ENTRY_RATE}, target="b"),
        {"from": "b", "to": "c", "hazard": hazard.model_dump(), "clock": clock},
    ]
    spells = _spells(simulate(make_scenario(transitions), n, seed), "b")
    assert spells.height == n and (spells.get_column("next_state") == "c").all()
    entry = spells.get_column("start").to_numpy()
    return entry, spells.get_column("stop").to_numpy() - entry


CLOCK_CASES = [
    (Weibull(shape=2.0, scale=200.0), "reset"),
    (Weibull(shape=2.0, scale=200.0), "forward"),
    (LogNormal(mu=5.0, sigma=0.8), "forward"),
    (LogNormal(mu=5.0, sigma=0.8), "reset"),
    (Gompertz(shape=0.004, rate=0.002), "forward"),
    (LogLogistic(scale=150.0, shape=2.5), "reset"),
]


@pytest.mark.parametrize(("hazard", "clock"), CLOCK_CASES,
                         ids=[f"{h.family}-{c}" for h, c in CLOCK_CASES])
def test_sojourns_follow_the_clock(hazard, clock, make_scenario, simulate) -> None:
    """Within each third of entry times, sojourns match the reset or conditional distribution."""
    n = 18_000
    entry, sojourn = _sojourns(make_scenario, simulate, hazard, clock, seed=6, n=n)
    pit = _sojourn_pit(hazard, clock, entry, sojourn)
    cuts = np.quantile(entry, [1 / 3, 2 / 3])
    for third, chosen in enumerate(np.array_split(np.argsort(entry), 3)):
        for p in (0.1, 0.5, 0.9):
            _proportion(np.mean(pit[chosen] <= p), p, chosen.size,
                        f"{clock} PIT <= {p} in entry third {third} (cuts {cuts})")


def test_weibull_reset_sojourns_do_not_depend_on_entry(make_scenario, simulate) -> None:
    n = 18_000
    hazard = Weibull(shape=2.0, scale=200.0)
    entry, sojourn = _sojourns(make_scenario, simulate, hazard, "reset", seed=7, n=n)
    early, late = sojourn[entry < 100.0], sojourn[entry > 600.0]
    mean = hazard.scale * 0.886226925452758  # Gamma(1 + 1/2)
    sd = hazard.scale * np.sqrt(1 - 0.886226925452758**2)
    for group, name in ((early, "early"), (late, "late")):
        _close(group.mean(), mean, sd / np.sqrt(group.size), f"mean reset sojourn, {name}")
    # The forward-clock law would shorten late sojourns a lot: the test tells the clocks apart.
    forward_pit = _sojourn_pit(hazard, "forward", entry[entry > 600.0], late)
    assert abs(np.mean(forward_pit <= 0.5) - 0.5) > 20 * np.sqrt(0.25 / late.size)


def test_weibull_forward_sojourns_shorten_with_entry_time(make_scenario, simulate) -> None:
    n = 18_000
    hazard = Weibull(shape=2.0, scale=200.0)
    entry, sojourn = _sojourns(make_scenario, simulate, hazard, "forward", seed=8, n=n)
    late = entry > 600.0
    # Median conditional sojourn given survival to e: H(e + s) = H(e) + log 2.
    e = entry[late]
    median = hazard.inverse_cumulative_hazard(hazard.cumulative_hazard(e) + np.log(2)) - e
    _proportion(np.mean(sojourn[late] <= median), 0.5, int(late.sum()), "below conditional median")
    reset_median = float(hazard.quantile(np.array(0.5)))
    assert np.median(sojourn[late]) < 0.5 * reset_median


# -- censoring -------------------------------------------------------------------------------


def test_administrative_censoring_at_data_cutoff(make_scenario, simulate) -> None:
    n, rate, max_days = 20_000, 1 / 1500, 3 * 365.25
    scenario = make_scenario(
        [_exit({"family": "exponential", "rate": rate})],
        calendar={"enrolment_start": "2015-01-01", "enrolment_end": "2019-12-31",
                  "data_cutoff": "2020-06-30"},
        followup={"max_days": max_days},
    )
    persons = simulate(scenario, n, 9).persons
    cutoff_day = scenario.calendar.data_cutoff.toordinal() - EPOCH_ORDINAL
    index_day = persons.get_column("index_date").cast(pl.Int64).to_numpy()
    admin = np.minimum(max_days, cutoff_day - index_day)
    end = persons.get_column("followup_end").to_numpy()
    censored = persons.get_column("exit").to_numpy() == "administrative_censoring"
    died = persons.get_column("exit").to_numpy() == "death"
    assert np.all(censored | died)
    np.testing.assert_array_equal(end[censored], admin[censored])
    assert np.all(end[died] < admin[died])
    assert np.any(admin < max_days) and np.any(admin == max_days)  # both limits bind somewhere
    p_death = 1 - np.exp(-rate * admin)
    _close(died.sum(), p_death.sum(), np.sqrt(np.sum(p_death * (1 - p_death))), "deaths")


def test_loss_to_follow_up_competes_with_the_event(make_scenario, simulate) -> None:
    n, rate, loss_per_year, horizon = 30_000, 1 / 1000, 0.2, 1500.0
    loss = loss_per_year / DAYS_PER_YEAR
    scenario = make_scenario(
        [_exit({"family": "exponential", "rate": rate})],
        followup={"max_days": horizon, "loss_to_followup_per_year": loss_per_year},
        sites=[{"name": "A", "share": 0.5},
               {"name": "B", "share": 0.5, "loss_to_followup_per_year": 0.0,
                "followup_days": 500.0}],
    )
    persons = simulate(scenario, n, 10).persons
    a = persons.filter(pl.col("site") == "A")
    b = persons.filter(pl.col("site") == "B")
    total = rate + loss
    ended = 1 - np.exp(-total * horizon)
    expected = {
        "lost_to_follow_up": loss / total * ended,
        "death": rate / total * ended,
        "administrative_censoring": 1 - ended,
    }
    for exit_kind, p in expected.items():
        share = a.filter(pl.col("exit") == exit_kind).height / a.height
        _proportion(share, p, a.height, f"site A share {exit_kind}")
    lost_at = a.filter(pl.col("exit") == "lost_to_follow_up").get_column("followup_end")
    assert (lost_at < horizon).all()
    # Site B overrides: nobody lost, follow-up capped at 500 days.
    assert set(b.get_column("exit").unique()) == {"death", "administrative_censoring"}
    assert b.get_column("followup_end").max() == 500.0
    _proportion(b.filter(pl.col("exit") == "death").height / b.height, 1 - np.exp(-rate * 500),
                b.height, "site B deaths")


def test_loss_to_follow_up_alone_is_exponential(make_scenario, simulate) -> None:
    n, loss_per_year, horizon = 20_000, 0.5, 1000.0
    scenario = make_scenario(
        [_exit({"family": "exponential", "rate": 0.0})],
        followup={"max_days": horizon, "loss_to_followup_per_year": loss_per_year},
    )
    persons = simulate(scenario, n, 11).persons
    lost = persons.filter(pl.col("exit") == "lost_to_follow_up").get_column("followup_end")
    assert persons.filter(pl.col("exit") == "death").height == 0
    for t in (100.0, 400.0, horizon):
        _proportion((lost <= t).sum() / n, 1 - np.exp(-loss_per_year / DAYS_PER_YEAR * t), n,
                    f"lost by {t}")


# -- sites: hazard ratios and gamma frailty --------------------------------------------------


def test_site_hazard_ratio_scales_the_rate(make_scenario, simulate) -> None:
    n, rate, ratio = 30_000, 0.002, 2.0
    scenario = make_scenario(
        [_exit({"family": "exponential", "rate": rate})],
        followup={"max_days": 1000.0},
        sites=[{"name": "A", "share": 0.5},
               {"name": "B", "share": 0.5, "hazard_ratios": {"a->d": ratio}}],
    )
    per_site = (
        simulate(scenario, n, 12).persons
        .group_by("site")
        .agg((pl.col("exit") == "death").sum().alias("events"),
             pl.col("followup_end").sum().alias("time"))
        .sort("site")
    )
    events = per_site.get_column("events").to_numpy()
    rates = events / per_site.get_column("time").to_numpy()
    for estimate, truth, d, site in zip(rates, (rate, rate * ratio), events, "AB", strict=True):
        _close(np.log(estimate), np.log(truth), 1 / np.sqrt(d), f"log rate at site {site}")
    _close(np.log(rates[1] / rates[0]), np.log(ratio), np.sqrt(np.sum(1 / events)),
           "log hazard ratio B vs A")


def test_gamma_frailty_gives_the_marginal_survival(make_scenario, simulate) -> None:
    n = 30_000
    hazard = Weibull(shape=1.3, scale=400.0)
    sites = {"A": (0.0, 1.0), "B": (0.8, 1.0), "C": (0.5, 2.0)}  # frailty variance, HR
    scenario = make_scenario(
        [_exit(hazard.model_dump())],
        sites=[
            {"name": name, "share": 1 / 3,
             "hazard_ratios": {"a->d": ratio} if ratio != 1.0 else {},
             "frailty": {"a->d": {"variance": theta}} if theta else {}}
            for name, (theta, ratio) in sites.items()
        ],
    )
    persons = simulate(scenario, n, 13).persons
    assert (persons.get_column("exit") == "death").all()
    for name, (theta, ratio) in sites.items():
        times = persons.filter(pl.col("site") == name).get_column("followup_end").to_numpy()
        for t in (100.0, 400.0, 1000.0, 2000.0):
            cumulative = ratio * float(hazard.cumulative_hazard(np.array(t)))
            marginal = (1 + theta * cumulative) ** (-1 / theta) if theta else np.exp(-cumulative)
            _proportion(np.mean(times > t), marginal, times.size, f"S({t}) at site {name}")


# -- covariate effects recovered by a Cox model ----------------------------------------------

COVARIATE_EFFECTS = {
    "arm": {"treatment": -0.5},
    "stage": {"II": 0.4, "III": 0.9},
    "age": 0.03,
    "score": 0.7,
    "sex": {"M": 0.25},
}


def test_cox_model_recovers_covariate_log_hazard_ratios(make_scenario, simulate) -> None:
    n = 12_000
    scenario = make_scenario(
        [_exit({"family": "weibull", "shape": 1.2, "scale": 600.0}, effects=COVARIATE_EFFECTS)],
        covariates={
            "arm": {"kind": "categorical", "levels": {"control": 0.5, "treatment": 0.5}},
            "stage": {"kind": "categorical", "levels": {"I": 0.4, "II": 0.35, "III": 0.25}},
            "age": {"kind": "normal", "mean": 62.0, "sd": 10.0, "min": 30.0, "max": 90.0,
                    "center": 60.0},
            "score": {"kind": "uniform", "low": 0.0, "high": 1.0, "center": 0.5},
        },
        followup={"max_days": 730.0},
    )
    persons = simulate(scenario, n, 14).persons
    table = persons.select(
        pl.col("followup_end").alias("T"),
        (pl.col("exit") == "death").cast(pl.Int8).alias("E"),
        (pl.col("arm") == "treatment").cast(pl.Float64).alias("arm[treatment]"),
        (pl.col("stage") == "II").cast(pl.Float64).alias("stage[II]"),
        (pl.col("stage") == "III").cast(pl.Float64).alias("stage[III]"),
        pl.col("age"),
        pl.col("score"),
        (pl.col("sex") == "M").cast(pl.Float64).alias("sex[M]"),
    ).to_pandas()
    assert 0.3 < table["E"].mean() < 0.9  # censoring present but events informative
    fit = CoxPHFitter().fit(table, duration_col="T", event_col="E")
    truth = {"arm[treatment]": -0.5, "stage[II]": 0.4, "stage[III]": 0.9, "age": 0.03,
             "score": 0.7, "sex[M]": 0.25}
    # Simultaneous 95% intervals (Bonferroni over the coefficients), so the test as a whole
    # has a 5% false-alarm rate rather than 5% per coefficient.
    z = norm.ppf(1 - 0.05 / (2 * len(truth)))
    for name, log_hr in truth.items():
        estimate, se = fit.params_[name], fit.standard_errors_[name]
        assert abs(estimate - log_hr) < z * se, (
            f"{name}: Cox log HR {estimate:.3f} (se {se:.3f}), true {log_hr}"
        )
        assert abs(estimate) > z * se, f"{name}: the interval includes 0, so is uninformative"


# -- visits and measurements -----------------------------------------------------------------


def _two_state_process_scenario(make_scenario, **extra):
    transitions = [
        _exit({"family": "weibull", "shape": 1.3, "scale": 400.0}, target="b"),
        {"from": "b", "to": "d", "hazard": {"family": "exponential", "rate": 1 / 300}},
        _exit({"family": "exponential", "rate": 1 / 2000}, target="d"),
    ]
    return make_scenario(transitions, followup={"max_days": 1500.0}, **extra)


def _with_state(cohort, code: str) -> pl.DataFrame:
    """Events of ``code`` with the spell they fall in (state, start, stop)."""
    spells = cohort.state_spells().sort("person_id", "start")
    events = cohort.events.filter(pl.col("code") == code).sort("person_id", "time")
    return events.join_asof(spells, left_on="time", right_on="start", by="person_id",
                            strategy="backward", check_sortedness=False)


def test_visit_counts_are_rate_times_time_in_state(make_scenario, simulate) -> None:
    rates = {"outpatient": {"a": 6.0, "b": 12.0}, "inpatient": {"b": 2.0}}
    scenario = _two_state_process_scenario(
        make_scenario,
        visits=[{"type": "outpatient", "rates_per_year": rates["outpatient"]},
                {"type": "inpatient", "rates_per_year": rates["inpatient"],
                 "mean_duration_days": 5.0}],
    )
    cohort = simulate(scenario, 6_000, 15)
    spells = cohort.state_spells()
    years = spells.group_by("state").agg(((pl.col("stop") - pl.col("start")).sum()
                                          / DAYS_PER_YEAR).alias("years"))
    years = dict(zip(years.get_column("state"), years.get_column("years"), strict=True))
    for visit_type, per_state in rates.items():
        visits = _with_state(cohort, f"visit:{visit_type}")
        assert visits.get_column("state").is_in(list(per_state)).all()
        for state in ("a", "b"):
            count = visits.filter(pl.col("state") == state).height
            expected = per_state.get(state, 0.0) * years[state]
            if expected == 0:
                assert count == 0
            else:
                _close(count, expected, np.sqrt(expected), f"{visit_type} visits in {state}")
        # Visit times are uniform within their spell.
        position = visits.select((pl.col("time") - pl.col("start"))
                                 / (pl.col("stop") - pl.col("start"))).to_series()
        _proportion((position < 0.5).mean(), 0.5, visits.height, f"{visit_type} in first half")

    # Per person: expected count given the time spent in a is rate * time (Poisson).
    a_spells = spells.filter(pl.col("state") == "a").select(
        "person_id", ((pl.col("stop") - pl.col("start")) / DAYS_PER_YEAR).alias("years"))
    counts = (
        _with_state(cohort, "visit:outpatient").filter(pl.col("state") == "a")
        .group_by("person_id").len()
    )
    per_person = a_spells.join(counts, on="person_id", how="left").fill_null(0)
    long_stays = per_person.filter(pl.col("years") > per_person.get_column("years").median())
    for group, name in ((per_person, "all"), (long_stays, "long stays")):
        expected = 6.0 * group.get_column("years").to_numpy()
        observed = group.get_column("len").to_numpy()
        _close(observed.mean(), expected.mean(), np.sqrt(expected.sum()) / group.height,
               f"mean outpatient visits in a per person ({name})")

    # Inpatient stays: exponential with mean 5 days (look where follow-up cannot truncate).
    stays = cohort.events.filter(pl.col("code") == "visit:inpatient").join(
        cohort.persons.select("person_id", "followup_end"), on="person_id")
    open_ended = stays.filter(pl.col("followup_end") - pl.col("time") > 150.0)
    length = (open_ended.get_column("end_time") - open_ended.get_column("time")).to_numpy()
    _close(length.mean(), 5.0, 5.0 / np.sqrt(length.size), "mean inpatient stay")
    truncated = stays.filter(pl.col("end_time") > pl.col("followup_end"))
    assert truncated.height == 0


def test_measurement_mean_and_trend_per_state(make_scenario, simulate) -> None:
    mean, trend, noise = {"a": 100.0, "b": 150.0}, {"a": -4.0, "b": 20.0}, 15.0
    scenario = _two_state_process_scenario(
        make_scenario,
        visits=[{"type": "clinic", "rates_per_year": {"a": 6.0, "b": 12.0}}],
        measurements=[{"name": "marker", "mean": mean, "trend_per_year": trend,
                       "noise_sd": noise}],
    )
    cohort = simulate(scenario, 5_000, 16)
    values = _with_state(cohort, "measurement:marker")
    assert values.height == cohort.events.filter(pl.col("code") == "visit:clinic").height
    for state in ("a", "b"):
        rows = values.filter(pl.col("state") == state)
        x = ((rows.get_column("time") - rows.get_column("start")) / DAYS_PER_YEAR).to_numpy()
        y = rows.get_column("value").to_numpy()
        design = np.column_stack([np.ones_like(x), x])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        residual_var = np.sum((y - design @ coef) ** 2) / (y.size - 2)
        se = np.sqrt(np.diag(residual_var * np.linalg.inv(design.T @ design)))
        _close(coef[0], mean[state], se[0], f"marker mean on entering {state}")
        _close(coef[1], trend[state], se[1], f"marker trend per year in {state}")
        _close(np.sqrt(residual_var), noise, noise / np.sqrt(2 * y.size), f"noise sd in {state}")


def test_measurement_person_offset_clipping_rounding_and_visit_types(
    make_scenario, simulate
) -> None:
    person_sd, noise = 8.0, 5.0
    scenario = _two_state_process_scenario(
        make_scenario,
        visits=[{"type": "clinic", "rates_per_year": {"a": 8.0, "b": 8.0}},
                {"type": "phone", "rates_per_year": {"a": 4.0}}],
        measurements=[
            {"name": "marker", "visit_types": ["clinic"], "mean": {"a": 50.0, "b": 50.0},
             "noise_sd": noise, "person_sd": person_sd},
            {"name": "bounded", "mean": {"a": 1.0}, "noise_sd": 2.0, "min": 0.0, "max": 3.0,
             "decimals": 1},
        ],
    )
    cohort = simulate(scenario, 5_000, 17)
    marker = cohort.events.filter(pl.col("code") == "measurement:marker")
    clinic = cohort.events.filter(pl.col("code") == "visit:clinic")
    assert marker.select("person_id", "time").equals(clinic.select("person_id", "time"))
    # Person offset: E[mean_i(residual)^2 - noise^2 / k_i] = person_sd^2.
    per_person = marker.group_by("person_id").agg(
        (pl.col("value") - 50.0).mean().alias("offset"), pl.len().alias("k"))
    estimate = (per_person.get_column("offset") ** 2 - noise**2 / per_person.get_column("k"))
    _close(estimate.mean(), person_sd**2, estimate.std() / np.sqrt(estimate.len()),
           "person offset variance")

    bounded = _with_state(cohort, "measurement:bounded")
    assert bounded.get_column("state").unique().to_list() == ["a"]
    expected = _with_state(cohort, "visit:clinic").vstack(_with_state(cohort, "visit:phone"))
    assert bounded.height == expected.filter(pl.col("state") == "a").height
    value = bounded.get_column("value").to_numpy()
    assert value.min() == 0.0 and value.max() == 3.0
    np.testing.assert_array_equal(value, np.round(value, 1))
    # Value 1 + 2Z, clipped to [0, 3], then rounded to 0.1: 0.0 below 0.05, 3.0 from 2.95 up.
    p_low, p_high = norm.cdf((0.05 - 1.0) / 2.0), norm.sf((2.95 - 1.0) / 2.0)
    _proportion(np.mean(value == 0.0), p_low, value.size, "share clipped at min")
    _proportion(np.mean(value == 3.0), p_high, value.size, "share clipped at max")


def test_drug_exposure_on_entry(make_scenario, simulate) -> None:
    n = 20_000
    scenario = _two_state_process_scenario(
        make_scenario,
        covariates={"arm": {"kind": "categorical", "levels": {"control": 0.5, "treatment": 0.5}}},
        drugs=[{"name": "x", "on_entry": ["b"], "when": {"arm": ["treatment"]},
                "probability": 0.7, "duration_days": 90.0, "duration_cv": 0.5}],
    )
    cohort = simulate(scenario, n, 18)
    drugs = _with_state(cohort, "drug:x").join(
        cohort.persons.select("person_id", "arm", "followup_end"), on="person_id")
    assert (drugs.get_column("time") == drugs.get_column("start")).all()
    assert (drugs.get_column("state") == "b").all()
    assert (drugs.get_column("arm") == "treatment").all()
    eligible = cohort.state_spells().filter(pl.col("state") == "b").join(
        cohort.persons.filter(pl.col("arm") == "treatment").select("person_id"), on="person_id")
    _proportion(drugs.height / eligible.height, 0.7, eligible.height, "share given the drug")
    assert (drugs.get_column("end_time") <= drugs.get_column("followup_end")).all()
    # Gamma durations, mean 90 and sd 45, where follow-up is long enough not to cut them.
    whole = drugs.filter(pl.col("followup_end") - pl.col("time") > 1000.0)
    length = (whole.get_column("end_time") - whole.get_column("time")).to_numpy()
    _close(length.mean(), 90.0, 45.0 / np.sqrt(length.size), "mean drug duration")
    kurtosis = 3 + 6 * 0.5**2  # gamma with shape 1 / cv^2
    _close(length.std(), 45.0, 45.0 * np.sqrt((kurtosis - 1) / (4 * length.size)),
           "sd of drug duration")


# -- baseline: initial states, covariates, dates ---------------------------------------------


def test_initial_state_distribution(make_scenario, simulate) -> None:
    n = 20_000
    initial = {"a": 0.0, "b": 0.3, "c": 0.7}
    transitions = [
        _exit({"family": "exponential", "rate": 0.01}, source=s) for s in initial
    ]
    cohort = simulate(make_scenario(transitions, initial_state=initial), n, 19)
    first = cohort.state_spells().filter(pl.col("start") == 0.0).group_by("state").len()
    shares = dict(zip(first.get_column("state"), first.get_column("len") / n, strict=True))
    assert "a" not in shares and sum(shares.values()) == 1.0
    for state in ("b", "c"):
        _proportion(shares[state], initial[state], n, f"initial share of {state}")


def test_baseline_covariates_and_dates(make_scenario, simulate) -> None:
    n = 30_000
    age = {"kind": "normal", "mean": 65.0, "sd": 12.0, "min": 40.0, "max": 80.0, "center": 60.0}
    scenario = make_scenario(
        [_exit({"family": "exponential", "rate": 0.001})],
        covariates={
            "age": age,
            "score": {"kind": "uniform", "low": 2.0, "high": 5.0},
            "arm": {"kind": "categorical", "levels": {"x": 0.2, "y": 0.3, "z": 0.5}},
        },
        sites=[
            {"name": "A", "share": 0.25},
            {"name": "B", "share": 0.75, "case_mix": {"age": 5.0, "arm": {"x": 0.6, "y": 0.4,
                                                                            "z": 0.0}},
             "enrolment_start": "2018-03-01", "enrolment_end": "2018-03-31"},
        ],
        calendar={"enrolment_start": "2016-01-01", "enrolment_end": "2017-12-31"},
    )
    persons = simulate(scenario, n, 20).persons
    _proportion((persons.get_column("site") == "A").mean(), 0.25, n, "share at site A")
    _proportion((persons.get_column("sex") == "F").mean(), 0.5, n, "share female")
    for site, shift, levels in (("A", 0.0, {"x": 0.2, "y": 0.3, "z": 0.5}),
                                ("B", 5.0, {"x": 0.6, "y": 0.4, "z": 0.0})):
        rows = persons.filter(pl.col("site") == site)
        ages = rows.get_column("age").to_numpy()
        mean = age["mean"] + shift
        law = truncnorm((age["min"] - mean) / age["sd"], (age["max"] - mean) / age["sd"],
                        loc=mean, scale=age["sd"])
        assert age["min"] <= ages.min() and ages.max() <= age["max"]
        _close(ages.mean(), law.mean(), law.std() / np.sqrt(ages.size), f"mean age at {site}")
        for p in (0.1, 0.5, 0.9):
            _proportion(np.mean(ages <= law.ppf(p)), p, ages.size, f"age {p:.0%} at {site}")
        for level, p in levels.items():
            share = (rows.get_column("arm") == level).mean()
            if p == 0.0:
                assert share == 0.0
            else:
                _proportion(share, p, rows.height, f"arm {level} at {site}")
        score = rows.get_column("score").to_numpy()
        assert 2.0 <= score.min() and score.max() <= 5.0
        _close(score.mean(), 3.5, 3.0 / np.sqrt(12 * score.size), f"mean score at {site}")
    # Index dates uniform over each site's enrolment window; birth date = index - age.
    days = persons.select(
        "site",
        pl.col("index_date").cast(pl.Int64).alias("index"),
        (pl.col("index_date") - pl.col("birth_date")).dt.total_days().alias("lived"),
        "age",
    )
    assert (days.get_column("lived") - days.get_column("age") * DAYS_PER_YEAR).abs().max() <= 0.5
    for site, start, end in (("A", "2016-01-01", "2017-12-31"), ("B", "2018-03-01", "2018-03-31")):
        index = days.filter(pl.col("site") == site).get_column("index").to_numpy()
        first, last = (np.datetime64(d).astype(int) for d in (start, end))
        assert index.min() == first and index.max() == last
        _close(index.mean(), (first + last) / 2, (last - first + 1) / np.sqrt(12 * index.size),
               f"mean index date at {site}")


def test_uniform_age_case_mix_moves_the_range_and_never_below_zero(make_scenario,
                                                                   simulate) -> None:
    """A site's shift moves a uniform covariate's range; a shift taking age below 0 is refused."""
    with pytest.raises(ScenarioError, match=r"sites \(A\): case_mix shifts uniform 'age' below 0"):
        make_scenario(
            [_exit({"family": "exponential", "rate": 0.01})],
            covariates={"age": {"kind": "uniform", "low": 0.0, "high": 10.0}},
            sites=[{"name": "A", "share": 0.5, "case_mix": {"age": -5.0}},
                   {"name": "B", "share": 0.5}],
        )
    scenario = make_scenario(
        [_exit({"family": "exponential", "rate": 0.01})],
        covariates={"age": {"kind": "uniform", "low": 20.0, "high": 30.0}},
        sites=[{"name": "A", "share": 0.5, "case_mix": {"age": -5.0}},
               {"name": "B", "share": 0.5}],
    )
    persons = simulate(scenario, 4_000, 21).persons
    ages = {site: persons.filter(pl.col("site") == site).get_column("age") for site in "AB"}
    assert 15.0 <= ages["A"].min() and ages["A"].max() <= 25.0
    assert 20.0 <= ages["B"].min() and ages["B"].max() <= 30.0
    # Uniform on a 10-year range: mean at the centre within 4 SE (sd = 10 / sqrt(12)).
    for site, centre in (("A", 20.0), ("B", 25.0)):
        se = 10 / np.sqrt(12) / np.sqrt(ages[site].len())
        assert abs(ages[site].mean() - centre) < 4 * se
