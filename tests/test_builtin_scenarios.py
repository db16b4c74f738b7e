"""Built-in scenarios: they load, reach every state, and reproduce the figures their files cite.

Each scenario is simulated once per module with a fixed seed. A published figure passes when the
simulated estimate lies within 4 standard errors of it, the standard error coming from the
simulated estimate itself (a Kaplan-Meier confidence interval, a Cox model, a Poisson count);
the parameters were calibrated until the figures matched, so a failure means the file, the
simulator or an estimator changed.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines import AalenJohansenFitter, CoxPHFitter, KaplanMeierFitter
from lifelines.utils import median_survival_times

from scenarios import available
from trajectories import MarkovSimulator, load_scenario
from trajectories.cohort import Cohort
from trajectories.hazards import FAMILIES
from trajectories.scenario import Scenario

MONTH = 365.25 / 12
YEAR = 365.25
Z95 = 1.959964
K_SE = 4.0
BUILTINS = ("als_natural_history", "ckd_progression", "oncology_nsclc_two_arm")


# -- estimators with their standard errors --------------------------------------------------------


def km_median(time: np.ndarray, event: np.ndarray) -> tuple[float, float]:
    """Kaplan-Meier median and its standard error from lifelines' 95% confidence interval."""
    kmf = KaplanMeierFitter().fit(time, event)
    ci = median_survival_times(kmf.confidence_interval_)
    low, high = float(ci.iloc[0, 0]), float(ci.iloc[0, 1])
    assert np.isfinite(high), "the median's confidence interval is open: simulate longer"
    return float(kmf.median_survival_time_), (high - low) / (2 * Z95)


def km_risk(time: np.ndarray, event: np.ndarray, at: float) -> tuple[float, float]:
    """1 - S(at) by Kaplan-Meier and its standard error (Greenwood, via lifelines' interval)."""
    kmf = KaplanMeierFitter().fit(time, event)
    risk = 1.0 - float(kmf.survival_function_at_times(at).iloc[0])
    ci = kmf.confidence_interval_survival_function_
    row = ci[ci.index <= at].iloc[-1]
    return risk, abs(float(row.iloc[1] - row.iloc[0])) / (2 * Z95)


def aj_incidence(time: np.ndarray, cause: np.ndarray, at: float) -> tuple[float, float]:
    """Aalen-Johansen cumulative incidence of cause 1 (cause 2 competing) at ``at``, with SE."""
    ajf = AalenJohansenFitter(calculate_variance=True, seed=0).fit(time, cause, event_of_interest=1)
    cif = ajf.cumulative_density_
    value = float(cif[cif.index <= at].iloc[-1, 0])
    ci = ajf.confidence_interval_
    row = ci[ci.index <= at].iloc[-1]
    return value, abs(float(row.iloc[0] - row.iloc[1])) / (2 * Z95)


def cox_log_hr(time: np.ndarray, event: np.ndarray, exposed: np.ndarray) -> tuple[float, float]:
    """Log hazard ratio of ``exposed`` from a univariable Cox model, and its standard error."""
    frame = pd.DataFrame({"T": time, "E": event, "x": exposed.astype(float)})
    cph = CoxPHFitter().fit(frame, "T", "E")
    return float(cph.params_["x"]), float(cph.standard_errors_["x"])


def assert_near(name: str, simulated: float, se: float, published: float, slack: float = 0.0):
    """Simulated within K_SE standard errors (plus a stated slack) of the published figure."""
    assert se > 0, f"{name}: standard error must be positive"
    tolerance = K_SE * se + slack
    assert abs(simulated - published) <= tolerance, (
        f"{name}: simulated {simulated:.4g} vs published {published:.4g} "
        f"(tolerance {tolerance:.3g} = {K_SE} SE of {se:.3g} + slack {slack})"
    )


# -- cohorts --------------------------------------------------------------------------------------


def _simulate(name: str, n: int, seed: int) -> tuple[Scenario, Cohort]:
    scenario = load_scenario(name)
    return scenario, MarkovSimulator(scenario).simulate(n, seed)


@pytest.fixture(scope="module")
def oncology() -> tuple[Scenario, Cohort]:
    return _simulate("oncology_nsclc_two_arm", 30_000, seed=11)


@pytest.fixture(scope="module")
def als() -> tuple[Scenario, Cohort]:
    return _simulate("als_natural_history", 20_000, seed=12)


@pytest.fixture(scope="module")
def ckd() -> tuple[Scenario, Cohort]:
    return _simulate("ckd_progression", 30_000, seed=13)


