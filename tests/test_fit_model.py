"""MultiStateModel beyond the hazards: visit, measurement and drug processes recovered from a
simulated reference, covariate rows and marginals, options (Cox, clocks, site effects) and the
errors users can cause."""

from __future__ import annotations

import gc
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trajectories.cohort import Cohort
from trajectories.errors import PrivacyWarning
from trajectories.fit import FitError, MultiStateModel
from trajectories.fit.covariates import CovariateError, baseline_rows
from trajectories.fit.processes import _in_spells
from trajectories.fit.references import stanford_heart
from trajectories.io import from_survival_table
from trajectories.scenario import load_scenario, scenario_from_dict
from trajectories.simulate import MarkovSimulator
from validation import compare

N_PROCESSES = 5000


@pytest.fixture(scope="module")
def full_reference() -> Cohort:
    from conftest import FULL_SCENARIO

    from trajectories.scenario import scenario_from_dict

    return MarkovSimulator(scenario_from_dict(FULL_SCENARIO)).simulate(N_PROCESSES, seed=4)


@pytest.fixture(scope="module")
def full_model(full_reference: Cohort) -> MultiStateModel:
    return MultiStateModel().fit(full_reference)


def _counts(cohort: Cohort, prefix: str) -> dict[tuple[str, str], int]:
    """Events of each name per state they fall in."""
    events = cohort.events.filter(pl.col("code").str.starts_with(prefix))
    placed = _in_spells(events, cohort.state_spells()).group_by("code", "state").len()
    return {(r["code"].removeprefix(prefix), r["state"]): r["len"]
            for r in placed.iter_rows(named=True)}


def test_visit_rates_and_lengths_are_recovered(full_model, full_reference):
    counts = _counts(full_reference, "visit:")
    visits = {v.type: v for v in full_model.to_scenario().visits}
    truth = {("outpatient", "stable"): 6.0, ("outpatient", "progressed"): 12.0,
             ("inpatient", "progressed"): 2.0}
    for (kind, state), rate in truth.items():
        fitted = visits[kind].rates_per_year[state]
        assert abs(fitted - rate) < 4 * rate / math.sqrt(counts[(kind, state)]), (kind, state)
    assert "stable" not in visits["inpatient"].rates_per_year
    stays = sum(n for (kind, _), n in counts.items() if kind == "inpatient")
    # exponential stays of mean 5 days (sd 5), a few cut short by the end of follow-up
    assert abs(visits["inpatient"].mean_duration_days - 5.0) < 4 * 5.0 / math.sqrt(stays)
    assert visits["outpatient"].mean_duration_days == 0.0


def test_measurement_means_trend_and_spread_are_recovered(full_model, full_reference):
    (ldh,) = full_model.to_scenario().measurements
    counts = _counts(full_reference, "measurement:")
    persons = full_reference.n_persons
    for state, mean in (("stable", 200.0), ("progressed", 300.0)):
        # noise sd 20 per value, person sd 10 shared by a person's values
        se = math.sqrt(20.0**2 / counts[("ldh", state)] + 10.0**2 / persons)
        assert abs(ldh.mean[state] - mean) < 4 * se + 0.5, state  # + rounding to integers
    placed = _in_spells(full_reference.events.filter(pl.col("code") == "measurement:ldh"),
                        full_reference.state_spells())
    for state, trend in (("progressed", 50.0), ("stable", 0.0)):
        here = placed.filter(pl.col("state") == state).select(
            "person_id", ((pl.col("time") - pl.col("start")) / 365.25).alias("x"))
        centred = here.with_columns(pl.col("x") - pl.col("x").mean())
        sxx = float((centred["x"] ** 2).sum())
        per_person = centred.group_by("person_id").agg(pl.col("x").sum())["x"]
        # least-squares slope; the person offsets (sd 10) act as clusters
        se = math.sqrt(20.0**2 / sxx + 10.0**2 * float((per_person**2).sum()) / sxx**2)
        assert abs(ldh.trend_per_year.get(state, 0.0) - trend) < 4 * se, state
    # rounding to integers adds variance 1/12 to the noise
    total = sum(counts.values())
    assert abs(ldh.noise_sd - math.sqrt(400 + 1 / 12)) < 4 * 20 / math.sqrt(2 * total)
    # moment estimate of the person variance: sd about sqrt(2 / persons) (tau^2 + sigma^2 / n)
    measured = placed["person_id"].n_unique()
    se_variance = math.sqrt(2 / measured) * (10.0**2 + 20.0**2 * measured / total)
    assert abs(ldh.person_sd - 10.0) < 4 * se_variance / (2 * 10.0)
    assert ldh.decimals == 0 and ldh.min == 0.0 and ldh.visit_types is None


