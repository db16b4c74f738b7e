"""Empirical index dates and censoring, end to end.

Scenario keys (``index_dates``, ``censoring``) are validated with errors naming the field;
they are simulated by the quantile function at the person's own uniform (closed forms), and a
scenario without them draws exactly the documented window and loss formulas from the same
stream. The fit's reverse Kaplan-Meier equals lifelines' Kaplan-Meier of the flipped
indicator; its knots follow a scenario with known windows and censoring, keep small cells out
of the ends and pool small sites; on GBSG2 the synthetic censored follow-up and index dates
match the reference's. The validation checks judge index dates and censored follow-up ends,
in memory and on partitioned cohorts alike.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import FULL_SCENARIO, build_scenario
from lifelines import KaplanMeierFitter
from scipy import stats
from typer.testing import CliRunner

from trajectories import ScenarioError, load_scenario
from trajectories.cli import app
from trajectories.cohort import read_partitioned
from trajectories.fit import FitError, MultiStateModel
from trajectories.fit.censoring import CENSORED_EXITS
from trajectories.fit.empirical import MIN_CELL, fit_site, knot_count, reverse_kaplan_meier
from trajectories.fit.references import gbsg2
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.blocks import block_rng
from trajectories.simulate.plan import Plan
from trajectories.simulate.population import EPOCH_ORDINAL, draw_population
from trajectories.simulate.sharded import simulate_sharded
from validation import compare
from validation.endpoints import Endpoint
from validation.followup import followup_tests

ROOT = Path(__file__).resolve().parents[1]
EPOCH = dt.date(1970, 1, 1)
DEATH = [{"from": "a", "to": "d", "hazard": {"family": "exponential", "rate": 1 / 3000}}]
KNOTS = {"levels": [0.0, 0.5, 0.8], "days": [0.0, 100.0, 300.0], "max_days": 500.0}


def scenario_dict(**extra) -> dict:
    data = {"name": "dates", "initial_state": "a", "transitions": copy.deepcopy(DEATH),
            "states": [{"name": "a"}, {"name": "d", "absorbing": True}],
            "calendar": {"enrolment_start": "2016-01-01", "enrolment_end": "2018-12-31"},
            "followup": {"max_days": 1500.0, "loss_to_followup_per_year": 0.05}}
    data.update(extra)
    return data


def day(date: dt.date) -> int:
    return (date - EPOCH).days


# -- scenario ------------------------------------------------------------------------------------

ERRORS = [
    ("decreasing index dates",
     {"calendar": {"index_dates": {"quantiles": ["2016-01-01", "2017-01-01", "2016-06-01"]}}},
     r"calendar\.index_dates\.quantiles: quantiles must not decrease: quantiles\[2\] "
     r"\(2016-06-01\) comes before quantiles\[1\] \(2017-01-01\)"),
    ("a single index date knot",
     {"calendar": {"index_dates": {"quantiles": ["2016-01-01"]}}},
     r"calendar\.index_dates\.quantiles: List should have at least 2 items"),
    ("first censoring level not 0",
     {"followup": {"censoring": {**KNOTS, "levels": [0.1, 0.5, 0.8]}}},
     r"followup\.censoring: levels\[0\] must be 0 \(the shortest censoring time\), got 0\.1"),
    ("censoring levels not increasing",
     {"followup": {"censoring": {**KNOTS, "levels": [0.0, 0.5, 0.5]}}},
     r"followup\.censoring: levels must increase: levels\[2\] \(0\.5\) is not above "
     r"levels\[1\] \(0\.5\)"),
    ("censoring level above 1",
     {"followup": {"censoring": {**KNOTS, "levels": [0.0, 0.5, 1.5]}}},
     r"followup\.censoring\.levels\[2\]: Input should be less than or equal to 1 \(got 1\.5\)"),
    ("censoring days decreasing",
     {"followup": {"censoring": {**KNOTS, "days": [0.0, 300.0, 100.0]}}},
     r"followup\.censoring: days must not decrease: days\[2\] \(100\.0\) is below days\[1\]"),
    ("censoring lengths differ",
     {"followup": {"censoring": {**KNOTS, "days": [0.0, 100.0]}}},
     r"followup\.censoring: levels and days must have one entry per knot, got 3 levels and 2"),
    ("max_days below the last knot",
     {"followup": {"censoring": {**KNOTS, "max_days": 200.0}}},
     r"followup\.censoring: max_days \(200\.0\) must be at least the last of days \(300\.0\)"),
    ("negative censoring days",
     {"followup": {"censoring": {**KNOTS, "days": [-1.0, 100.0, 300.0]}}},
     r"followup\.censoring\.days\[0\]: Input should be greater than or equal to 0"),
    ("a misspelt key",
     {"followup": {"censoring": {"level": [0.0], "days": [1.0], "max_days": 2.0}}},
     r"followup\.censoring\.level: Extra inputs are not permitted"),
    ("a site with a window and index dates",
     {"sites": [{"name": "A", "share": 0.5},
                {"name": "B", "share": 0.5, "enrolment_start": "2017-01-01",
                 "index_dates": {"quantiles": ["2017-01-01", "2018-01-01"]}}]},
     r"sites \(B\): give enrolment_start / enrolment_end or index_dates, not both"),
    ("a site with followup_days and censoring",
     {"sites": [{"name": "A", "share": 0.5, "followup_days": 900.0, "censoring": KNOTS},
                {"name": "B", "share": 0.5}]},
     r"sites \(A\): give followup_days / loss_to_followup_per_year or censoring, not both"),
    ("data cut-off before the last index date",
     {"calendar": {"data_cutoff": "2017-06-01",
                   "index_dates": {"quantiles": ["2016-01-01", "2018-12-31"]}}},
     r"sites \(site_1\): calendar\.data_cutoff \(2017-06-01\) falls before the last index "
     r"date \(2018-12-31\)"),
]


@pytest.mark.parametrize(("edit", "pattern"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_scenario_errors_name_the_field(edit, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        scenario_from_dict(scenario_dict(**edit), source="my.toml")


def test_a_scenario_file_error_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\ninitial_state = "a"\n'
                    '[[states]]\nname = "a"\n[[states]]\nname = "d"\nabsorbing = true\n'
                    '[[transitions]]\nfrom = "a"\nto = "d"\n'
                    'hazard = { family = "exponential", rate = 0.001 }\n'
                    '[calendar]\nindex_dates = { quantiles = [2001-03-02, 2000-01-01] }\n')
    with pytest.raises(ScenarioError, match=rf"invalid scenario {path}:\n  calendar\."
                                            r"index_dates\.quantiles: quantiles must not"):
        load_scenario(path)


def test_the_readme_keys_are_valid_and_reach_the_sites_they_say():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("A complete example", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    lines = [line[2:] if line.startswith(("# index_dates = { quantiles = [2",
                                          "# censoring = { levels = [0")) else line
             for line in block.splitlines()]
    assert sum(a != b for a, b in zip(lines, block.splitlines(), strict=True)) == 2
    scenario = scenario_from_dict(tomllib.loads("\n".join(lines)), source="README.md")
    a, b = scenario.sites
    assert scenario.site_index_dates(a) == scenario.calendar.index_dates is not None
    assert scenario.site_censoring(a) == scenario.followup.censoring is not None
    # B gives its own enrolment_start and followup_days: its window and loss stay.
    assert scenario.site_index_dates(b) is None and scenario.site_censoring(b) is None
    plain = scenario_from_dict(tomllib.loads(block), source="README.md")
    assert plain.content_hash() != scenario.content_hash()


# -- simulation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cutoff", [None, "2019-06-30"])
def test_draws_are_the_documented_functions_of_one_stream(cutoff):
    """Without the keys: the window and loss formulas, bit for bit; with them: the quantile
    functions at the same uniform (dates) and at 1 - exp(-E) of the same exponential."""
    m, seed = 5_000, 3
    calendar = {"enrolment_start": "2016-01-01", "enrolment_end": "2018-12-31",
                **({"data_cutoff": cutoff} if cutoff else {})}
    plain = scenario_from_dict(scenario_dict(calendar=calendar))
    rng = block_rng(seed, 0)
    rng.random(m)  # the site (one site, by share)
    rng.random(m), rng.random(m)  # age, sex
    u, exponential = rng.random(m), rng.standard_exponential(m)
    start, end = dt.date(2016, 1, 1).toordinal(), dt.date(2018, 12, 31).toordinal()
    index_day = start + np.floor(u * (end - start + 1)).astype(np.int64) - EPOCH_ORDINAL
    admin = np.full(m, 1500.0)
    if cutoff:
        admin = np.minimum(admin, day(dt.date.fromisoformat(cutoff)) - index_day)
    loss = exponential / (0.05 / 365.25)
    population = draw_population(Plan.compile(plain), 0, m, block_rng(seed, 0))
    np.testing.assert_array_equal(population.index_day, index_day)
    np.testing.assert_array_equal(population.censor_time, np.where(loss < admin, loss, admin))
    np.testing.assert_array_equal(population.lost, loss < admin)
    assert not population.reason_unknown.any()

    dates = ["2016-01-01", "2016-03-01", "2017-07-01", "2018-12-31"]
    empirical = scenario_from_dict(scenario_dict(
        calendar={**calendar, "index_dates": {"quantiles": dates}},
        followup={"censoring": KNOTS}))
    population = draw_population(Plan.compile(empirical), 0, m, block_rng(seed, 0))
    knots = np.array([day(dt.date.fromisoformat(d)) for d in dates], dtype=float)
    index_day = np.floor(np.interp(u, np.linspace(0, 1, 4), knots) + 0.5).astype(np.int64)
    np.testing.assert_array_equal(population.index_day, index_day)
    v = -np.expm1(-exponential)  # 1 - exp(-E), exactly as the simulator computes it
    time = np.where(v > 0.8, 500.0, np.interp(v, KNOTS["levels"], KNOTS["days"]))
    cap = np.inf if cutoff is None else day(dt.date.fromisoformat(cutoff)) - index_day
    np.testing.assert_array_equal(population.censor_time, np.minimum(time, cap))
    assert not population.lost.any()
    np.testing.assert_array_equal(population.reason_unknown, (time < 500.0) & (time < cap))


def test_other_sites_draw_the_same_baseline_when_one_site_goes_empirical():
    full = scenario_from_dict(FULL_SCENARIO)
    data = copy.deepcopy(FULL_SCENARIO)
    site_b = data["sites"][1]
    del site_b["followup_days"], site_b["loss_to_followup_per_year"]
    site_b.update(index_dates={"quantiles": ["2016-01-01", "2016-07-01", "2017-03-01"]},
                  censoring=KNOTS)
    mixed = scenario_from_dict(data)
    one, two = (draw_population(Plan.compile(s), 0, 4_000, block_rng(9, 0)) for s in (full, mixed))
    a = one.site == 0
    np.testing.assert_array_equal(one.site, two.site)
    for field in ("index_day", "birth_day", "censor_time", "lost", "initial_state"):
        np.testing.assert_array_equal(getattr(one, field)[a], getattr(two, field)[a], field)
    np.testing.assert_array_equal(one.multipliers[a], two.multipliers[a])
    assert not np.array_equal(one.index_day[~a], two.index_day[~a])
    assert two.index_day[~a].min() >= day(dt.date(2016, 1, 1))
    assert two.index_day[~a].max() <= day(dt.date(2017, 3, 1))


def test_quantile_knots_simulate_their_closed_forms():
    n = 20_000
    start = dt.date(2016, 1, 1)
    dates = [(start + dt.timedelta(days=100 * i)).isoformat() for i in range(11)]
    # Essentially nobody dies: every follow-up ends by censoring.
    scenario = scenario_from_dict(scenario_dict(
        transitions=[{**DEATH[0], "hazard": {"family": "exponential", "rate": 1e-12}}],
        calendar={"index_dates": {"quantiles": dates}}, followup={"censoring": KNOTS}))
    persons = MarkovSimulator(scenario).simulate(n, seed=5).persons
    # Knots of a uniform give that uniform (on whole days, the nearest date).
    index_day = persons["index_date"].cast(pl.Int64).to_numpy()
    low = day(start)
    assert index_day.min() == low and index_day.max() == low + 1000
    assert stats.kstest(index_day, stats.uniform(low, 1000).cdf).pvalue > 0.01
    # Censoring: uniform on [0, 100] with mass 0.5, on [100, 300] with mass 0.3, 0.2 at 500.
    end = persons["followup_end"].to_numpy()
    at_max = end == 500.0
    assert abs(at_max.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n)

    def cdf(t):
        return np.where(t < 100, 0.5 * t / 100, 0.5 + 0.3 * (t - 100) / 200) / 0.8

    assert stats.kstest(end[~at_max], cdf).pvalue > 0.01
    exits = persons["exit"].to_numpy()
    assert set(exits[at_max]) == {"administrative_censoring"}
    assert set(exits[~at_max]) == {"censored"}


# -- fit ------------------------------------------------------------------------------------------


def test_reverse_kaplan_meier_equals_lifelines_on_the_flipped_indicator():
    rng = np.random.default_rng(4)
    time = np.round(rng.exponential(300, 2_000))  # whole days: many ties
    censored = rng.random(2_000) < 0.6
    ours = reverse_kaplan_meier(time, censored)
    fitter = KaplanMeierFitter().fit(time, event_observed=censored)
    theirs = fitter.survival_function_at_times(ours.times).to_numpy()
    np.testing.assert_allclose(ours.survival, theirs, rtol=0, atol=1e-9)
    table = fitter.event_table.loc[ours.times]
    np.testing.assert_array_equal(ours.at_risk, table["at_risk"].to_numpy())
    np.testing.assert_array_equal(ours.censored, table["observed"].to_numpy())


SIZES = {"A": 2_500, "B": 1_200, "C": 150, "D": 8}
LOSS = {"A": 0.05, "B": 0.2, "C": 0.05, "D": 0.05}
FOLLOWUP = {"A": 1500.0, "B": 900.0, "C": 1500.0, "D": 1500.0}
WINDOW = {"A": ("2016-01-01", "2018-12-31"), "B": ("2017-06-01", "2018-06-30"),
          "C": ("2016-01-01", "2018-12-31"), "D": ("2016-01-01", "2018-12-31")}


@pytest.fixture(scope="module")
def known():
    sites = [{"name": "A", "size": SIZES["A"]},
             {"name": "B", "size": SIZES["B"], "enrolment_start": WINDOW["B"][0],
              "enrolment_end": WINDOW["B"][1], "followup_days": FOLLOWUP["B"],
              "loss_to_followup_per_year": LOSS["B"]},
             {"name": "C", "size": SIZES["C"]}, {"name": "D", "size": SIZES["D"]}]
    reference = MarkovSimulator(build_scenario(
        DEATH, calendar={"enrolment_start": WINDOW["A"][0], "enrolment_end": WINDOW["A"][1]},
        followup={"max_days": 1500.0, "loss_to_followup_per_year": 0.05},
        sites=sites)).simulate(seed=21)
    return reference, MultiStateModel().fit(reference)


def test_knots_follow_the_known_window_and_censoring(known):
    reference, model = known
    for site in ("A", "B", "C"):
        fit = model.censoring_[site]
        # site D (8 persons, below MIN_CELL) is fitted as part of the largest site, A
        persons = reference.persons.filter(pl.col("site").is_in([site, *(["D"] * (site == "A"))]))
        n = persons.height
        assert fit.pooled == [] and fit.n_persons == n
        assert len(fit.index_dates) == knot_count(n) == min(51, n // 10)
        # Index dates: uniform on the window; each knot at its level, the ends at 1% / 99%.
        low, high = (day(dt.date.fromisoformat(d)) for d in WINDOW[site])
        span = high - low + 1
        level = np.clip(np.linspace(0, 1, len(fit.index_dates)), 0.01, 0.99)
        cdf = (np.array([day(d) for d in fit.index_dates]) - low + 0.5) / span
        assert np.all(np.abs(cdf - level) <= 5 * np.sqrt(level * (1 - level) / n) + 1 / span), site
        # Censoring: min(Exp(loss), follow-up); each level between F(days-) and F(days).
        rate, longest = LOSS[site] / 365.25, FOLLOWUP[site]
        levels, days = np.array(fit.levels), np.array(fit.days)
        assert len(levels) == knot_count(fit.n_censored) and levels[-1] == 1.0
        assert fit.max_days == longest  # a whole atom of persons ends there
        below = 1 - np.exp(-rate * days)
        at = np.where(days >= longest, 1.0, below)
        clipped = np.clip(levels, 0.01, 0.99)
        at_risk = np.array([(persons["followup_end"] >= d).sum() for d in days])
        tolerance = 5 * np.sqrt(clipped * (1 - clipped) / at_risk)
        assert np.all(clipped >= below - tolerance), site
        assert np.all(clipped <= at + tolerance), site


def test_no_end_knot_is_an_extreme_of_a_small_cell(known):
    reference, model = known
    for site in ("A", "B", "C"):
        fit = model.censoring_[site]
        persons = reference.persons.filter(pl.col("site") == site)
        dates = persons["index_date"].cast(pl.Int64).to_numpy()
        censored = persons.filter(pl.col("exit").is_in(CENSORED_EXITS))["followup_end"]
        ends = persons["followup_end"].to_numpy()
        for values, low, high in (
                (dates, day(fit.index_dates[0]), day(fit.index_dates[-1])),
                (censored.to_numpy(), fit.days[0], fit.days[-1]),
                (ends, None, fit.max_days)):
            if low is not None and (values == values.min()).sum() < MIN_CELL:
                assert low > values.min(), site
            if (values == values.max()).sum() < MIN_CELL:
                assert high < values.max(), site


def test_a_small_site_is_fitted_with_the_largest_and_small_cells_take_the_pooled_knots(known):
    reference, model = known
    # site D (8 persons): too small to be a site of its own, or to be pooled alone
    assert "D" not in model.sites_ and SIZES["D"] < MIN_CELL
    assert any("['D']" in note and "'A'" in note for note in model.summary()["notes"])
    assert "D" not in set(model.simulate(500, seed=1).persons["site"].to_list())
    # a site of fewer than MIN_CELL persons given to fit_site takes the pooled knots
    persons = reference.persons
    pooled = fit_site(persons["index_date"].cast(pl.Int64).to_numpy(),
                      persons["followup_end"].to_numpy(),
                      persons["exit"].is_in(CENSORED_EXITS).to_numpy())
    few = persons.filter(pl.col("site") == "D")
    small = fit_site(few["index_date"].cast(pl.Int64).to_numpy(), few["followup_end"].to_numpy(),
                     few["exit"].is_in(CENSORED_EXITS).to_numpy(), pooled=pooled)
    assert small.n_persons == SIZES["D"] and small.pooled == ["index_dates", "censoring"]
    assert small.index_dates == pooled.index_dates
    assert (small.levels, small.days, small.max_days) == (pooled.levels, pooled.days,
                                                          pooled.max_days)


def test_the_fitted_model_reproduces_dates_and_censoring_where_the_window_fit_cannot(known):
    reference, model = known
    sites = ["A", "B", "C"]
    synthetic = model.simulate(20_000, seed=2).persons
    tests = followup_tests(synthetic, reference.persons, sites)
    assert len(tests) == 2 * (1 + len(sites))
    failed = [(t.name, t.site, t.p_value) for t in tests if t.p_value < 0.05 / len(tests)]
    assert failed == []
    # The window-and-loss fit squeezes each site's enrolment into the few days before its
    # "data cut-off" (there is none here): its index dates cannot match.
    parametric = MultiStateModel(censoring="parametric").fit(reference)
    window = followup_tests(parametric.simulate(20_000, seed=2).persons, reference.persons,
                            sites)
    assert all(t.p_value < 1e-6 for t in window if t.name == "index date KS test")


def test_the_censoring_option_is_checked():
    with pytest.raises(FitError, match=r"censoring must be one of \['empirical', "
                                       r"'parametric'\], got 'uniform'"):
        MultiStateModel(censoring="uniform")


def test_gbsg2_censored_follow_up_and_index_dates_are_reproduced():
    reference = gbsg2()
    model = MultiStateModel().fit(reference)
    synthetic = model.simulate(10 * reference.n_persons, seed=1)

    def censored(cohort):
        return cohort.persons.filter(pl.col("exit").is_in(CENSORED_EXITS))["followup_end"]

    real, synth = censored(reference).to_numpy(), censored(synthetic).to_numpy()
    assert real.size == 387
    # At each real quantile q_p the synthetic share below is p up to sampling noise of both.
    for p in (0.1, 0.5, 0.9):
        share = float(np.mean(synth <= np.quantile(real, p)))
        noise = np.sqrt(p * (1 - p) * (1 / real.size + 1 / synth.size))
        assert abs(share - p) <= 4 * noise, (p, share)
    # GBSG2 has one index date (the loader's): every synthetic person gets it.
    assert reference.persons["index_date"].n_unique() == 1
    assert synthetic.persons["index_date"].unique().to_list() == (
        reference.persons["index_date"].unique().to_list())
    fit = model.censoring_[model.sites_[0]]
    assert len(fit.levels) == knot_count(387) == 38
    assert fit.days[0] > real.min() and fit.days[-1] < real.max()
    assert fit.max_days < reference.persons["followup_end"].max()
    scenario = model.to_scenario()
    assert scenario.followup.censoring is not None and scenario.calendar.data_cutoff is None


def test_cli_fit_takes_the_censoring_option(tmp_path):
    runner = CliRunner()
    for choice, key in (("parametric", "data_cutoff"), ("empirical", "index_dates")):
        out = tmp_path / choice
        result = runner.invoke(app, ["fit", "gbsg2", "--out", str(out), "--censoring", choice])
        assert result.exit_code == 0, result.output
        calendar = tomllib.loads((out / "scenario.toml").read_text())["calendar"]
        other = ({"data_cutoff", "index_dates"} - {key}).pop()
        assert key in calendar and other not in calendar, choice
    bad = subprocess.run([sys.executable, "-m", "trajectories.cli", "fit", "gbsg2", "--out",
                          str(tmp_path / "x"), "--censoring", "km"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "censoring must be one of" in bad.stderr
    assert "Traceback" not in bad.stderr


# -- validation -----------------------------------------------------------------------------------

TWO_SITES = [{"name": "A", "share": 0.6},
             {"name": "B", "share": 0.4, "enrolment_start": "2017-06-01",
              "enrolment_end": "2018-06-30", "followup_days": 900.0,
              "loss_to_followup_per_year": 0.2}]
OS = [Endpoint(name="overall_survival", events=["d"])]


def two_site_scenario(**site_b):
    """TWO_SITES with site B's entries updated (None removes one)."""
    sites = copy.deepcopy(TWO_SITES)
    sites[1].update(site_b)
    sites[1] = {k: v for k, v in sites[1].items() if v is not None}
    return scenario_from_dict(scenario_dict(sites=sites))