@pytest.fixture(scope="module")
def cohorts(oncology, als, ckd) -> dict[str, tuple[Scenario, Cohort]]:
    return {
        "oncology_nsclc_two_arm": oncology,
        "als_natural_history": als,
        "ckd_progression": ckd,
    }


# -- every built-in --------------------------------------------------------------------------------


def test_registry_lists_the_three_with_descriptions() -> None:
    listed = available()
    assert set(BUILTINS) <= set(listed)
    for name in BUILTINS:
        assert listed[name] and len(listed[name]) <= 100, name
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.references, f"{name} cites no references"


def test_builtins_use_at_least_five_hazard_families() -> None:
    families = {t.hazard.family for name in BUILTINS for t in load_scenario(name).transitions}
    assert families <= set(FAMILIES)
    assert len(families) >= 5, families


@pytest.mark.parametrize("name", BUILTINS)
def test_every_state_is_reached(cohorts, name: str) -> None:
    scenario, cohort = cohorts[name]
    seen = set(cohort.state_spells().get_column("state").unique().to_list())
    assert seen == set(scenario.state_names)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_declared_process_produces_events(cohorts, name: str) -> None:
    scenario, cohort = cohorts[name]
    codes = set(cohort.events.get_column("code").unique().to_list())
    expected = (
        {f"visit:{v.type}" for v in scenario.visits}
        | {f"measurement:{m.name}" for m in scenario.measurements}
        | {f"drug:{d.name}" for d in scenario.drugs}
    )
    assert expected <= codes, expected - codes


@pytest.mark.parametrize("name", BUILTINS)
def test_index_dates_fall_in_each_site_window_and_followup_in_its_limit(cohorts, name) -> None:
    scenario, cohort = cohorts[name]
    calendar = scenario.calendar
    for site in scenario.sites:
        rows = cohort.persons.filter(pl.col("site") == site.name)
        assert rows.height > 0, site.name
        start = site.enrolment_start or calendar.enrolment_start
        end = site.enrolment_end or calendar.enrolment_end
        assert rows["index_date"].min() >= start and rows["index_date"].max() <= end
        limit = site.followup_days or scenario.followup.max_days
        assert rows["followup_end"].max() <= limit + 1e-9, site.name


# -- oncology: KEYNOTE-189 (Gandhi et al., N Engl J Med 2018) -------------------------------------


def _oncology_table(cohort: Cohort) -> pl.DataFrame:
    first = cohort.state_spells().filter(pl.col("state") == "progression_free")
    return cohort.persons.join(
        first.select("person_id", pl.col("stop").alias("pfs_time"), "next_state"), on="person_id"
    ).with_columns(
        pfs_event=pl.col("next_state").is_not_null(),
        os_event=pl.col("exit") == "death",
        treated=pl.col("arm") == "treatment",
    )


@pytest.mark.parametrize(("arm", "published"), [("control", 4.9), ("treatment", 8.8)])
def test_oncology_median_pfs_per_arm(oncology, arm: str, published: float) -> None:
    table = _oncology_table(oncology[1]).filter(pl.col("arm") == arm)
    median, se = km_median(table["pfs_time"].to_numpy() / MONTH, table["pfs_event"].to_numpy())
    assert_near(f"median PFS ({arm}, months)", median, se, published)


def test_oncology_pfs_hazard_ratio(oncology) -> None:
    table = _oncology_table(oncology[1])
    log_hr, se = cox_log_hr(
        table["pfs_time"].to_numpy(), table["pfs_event"].to_numpy(), table["treated"].to_numpy()
    )
    assert_near("PFS log HR", log_hr, se, np.log(0.52))


def test_oncology_control_median_os_and_os_hazard_ratio(oncology) -> None:
    table = _oncology_table(oncology[1])
    control = table.filter(~pl.col("treated"))
    median, se = km_median(
        control["followup_end"].to_numpy() / MONTH, control["os_event"].to_numpy()
    )
    assert_near("control median OS (months)", median, se, 11.3)
    log_hr, se = cox_log_hr(
        table["followup_end"].to_numpy(), table["os_event"].to_numpy(), table["treated"].to_numpy()
    )
    assert_near("OS log HR", log_hr, se, np.log(0.49))


def test_oncology_randomisation_is_two_to_one(oncology) -> None:
    persons = oncology[1].persons
    share = persons.filter(pl.col("arm") == "treatment").height / persons.height
    assert_near("treatment share", share, np.sqrt(2 / 9 / persons.height), 2 / 3)