def test_drug_start_rule_probability_and_duration_are_recovered(full_model, full_reference):
    (drug,) = full_model.to_scenario().drugs
    assert drug.name == "pembrolizumab" and drug.on_entry == ["stable"]
    assert drug.when == {"arm": ["treatment"]} and drug.probability == 1.0
    n = full_reference.events.filter(pl.col("code") == "drug:pembrolizumab").height
    assert n == full_reference.persons.filter(pl.col("arm") == "treatment").height
    assert abs(drug.duration_days - 365.0) < 4 * 365.0 * 0.5 / math.sqrt(n)
    assert abs(drug.duration_cv - 0.5) < 4 * 0.5 / math.sqrt(2 * n)


def test_fitted_full_scenario_passes_validation(full_model, full_reference):
    synthetic = full_model.simulate(N_PROCESSES, seed=9)
    report = compare(synthetic, full_reference, figures=False, seed=1)
    # site B's frailty makes its stable->progressed hazards non-proportional: the fitted
    # site hazard ratio is an average, so only the pooled and survival checks are asserted
    failures = [c for c in report.failures if c.site is None]
    assert not failures, [(c.group, c.name, c.subject, c.metric) for c in failures]


# -- covariates ------------------------------------------------------------------------------------


def test_age_is_derived_from_birth_dates():
    frame = pd.DataFrame({"t": [10.0, 20, 30, 40, 50, 60], "e": [1, 0, 1, 1, 0, 1],
                          "age": [40.0, 50, 60, 70, 45, 55], "site": list("AAABBB"),
                          "grade": ["low", "high", "low", "high", "high", "low"]})
    cohort = from_survival_table(frame, "t", "e", covariates=["grade"], age_col="age",
                                 site_col="site")
    rows = baseline_rows(cohort)
    assert rows.columns == ["person_id", "site", "grade", "age"]
    np.testing.assert_allclose(rows["age"].to_numpy(), frame["age"], atol=1 / 365.25)


def test_resampled_rows_round_trip_through_a_moved_model_directory(full_reference, tmp_path):
    with pytest.warns(PrivacyWarning, match="copies real persons' covariate rows"):
        model = MultiStateModel(covariate_draw="resample", processes=False).fit(full_reference)
    scenario = model.to_scenario()
    assert scenario.baseline is not None
    assert sorted(scenario.baseline_columns()) == ["age", "arm", "sex"]
    ours = model.simulate(2000, seed=4)
    # each new person carries a whole reference row of its own site, in its site's shares
    rows = baseline_rows(full_reference)
    assert ours.persons.join(rows, on=["site", "age", "arm", "sex"], how="anti").height == 0
    saved = model.save(tmp_path / "model")
    assert '[baseline]\nrows = "baseline.parquet"' in (saved / "scenario.toml").read_text()
    assert "person_id" not in pl.read_parquet(saved / "baseline.parquet").columns
    moved = Path(shutil.move(saved, tmp_path / "moved"))
    loaded = load_scenario(moved / "scenario.toml")
    assert loaded.baseline.rows == str((moved / "baseline.parquet").resolve())
    assert loaded.content_hash() == scenario.content_hash()
    theirs = MarkovSimulator(loaded).simulate(2000, seed=4)
    assert_frame_equal(ours.persons, theirs.persons)
    assert_frame_equal(ours.events, theirs.events)


def test_an_in_memory_scenario_keeps_its_rows_when_the_model_is_gone(stanford):
    with pytest.warns(PrivacyWarning):
        model = MultiStateModel(covariate_draw="resample", processes=False).fit(stanford)
    scenario = model.to_scenario()
    del model
    gc.collect()
    assert Path(scenario.baseline.rows).is_file()
    again = scenario_from_dict(scenario.model_dump(mode="json", by_alias=True))
    assert again.content_hash() == scenario.content_hash()
    synthesised = MultiStateModel(processes=False).fit(stanford)
    assert synthesised.to_scenario().baseline is None and synthesised.baseline_rows_ is None
    cohort = synthesised.simulate(300, seed=1)
    # synthesised draws: ages are not the reference's values
    assert cohort.persons.join(baseline_rows(stanford), on="age", how="semi").height == 0
    with pytest.warns(DeprecationWarning, match="'marginal' is now 'copula'"):
        assert MultiStateModel(covariate_draw="marginal").covariate_draw == "copula"


def test_a_reference_without_covariates_needs_no_baseline_rows():
    frame = pd.DataFrame({"t": np.arange(1.0, 13.0), "e": [1] * 12})
    model = MultiStateModel().fit(from_survival_table(frame, "t", "e"))
    assert model.specs_ == [] and model.to_scenario().baseline is None
    assert model.simulate(50, seed=0).n_persons == 50


