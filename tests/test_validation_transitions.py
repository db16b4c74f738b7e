"""validation.transitions and validation.distributions against hand counts, scipy, lifelines and
closed forms.

The illness-death model with constant hazards a (healthy -> ill), b (healthy -> dead) and
c (ill -> dead) has P_healthy(t) = exp(-(a+b)t), P_ill(t) = a/(a+b-c)(exp(-ct) - exp(-(a+b)t)),
exponential sojourns of mean 1/(a+b) and 1/c, and jump probabilities a/(a+b), b/(a+b).
Tolerances are 4 standard errors derived from n.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines import KaplanMeierFitter
from scipy import stats

from trajectories.cohort import Cohort, Manifest
from trajectories.errors import TrajectoriesError
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator
from validation.distributions import (
    compare_samples,
    events_per_person,
    gaps,
    measurement_summary,
    person_years,
    visit_rates,
)
from validation.transitions import (
    compare_jump_chains,
    compare_sojourns,
    forbidden_transitions,
    infer_absorbing_states,
    jump_chain,
    observed_transitions,
    occupation_difference,
    scenario_transitions,
    sojourn_times,
    state_occupation,
    transition_counts,
)

Z = 4.0
A, B, C = 0.002, 0.001, 0.004  # per day
LOSS_PER_YEAR = 0.3
LOSS_PER_DAY = LOSS_PER_YEAR / 365.25
ADMIN_DAYS = 1500.0
N = 20_000


def illness_death(a=A, b=B, c=C, loss=LOSS_PER_YEAR, max_days=ADMIN_DAYS, visits=()):
    return scenario_from_dict({
        "name": "illness_death",
        "initial_state": "healthy",
        "states": [{"name": "healthy"}, {"name": "ill"}, {"name": "dead", "absorbing": True}],
        "transitions": [
            {"from": "healthy", "to": "ill", "hazard": {"family": "exponential", "rate": a}},
            {"from": "healthy", "to": "dead", "hazard": {"family": "exponential", "rate": b}},
            {"from": "ill", "to": "dead", "hazard": {"family": "exponential", "rate": c}},
        ],
        "followup": {"max_days": max_days, "loss_to_followup_per_year": loss},
        "visits": list(visits),
        "measurements": [
            {"name": "crp", "mean": {"healthy": 5.0, "ill": 40.0}, "noise_sd": 3.0,
             "person_sd": 2.0, "trend_per_year": {"ill": 10.0}},
        ] if visits else [],
    })


VISITS = (
    {"type": "outpatient", "rates_per_year": {"healthy": 4.0, "ill": 10.0}},
    {"type": "inpatient", "rates_per_year": {"ill": 1.5}, "mean_duration_days": 4.0},
)


def simulate(scenario, n=N, seed=1) -> Cohort:
    return MarkovSimulator(scenario).simulate(n, seed)


@pytest.fixture(scope="module")
def censored() -> Cohort:
    return simulate(illness_death(), seed=11)


@pytest.fixture(scope="module")
def censored_other_seed() -> Cohort:
    return simulate(illness_death(), seed=12)


@pytest.fixture(scope="module")
def uncensored() -> Cohort:
    return simulate(illness_death(loss=0.0, max_days=1.0e6), seed=13)


@pytest.fixture(scope="module")
def with_visits() -> Cohort:
    return simulate(illness_death(visits=VISITS), n=3000, seed=14)


def _close(observed: float, expected: float, se: float, what: str) -> None:
    assert abs(observed - expected) < Z * se, (
        f"{what}: observed {observed:.6g}, expected {expected:.6g}, se {se:.3g}"
    )


def _events_pandas(cohort: Cohort) -> pd.DataFrame:
    return cohort.events.to_pandas()


# -- spells and transition counts ----------------------------------------------------------------


def test_state_spells_equal_the_cohort_definition_even_with_interleaved_rows(with_visits):
    expected = with_visits.state_spells()
    # Rows of different persons interleaved (globally time-sorted) break the data model, but
    # an unchecked cohort still gives the same spells per person.
    shuffled = Cohort(
        with_visits.persons,
        with_visits.events.sort("time", maintain_order=True),
        with_visits.manifest,
        check=False,
    )
    assert shuffled.state_spells().equals(expected)


def test_transition_counts_equal_a_pandas_hand_count(censored):
    events = _events_pandas(censored)
    states = events[events["code"].str.startswith("state:")].copy()
    states["state"] = states["code"].str.removeprefix("state:")
    states["next"] = states.groupby("person_id")["state"].shift(-1)
    moves = states.dropna(subset=["next"])
    hand = moves.groupby(["state", "next"]).size().to_dict()
    counts = transition_counts(censored)
    assert dict(zip(zip(counts["from_state"], counts["to_state"], strict=True),
                    counts["count"], strict=True)) == hand
    assert set(hand) == {("healthy", "ill"), ("healthy", "dead"), ("ill", "dead")}


def test_jump_chain_probabilities_match_the_competing_hazards(uncensored):
    chain = jump_chain(transition_counts(uncensored))
    totals = chain.group_by("from_state").agg(pl.col("probability").sum())
    assert np.allclose(totals["probability"].to_numpy(), 1.0)
    healthy = chain.filter(pl.col("from_state") == "healthy")
    n = int(healthy["count"].sum())
    assert n == N  # nobody is censored, everybody leaves healthy
    p_ill = healthy.filter(pl.col("to_state") == "ill")["probability"].item()
    p = A / (A + B)
    _close(p_ill, p, np.sqrt(p * (1 - p) / n), "P(healthy -> ill)")
    assert chain.filter(pl.col("from_state") == "ill")["probability"].to_list() == [1.0]


# -- the G-test ----------------------------------------------------------------------------------


def _counts(rows):
    return pl.DataFrame(rows, schema=["from_state", "to_state", "count"], orient="row")


def test_g_test_equals_scipy_on_the_same_tables():
    synthetic = _counts([("a", "b", 30), ("a", "c", 10), ("b", "c", 5), ("e", "f", 40),
                         ("e", "g", 12), ("x", "y", 4)])
    reference = _counts([("a", "b", 20), ("a", "c", 15), ("a", "d", 5), ("b", "c", 7),
                         ("e", "f", 22), ("e", "g", 19), ("z", "y", 3)])
    out = {r["from_state"]: r for r in compare_jump_chains(synthetic, reference).iter_rows(
        named=True)}
    assert sorted(out) == ["a", "b", "e", "x", "z"]
    # 2 x 3 with a zero cell, and 2 x 2 (dof 1: scipy without Yates' correction).
    for origin, table in (("a", [[30, 10, 0], [20, 15, 5]]), ("e", [[40, 12], [22, 19]])):
        g, p, dof, _ = stats.chi2_contingency(np.array(table), correction=False,
                                              lambda_="log-likelihood")
        row = out[origin]
        assert row["g_statistic"] == pytest.approx(g, rel=1e-12)
        assert row["p_value"] == pytest.approx(p, rel=1e-10)
        assert row["dof"] == dof
        assert (row["n_synthetic"], row["n_reference"]) == tuple(int(sum(r)) for r in table)
        shares = np.array(table) / np.array(table).sum(axis=1, keepdims=True)
        assert row["total_variation"] == pytest.approx(0.5 * np.abs(shares[0] - shares[1]).sum())
    # One target: nothing to test. One side only: no test at all.
    assert (out["b"]["g_statistic"], out["b"]["dof"], out["b"]["p_value"]) == (0.0, 0, 1.0)
    assert out["b"]["total_variation"] == 0.0
    for origin in ("x", "z"):
        assert out[origin]["g_statistic"] is None and out[origin]["p_value"] is None
        assert out[origin]["total_variation"] is None
    assert (out["x"]["n_synthetic"], out["x"]["n_reference"]) == (4, 0)


def test_same_scenario_does_not_reject_and_a_doubled_hazard_does(censored, censored_other_seed):
    reference = transition_counts(censored)
    same = compare_jump_chains(transition_counts(censored_other_seed), reference)
    assert same.filter(pl.col("dof") > 0)["p_value"].min() > 0.01
    doubled = simulate(illness_death(a=2 * A), seed=15)
    result = {r["from_state"]: r for r in compare_jump_chains(
        transition_counts(doubled), reference).iter_rows(named=True)}
    assert result["healthy"]["p_value"] < 1e-12
    assert result["ill"]["p_value"] == 1.0  # one target: the jump chain cannot differ
    # Total variation = |P(ill) difference| = 4/5 - 2/3 on the healthy row.
    n1, n2 = result["healthy"]["n_synthetic"], result["healthy"]["n_reference"]
    p1, p2 = 2 * A / (2 * A + B), A / (A + B)
    se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    _close(result["healthy"]["total_variation"], p1 - p2, se, "total variation")


def test_forbidden_transition_injected_is_found_with_its_count(censored):
    scenario = illness_death()
    allowed = scenario_transitions(scenario)
    assert forbidden_transitions(censored, allowed).height == 0
    assert observed_transitions(transition_counts(censored)) == allowed
    # Seven persons who went ill -> dead now pass through healthy again mid-way.
    spells = censored.state_spells()
    targets = spells.filter((pl.col("state") == "ill") & (pl.col("next_state") == "dead"))
    targets = targets.sort("person_id").head(7)
    extra = targets.select(
        "person_id",
        ((pl.col("start") + pl.col("stop")) / 2).alias("time"),
        pl.lit(None, dtype=pl.Float64).alias("end_time"),
        pl.lit("state:healthy").alias("code"),
        pl.lit(None, dtype=pl.Float64).alias("value"),
    )
    events = pl.concat([censored.events, extra]).sort("person_id", "time", maintain_order=True)
    faulty = Cohort(censored.persons, events, censored.manifest)
    found = forbidden_transitions(faulty, allowed)
    assert found.select("from_state", "to_state", "count").rows() == [("ill", "healthy", 7)]
    assert found["first_person_ids"].item().to_list() == targets["person_id"].head(5).to_list()


# -- sojourn times -------------------------------------------------------------------------------


def test_sojourns_have_the_exponential_means_without_censoring(uncensored):
    assert infer_absorbing_states(uncensored) == {"dead"}
    sojourns = sojourn_times(uncensored)
    assert set(sojourns["state"].unique()) == {"healthy", "ill"}
    assert sojourns["completed"].all()
    for state, rate in (("healthy", A + B), ("ill", C)):
        d = sojourns.filter(pl.col("state") == state)["duration"].to_numpy()
        _close(d.mean(), 1 / rate, (1 / rate) / np.sqrt(d.size), f"mean sojourn in {state}")


def test_kaplan_meier_median_sojourn_under_censoring(censored, censored_other_seed):
    synthetic, reference = sojourn_times(censored), sojourn_times(censored_other_seed)
    assert not synthetic["completed"].all()
    table = {r["state"]: r for r in compare_sojourns(synthetic, reference).iter_rows(named=True)}
    for state, rate in (("healthy", A + B), ("ill", C)):
        row = table[state]
        spells = synthetic.filter(pl.col("state") == state)
        assert row["n_synthetic"] == spells.height
        assert row["completed_synthetic"] == spells["completed"].sum()
        kmf = KaplanMeierFitter().fit(spells["duration"].to_numpy(),
                                      spells["completed"].to_numpy())
        assert row["median_synthetic"] == pytest.approx(kmf.median_survival_time_, rel=1e-12)
        median = np.log(2) / rate
        # Var S(m) <= S(1 - S) / (n G(m)) with G the chance of being uncensored by then
        # (sojourns in ill start later, so G at the sojourn length is a lower bound).
        g = np.exp(-LOSS_PER_DAY * median)
        se = 1 / (rate * np.sqrt(spells.height * g))
        _close(row["median_synthetic"], median, se, f"KM median sojourn in {state}")
        done = [f.filter((pl.col("state") == state) & pl.col("completed"))["duration"].to_numpy()
                for f in (synthetic, reference)]
        ks = stats.ks_2samp(*done)
        assert row["ks_statistic"] == pytest.approx(ks.statistic)
        assert row["ks_p_value"] == pytest.approx(ks.pvalue)
        assert row["wasserstein"] == pytest.approx(stats.wasserstein_distance(*done))
        assert row["ks_p_value"] > 0.01  # same scenario, another seed


def test_compare_sojourns_rejects_a_doubled_hazard_out_of_one_state(censored):
    doubled = sojourn_times(simulate(illness_death(c=2 * C), seed=16))
    table = {r["state"]: r for r in compare_sojourns(doubled, sojourn_times(censored)).iter_rows(
        named=True)}
    assert table["ill"]["ks_p_value"] < 1e-12
    assert table["healthy"]["ks_p_value"] > 0.01
    assert table["ill"]["median_synthetic"] < 0.6 * table["ill"]["median_reference"]


# -- state occupation ----------------------------------------------------------------------------


def _cohort(persons: list[tuple[int, float, str]], events: list[tuple[int, float, str]]):
    """A hand-made cohort: persons (id, followup_end, exit) and state events (id, time, state)."""
    frame = pl.DataFrame(persons, schema=["person_id", "followup_end", "exit"], orient="row")
    persons_frame = frame.with_columns(
        pl.lit("s").alias("site"),
        pl.lit(None, dtype=pl.Date).alias("index_date").fill_null(pl.date(2020, 1, 1)),
        pl.lit(None, dtype=pl.Date).alias("birth_date"),
        pl.lit(None, dtype=pl.String).alias("sex"),
    )
    events_frame = pl.DataFrame(events, schema=["person_id", "time", "code"], orient="row")
    events_frame = events_frame.with_columns(
        pl.lit(None, dtype=pl.Float64).alias("end_time"),
        ("state:" + pl.col("code")).alias("code"),
        pl.lit(None, dtype=pl.Float64).alias("value"),
    )
    return Cohort(persons_frame, events_frame, Manifest.new("test", len(persons)), check=False)


HAND_PERSONS = [(1, 5.0, "death"), (2, 3.0, "administrative_censoring"), (3, 4.0, "death"),
                (4, 6.0, "lost_to_follow_up"), (5, 2.0, "administrative_censoring")]
HAND_EVENTS = [(1, 0.0, "A"), (1, 2.0, "B"), (1, 5.0, "D"), (2, 0.0, "A"), (3, 0.0, "A"),
               (3, 4.0, "D"), (4, 0.0, "A"), (4, 1.0, "B"), (5, 0.0, "A")]


def test_aalen_johansen_by_hand():
    # t=1: 5 at risk in A, one moves to B; t=2: 4 at risk in A (person 5, censored at 2, still
    # counts), one moves to B; t=3: a censoring; t=4: 1 at risk in A, moves to D; t=5: 2 at
    # risk in B, one moves to D.
    occupation = state_occupation(_cohort(HAND_PERSONS, HAND_EVENTS), [0, 1, 2.5, 4, 5, 10])
    expected = np.array([[1, 0, 0], [0.8, 0.2, 0], [0.6, 0.4, 0], [0, 0.4, 0.6],
                         [0, 0.2, 0.8], [0, 0.2, 0.8]])
    assert occupation["state"].head(3).to_list() == ["A", "B", "D"]
    assert np.allclose(occupation["probability"].to_numpy().reshape(-1, 3), expected,
                       rtol=0, atol=1e-15)


def test_several_states_at_one_instant_count_as_one_move():
    direct = _cohort(HAND_PERSONS + [(6, 3.0, "death")],
                     HAND_EVENTS + [(6, 0.0, "A"), (6, 3.0, "D")])
    via_b = _cohort(HAND_PERSONS + [(6, 3.0, "death")],
                    HAND_EVENTS + [(6, 0.0, "A"), (6, 3.0, "B"), (6, 3.0, "D")])
    grid = np.linspace(0, 6, 25)
    assert occupation_difference(state_occupation(direct, grid),
                                 state_occupation(via_b, grid)) < 1e-15


def test_occupation_without_censoring_is_the_empirical_share(uncensored):
    spells = uncensored.state_spells()
    jumps = spells.filter(pl.col("start") > 0)["start"].head(3).to_numpy()
    grid = np.r_[np.linspace(0, 2000, 21), jumps]  # also exactly at jump times
    occupation = state_occupation(uncensored, grid)
    at = pl.DataFrame({"time": grid}).join(spells, how="cross").filter(
        (pl.col("start") <= pl.col("time"))
        & ((pl.col("time") < pl.col("stop")) | pl.col("next_state").is_null())
    )
    assert at.height == grid.size * N  # every person is in exactly one state at each time
    share = at.group_by("time", "state").agg((pl.len() / N).alias("expected"))
    joined = occupation.join(share, on=["time", "state"], how="left").fill_null(0.0)
    assert np.allclose(joined["probability"], joined["expected"], rtol=0, atol=1e-12)


def test_occupation_matches_the_illness_death_closed_form_with_censoring(censored):
    assert censored.persons["exit"].is_in(["lost_to_follow_up", "administrative_censoring"]).mean(
    ) > 0.2
    grid = np.array([50.0, 150.0, 300.0, 500.0, 800.0, 1200.0])
    occupation = state_occupation(censored, grid)
    healthy = np.exp(-(A + B) * grid)
    ill = A / (A + B - C) * (np.exp(-C * grid) - np.exp(-(A + B) * grid))
    truth = {"healthy": healthy, "ill": ill, "dead": 1 - healthy - ill}
    # The Aalen-Johansen variance is at most that of inverse-probability-of-censoring
    # weighting with the known censoring survival G(t): (p / G - p^2) / n.
    uncensored_share = np.exp(-LOSS_PER_DAY * grid)
    for state, p in truth.items():
        observed = occupation.filter(pl.col("state") == state)["probability"].to_numpy()
        se = np.sqrt((p / uncensored_share - p**2) / N)
        for t, o, e, s in zip(grid, observed, p, se, strict=True):
            _close(o, e, s, f"P({state}) at {t}")


def test_occupation_of_alive_is_kaplan_meier():
    scenario = scenario_from_dict({
        "name": "alive_dead", "initial_state": "alive",
        "states": [{"name": "alive"}, {"name": "dead", "absorbing": True}],
        "transitions": [{"from": "alive", "to": "dead",
                         "hazard": {"family": "weibull", "shape": 1.5, "scale": 500.0}}],
        "followup": {"max_days": 900.0, "loss_to_followup_per_year": 0.4},
    })
    cohort = simulate(scenario, n=5000, seed=17)
    persons = cohort.persons
    kmf = KaplanMeierFitter().fit(persons["followup_end"].to_numpy(),
                                  (persons["exit"] == "death").to_numpy())
    death_times = np.sort(persons.filter(pl.col("exit") == "death")["followup_end"].to_numpy())
    grid = np.r_[0.0, np.linspace(10, 1000, 60), death_times[[0, 10, 500]]]
    alive = state_occupation(cohort, grid).filter(pl.col("state") == "alive")
    expected = kmf.survival_function_at_times(grid).to_numpy()
    assert np.allclose(alive["probability"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_occupation_does_not_depend_on_chunks_or_grid_order(censored):
    few = pl.col("person_id") <= 2000
    cohort = Cohort(censored.persons.filter(few), censored.events.filter(few), censored.manifest)
    grid = np.array([700.0, 10.0, 1450.0, 10.0, 0.0, 3000.0, 333.3])
    base = state_occupation(cohort, grid)
    assert base["time"].to_list()[::3] == grid.tolist()
    for chunk in (1, 7, 1000):
        assert occupation_difference(state_occupation(cohort, grid, chunk_size=chunk),
                                     base) < 1e-12
    ordered = state_occupation(cohort, np.sort(grid)).unique(["time", "state"])
    assert occupation_difference(base.unique(["time", "state"]), ordered) == 0.0
    sums = base.unique(["time", "state"]).group_by("time").agg(pl.col("probability").sum())
    assert np.allclose(sums["probability"].to_numpy(), 1.0)


def test_occupation_difference_and_errors(censored):
    a = pl.DataFrame({"time": [0.0, 0.0, 1.0, 1.0], "state": ["x", "y", "x", "y"],
                      "probability": [1.0, 0.0, 0.6, 0.4]})
    b = pl.DataFrame({"time": [0.0, 1.0, 1.0], "state": ["x", "x", "z"],
                      "probability": [1.0, 0.5, 0.5]})
    assert occupation_difference(a, b) == pytest.approx(0.5)  # z on one side, y on the other
    assert occupation_difference(a, a) == 0.0
    for grid in ([-1.0], [np.nan], [[1.0, 2.0]]):
        with pytest.raises(TrajectoriesError, match="grid"):
            state_occupation(censored, grid)


# -- distributions -------------------------------------------------------------------------------


def test_events_per_person_and_gaps_equal_pandas(with_visits):
    events = _events_pandas(with_visits)
    ids = with_visits.persons["person_id"].to_list()
    inpatient = events[events["code"] == "visit:inpatient"].groupby("person_id").size()
    counted = events_per_person(with_visits, prefix="visit:inpatient")
    assert counted["person_id"].to_list() == ids
    assert counted["n_events"].to_list() == inpatient.reindex(ids, fill_value=0).tolist()
    assert (counted["n_events"] == 0).sum() > 0
    assert events_per_person(with_visits)["n_events"].sum() == len(events)

    visits = events[events["code"].str.startswith("visit:")].copy()
    visits["gap"] = visits.groupby("person_id")["time"].diff()
    expected = visits.dropna(subset=["gap"])
    found = gaps(with_visits, prefix="visit:")
    assert found["person_id"].to_list() == expected["person_id"].tolist()
    assert found["code"].to_list() == expected["code"].tolist()
    assert np.allclose(found["gap"].to_numpy(), expected["gap"].to_numpy(), rtol=0, atol=0)


def test_visit_rates_recover_the_scenario_rates(with_visits):
    rates = {(r["code"], r["state"]): r for r in visit_rates(with_visits).iter_rows(named=True)}
    assert set(rates) == {(f"visit:{v}", s) for v in ("outpatient", "inpatient")
                          for s in ("healthy", "ill")}
    assert rates[("visit:inpatient", "healthy")]["n_visits"] == 0
    years = dict(person_years(with_visits).iter_rows())
    for (code, state), rate in {("visit:outpatient", "healthy"): 4.0,
                                ("visit:outpatient", "ill"): 10.0,
                                ("visit:inpatient", "ill"): 1.5}.items():
        row = rates[(code, state)]
        assert row["person_years"] == pytest.approx(years[state])
        _close(row["rate"], rate, np.sqrt(rate / row["person_years"]), f"{code} in {state}")


def test_measurement_summary_equals_pandas(with_visits):
    events = _events_pandas(with_visits)
    states = events[events["code"].str.startswith("state:")]
    values = events[events["code"] == "measurement:crp"]
    # Independent attribution: the latest state event at or before the measurement.
    joined = pd.merge_asof(
        values.reset_index().sort_values("time"),
        states.reset_index()[["index", "person_id", "time", "code"]]
        .rename(columns={"code": "state", "index": "state_row"}).sort_values("time"),
        on="time", by="person_id", direction="backward",
    )
    joined = joined[joined["state_row"] < joined["index"]]
    joined["state"] = joined["state"].str.removeprefix("state:")
    assert len(joined) == len(values)
    expected = joined.groupby("state")["value"]
    summary = {r["state"]: r for r in measurement_summary(with_visits).iter_rows(named=True)}
    assert set(summary) == {"healthy", "ill"}
    for state, row in summary.items():
        group = expected.get_group(state)
        assert row["code"] == "measurement:crp"
        assert row["n"] == len(group)
        assert row["mean"] == pytest.approx(group.mean(), rel=1e-12)
        assert row["sd"] == pytest.approx(group.std(), rel=1e-12)
        for q in (5, 25, 50, 75, 95):
            assert row[f"q{q:02d}"] == pytest.approx(group.quantile(q / 100), rel=1e-12)
    assert summary["ill"]["mean"] > summary["healthy"]["mean"] + 30


def test_compare_samples_equals_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 500), rng.normal(0.5, 1, 400)
    out = compare_samples(pl.Series(np.r_[a, np.nan]).fill_nan(None), np.r_[b, np.nan])
    ks = stats.ks_2samp(a, b)
    assert (out["n_a"], out["n_b"]) == (500, 400)
    assert out["median_a"] == pytest.approx(np.median(a))
    assert out["mean_b"] == pytest.approx(b.mean())
    assert out["ks_statistic"] == pytest.approx(ks.statistic)
    assert out["ks_p_value"] == pytest.approx(ks.pvalue)
    assert out["wasserstein"] == pytest.approx(stats.wasserstein_distance(a, b))
    empty = compare_samples([], b)
    assert empty["n_a"] == 0 and empty["ks_p_value"] is None and empty["median_b"] is not None


@pytest.mark.parametrize("sizes", [(30_000, 20_000), (12_000, 600), (40, 70)])
def test_counted_sojourn_tests_equal_scipy_on_the_stays(sizes):
    """KS (exact and asymptotic regimes) and Wasserstein from counts equal scipy on rows."""
    rng = np.random.default_rng(sum(sizes))
    stays = {side: np.round(rng.exponential(scale, n)) for side, n, scale in
             zip(("a", "b"), sizes, (100.0, 103.0), strict=True)}
    frames = {side: pl.DataFrame({"person_id": np.arange(v.size), "state": "ill",
                                  "duration": v, "completed": rng.random(v.size) < 0.8})
              for side, v in stays.items()}
    row = compare_sojourns(frames["a"], frames["b"]).row(0, named=True)
    done = {side: f.filter(pl.col("completed"))["duration"].to_numpy()
            for side, f in frames.items()}
    ks = stats.ks_2samp(done["a"], done["b"])
    assert row["ks_statistic"] == pytest.approx(ks.statistic, abs=1e-12)
    assert row["ks_p_value"] == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-15)
    assert row["wasserstein"] == pytest.approx(
        stats.wasserstein_distance(done["a"], done["b"]), rel=1e-9)