@pytest.fixture(scope="module")
def two_site_reference():
    return MarkovSimulator(two_site_scenario()).simulate(3_000, seed=1)


def follow_up_checks(report) -> dict:
    return {(c.name, c.site): c for c in report.checks if c.group == "follow-up"}


def test_follow_up_checks_pass_alike_and_fail_a_moved_window(two_site_reference):
    same = compare(MarkovSimulator(two_site_scenario()).simulate(3_000, seed=2),
                   two_site_reference, endpoints=OS, figures=False)
    checks = follow_up_checks(same)
    assert set(checks) == {(name, site) for name in ("index date KS test",
                                                      "censored follow-up KS test")
                           for site in (None, "A", "B")}
    sojourn = next(c for c in same.checks if c.name == "sojourn KS test")
    assert all(c.verdict == "pass" and c.threshold == sojourn.threshold for c in checks.values())
    moved = compare(MarkovSimulator(two_site_scenario(
        enrolment_start="2017-12-01", enrolment_end="2018-12-31", followup_days=600.0)
    ).simulate(3_000, seed=2), two_site_reference, endpoints=OS, figures=False)
    failed = {key for key, c in follow_up_checks(moved).items() if c.failed}
    assert failed == {("index date KS test", None), ("index date KS test", "B"),
                      ("censored follow-up KS test", None),
                      ("censored follow-up KS test", "B")}
    detail = follow_up_checks(moved)[("index date KS test", "B")].details
    assert detail["synthetic"][0] >= "2017-12-01" > detail["reference"][0]