def test_oncology_sites_differ(oncology) -> None:
    scenario, cohort = oncology
    sites = scenario.sites
    assert len(sites) >= 3
    assert len({s.followup_days for s in sites}) == len(sites)
    assert len({s.share for s in sites}) == len(sites)
    assert len({(s.enrolment_start, s.enrolment_end) for s in sites}) >= 3
    assert sum(s.loss_to_followup_per_year is not None for s in sites) >= 3
    assert sum(bool(s.hazard_ratios) for s in sites) >= 2
    assert sum(bool(s.case_mix) for s in sites) >= 2
    n = cohort.n_persons
    for site in sites:
        observed = cohort.persons.filter(pl.col("site") == site.name).height / n
        assert_near(f"share of {site.name}", observed, np.sqrt(site.share * (1 - site.share) / n),
                    site.share)
    lost = cohort.persons.group_by("site").agg((pl.col("exit") == "lost_to_follow_up").mean())
    assert lost.height == len(sites) and lost[:, 1].min() > 0


def test_oncology_drugs_follow_the_arms(oncology) -> None:
    cohort = oncology[1]
    arms = cohort.events.filter(pl.col("code").str.starts_with("drug:")).join(
        cohort.persons.select("person_id", "arm"), on="person_id"
    )
    pembro = arms.filter(pl.col("code") == "drug:pembrolizumab")
    assert pembro.height > 0 and set(pembro["arm"].unique()) == {"treatment"}
    assert (pembro["time"] == 0).all()
    for code in ("drug:carboplatin_or_cisplatin", "drug:pemetrexed"):
        assert set(arms.filter(pl.col("code") == code)["arm"].unique()) == {"control", "treatment"}


def test_oncology_events_per_person_suit_the_benchmark(oncology) -> None:
    cohort = oncology[1]
    per_person = cohort.events.height / cohort.n_persons
    assert 20 <= per_person <= 40, per_person


# -- ALS: King's staging (Roche et al., Brain 2012; Chen et al., Front Neurol 2018) ---------------


@pytest.mark.parametrize(
    ("state", "published"),
    [("stage_1", 12.0), ("stage_2", 7.5), ("stage_3", 6.5), ("stage_4", 4.1)],
)
def test_als_median_time_in_each_stage(als, state: str, published: float) -> None:
    spells = als[1].state_spells().filter(pl.col("state") == state)
    median, se = km_median(
        ((spells["stop"] - spells["start"]) / MONTH).to_numpy(),
        spells["next_state"].is_not_null().to_numpy(),
    )
    assert_near(f"median months in {state}", median, se, published)


def test_als_median_survival_from_onset(als) -> None:
    """Chen's stage medians sum to 30.1 months, within Roche's "2-3 years".

    The sum of the stage medians approximates the median of their sum, so one month of slack is
    allowed on top of the sampling error; the published range is checked exactly.
    """
    persons = als[1].persons
    median, se = km_median(
        persons["followup_end"].to_numpy() / MONTH, (persons["exit"] == "death").to_numpy()
    )
    assert 24.0 <= median <= 36.0
    assert_near("median survival from onset (months)", median, se, 30.1, slack=1.0)


def test_als_alsfrs_r_declines_about_0_9_points_a_month(als) -> None:
    """Per-person least-squares slopes of ALSFRS-R; 0.9 points/month is itself approximate."""
    events = als[1].events.filter(pl.col("code") == "measurement:alsfrs_r")
    values = events["value"].to_numpy()
    assert values.min() >= 0 and values.max() <= 48
    slopes = (
        events.with_columns(months=pl.col("time") / MONTH)
        .group_by("person_id")
        .agg(n=pl.len(), cov=pl.cov("months", "value"), var=pl.col("months").var())
        .filter(pl.col("n") >= 3)
        .select(pl.col("cov") / pl.col("var"))
        .to_series()
        .to_numpy()
    )
    se = slopes.std(ddof=1) / np.sqrt(slopes.size)
    assert_near("mean ALSFRS-R slope (points/month)", slopes.mean(), se, -0.9, slack=0.1)


def test_als_riluzole_starts_at_diagnosis_for_treated_only(als) -> None:
    cohort = als[1]
    diagnosis = cohort.state_spells().filter(pl.col("state") == "stage_2")
    drug = cohort.events.filter(pl.col("code") == "drug:riluzole")
    joined = drug.join(diagnosis, on="person_id").join(cohort.persons, on="person_id")
    assert joined.height == drug.height > 0
    assert (joined["time"] == joined["start"]).all()
    assert set(joined["riluzole"].unique()) == {"yes"}
    clinic = cohort.events.filter(pl.col("code") == "visit:als_clinic").join(
        diagnosis.select("person_id", "start"), on="person_id", how="left"
    )
    assert (clinic["time"] >= clinic["start"]).all(), "ALS clinic visit before diagnosis"