def test_covariate_problems_name_the_column():
    frame = pd.DataFrame({"t": [1.0, 2, 3], "e": [1, 0, 1], "x": [1.0, None, 2.0],
                          "grade": ["1", "2", "2"]})
    cohort = from_survival_table(frame, "t", "e")
    with pytest.raises(CovariateError, match="'x' is missing for 1 person"):
        MultiStateModel().fit(cohort)
    # The loaders rename levels a scenario cannot use ('1' -> 'grade_1'); a cohort built
    # by hand with such levels is refused by the fit, naming them.
    assert cohort.persons["grade"].to_list() == ["grade_1", "grade_2", "grade_2"]
    raw = Cohort(cohort.persons.with_columns(pl.Series("grade", ["1", "2", "2"])),
                 cohort.events, cohort.manifest)
    with pytest.raises(CovariateError, match=r"'grade' has level\(s\) \['1', '2'\]"):
        MultiStateModel(covariates=["grade"]).fit(raw)
    with pytest.raises(CovariateError, match="no covariate column"):
        MultiStateModel(covariates=["stage"]).fit(cohort)


# -- options and errors ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stanford() -> Cohort:
    return stanford_heart()


def test_cox_option_gives_piecewise_hazards_that_validate(stanford):
    model = MultiStateModel(families="cox").fit(stanford)
    for transition in model.to_scenario().transitions:
        assert transition.hazard.family == "piecewise"
        assert len(transition.hazard.breakpoints) >= 2
    report = compare(model.simulate(1030, seed=3), stanford, figures=False)
    assert report.passed, [(c.group, c.name, c.subject) for c in report.failures]


def test_clock_choice_and_per_transition_families(stanford):
    model = MultiStateModel(families={"transplanted->dead": "weibull"}, clock="reset")
    model.fit(stanford)
    after = model.transition("transplanted->dead")
    assert (after.fit.family, after.clock) == ("weibull", "reset")
    assert [(f, c) for f, c, _ in after.candidates] == [("weibull", "reset")]
    # everyone enters 'waiting' at 0: its transitions have one clock, forward
    assert {t.clock for t in model.transitions_ if t.source == "waiting"} == {"forward"}
    assert len(model.transition("waiting->dead").candidates) == 5


def test_site_effects_fixed_shrunk_and_none(full_reference):
    fixed = MultiStateModel(processes=False).fit(full_reference)
    shrunk = MultiStateModel(site_effects="shrunk", processes=False).fit(full_reference)
    none = MultiStateModel(site_effects="none", processes=False).fit(full_reference)
    for key in ("stable->death", "stable->progressed"):
        b_fixed = fixed.transition(key).site_log_hazard_ratios()["B"][0]
        b_shrunk = shrunk.transition(key).site_log_hazard_ratios()["B"][0]
        assert abs(b_shrunk) <= abs(b_fixed) and np.sign(b_shrunk) in (0, np.sign(b_fixed))
        assert none.transition(key).site_log_hazard_ratios() == {}
    # site B's hazard ratio 1.5 on stable->death is found (no frailty on that transition)
    beta, se = fixed.transition("stable->death").site_log_hazard_ratios()["B"]
    assert abs(beta - math.log(1.5)) < 4 * se
    assert fixed.to_scenario().sites[1].hazard_ratios["stable->death"] == pytest.approx(
        math.exp(beta))


def test_user_errors_are_fit_errors(stanford, tmp_path):
    with pytest.raises(FitError, match="clock must be one of"):
        MultiStateModel(clock="sideways")
    with pytest.raises(FitError, match="not fitted yet"):
        MultiStateModel().to_scenario()
    with pytest.raises(FitError, match=r"unknown family \['gamma'\]"):
        MultiStateModel(families="gamma").fit(stanford)
    model = MultiStateModel().fit(stanford)
    with pytest.raises(FitError, match="no transition 'dead->waiting'"):
        model.transition("dead->waiting")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FitError, match="not empty"):
        model.save(tmp_path / "taken")


def test_learned_state_ends_in_underscore_and_old_names_warn(stanford):
    model = MultiStateModel(families="exponential").fit(stanford)
    assert sorted(t.key for t in model.transitions_) == [
        "transplanted->dead", "waiting->dead", "waiting->transplanted"]
    assert model.censoring == "empirical" and set(model.censoring_) == {"reference"}
    with pytest.warns(DeprecationWarning, match="transitions is now transitions_"):
        assert model.transitions is model.transitions_
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = model.nothing