def test_partitioned_cohorts_get_the_same_checks_from_their_sample(two_site_reference, tmp_path,
                                                                    monkeypatch):
    # Site B's window and loss as knots (its workers read them back from the scenario's JSON).
    rate, levels = 0.2 / 365.25, np.linspace(0, 0.38, 7)
    scenario = two_site_scenario(
        enrolment_start=None, enrolment_end=None, followup_days=None,
        loss_to_followup_per_year=None,
        index_dates={"quantiles": ["2017-06-01", "2018-06-30"]},
        censoring={"levels": levels.tolist(), "days": np.round(-np.log1p(-levels) / rate, 3)
                   .tolist(), "max_days": 900.0})
    simulator = MarkovSimulator(scenario, block_size=400)
    dataset = read_partitioned(simulate_sharded(simulator, tmp_path / "cohort", n=3_000,
                                                seed=4))
    assert dataset.collect().persons.equals(simulator.simulate(3_000, seed=4).persons)
    in_memory = follow_up_checks(compare(dataset.collect(), two_site_reference, endpoints=OS,
                                         figures=False))
    by_blocks = follow_up_checks(compare(dataset, two_site_reference, endpoints=OS,
                                         figures=False))
    assert in_memory.keys() == by_blocks.keys()
    for key, check in in_memory.items():
        other = by_blocks[key]
        assert (check.metric, check.verdict, check.details) == (
            other.metric, other.verdict, other.details), key
    monkeypatch.setattr(importlib.import_module("validation.compare"), "SAMPLE_CAP", 1_000)
    sampled = compare(dataset, two_site_reference, endpoints=OS, figures=False)
    pooled = follow_up_checks(sampled)[("index date KS test", None)]
    size = int(sampled.context["synthetic read"].split("sample of ")[1].split(" ")[0]
               .replace(",", ""))
    assert pooled.details["n_synthetic"] == min(size, 1_000)
    assert pooled.details["n_reference"] == 1_000
    assert all(c.verdict == "pass" for c in follow_up_checks(sampled).values())