# -- CKD: Keith et al., Arch Intern Med 2004; Go et al., N Engl J Med 2004 -------------------------


def _ckd_table(cohort: Cohort) -> pl.DataFrame:
    spells = cohort.state_spells()
    start = spells.filter(pl.col("start") == 0).select("person_id", "state")
    dialysis = spells.filter(pl.col("state") == "dialysis").select(
        "person_id", pl.col("start").alias("dialysis_time")
    )
    return (
        cohort.persons.join(start, on="person_id")
        .join(dialysis, on="person_id", how="left")
        .with_columns(
            group=pl.when(pl.col("state").is_in(["stage_3a", "stage_3b"]))
            .then(pl.lit("stage_3"))
            .otherwise(pl.col("state")),
            died=pl.col("exit") == "death",
        )
    )


@pytest.mark.parametrize(("group", "published"), [("stage_3", 0.243), ("stage_4", 0.457)])
def test_ckd_five_year_death_by_starting_stage(ckd, group: str, published: float) -> None:
    table = _ckd_table(ckd[1]).filter(pl.col("group") == group)
    risk, se = km_risk(table["followup_end"].to_numpy() / YEAR, table["died"].to_numpy(), 5.0)
    assert_near(f"5-year death from {group}", risk, se, published)


@pytest.mark.parametrize(("group", "published"), [("stage_3", 0.013), ("stage_4", 0.199)])
def test_ckd_five_year_rrt_by_starting_stage(ckd, group: str, published: float) -> None:
    table = _ckd_table(ckd[1]).filter(pl.col("group") == group)
    started = table["dialysis_time"].is_not_null().to_numpy()
    time = np.where(started, table["dialysis_time"].fill_null(0).to_numpy(),
                    table["followup_end"].to_numpy()) / YEAR
    cause = np.where(started, 1, np.where(table["died"].to_numpy(), 2, 0))
    incidence, se = aj_incidence(time, cause, 5.0)
    assert_near(f"5-year RRT from {group}", incidence, se, published)


@pytest.mark.parametrize(
    ("state", "per_100_py"),
    [("stage_3a", 17.22), ("stage_3b", 45.26), ("stage_4", 86.75), ("stage_5", 144.61)],
)
def test_ckd_hospitalisation_rates_match_go(ckd, state: str, per_100_py: float) -> None:
    cohort = ckd[1]
    spells = cohort.state_spells().filter(pl.col("state") == state)
    person_years = float((spells["stop"] - spells["start"]).sum()) / YEAR
    stays = cohort.events.filter(pl.col("code") == "visit:inpatient").join(
        spells.select("person_id", "start", "stop"), on="person_id"
    ).filter((pl.col("time") >= pl.col("start")) & (pl.col("time") < pl.col("stop"))).height
    rate = 100 * stays / person_years
    assert_near(f"hospitalisations per 100 PY in {state}", rate,
                100 * np.sqrt(stays) / person_years, per_100_py)


def test_ckd_egfr_measured_in_a_stage_lies_in_its_band(ckd) -> None:
    """Mean eGFR measured in each stage falls inside that stage's KDIGO band; none on dialysis."""
    cohort = ckd[1]
    spells = cohort.state_spells()
    egfr = cohort.events.filter(pl.col("code") == "measurement:egfr").join(
        spells, on="person_id"
    ).filter((pl.col("time") >= pl.col("start")) & (pl.col("time") < pl.col("stop")))
    means = dict(egfr.group_by("state").agg(pl.col("value").mean()).iter_rows())
    bands = {"stage_3a": (45, 60), "stage_3b": (30, 45), "stage_4": (15, 30), "stage_5": (0, 15)}
    assert set(means) == set(bands), "eGFR measured outside the CKD stages (on dialysis?)"
    for state, (low, high) in bands.items():
        assert low <= means[state] < high, (state, means[state])


def test_ckd_two_sites_with_different_followup(ckd) -> None:
    scenario, cohort = ckd
    assert len(scenario.sites) == 2
    assert len({s.followup_days for s in scenario.sites}) == 2
    latest = cohort.persons.group_by("site").agg(pl.col("index_date").max())
    assert latest["index_date"].max() <= dt.date(2013, 6, 30)
