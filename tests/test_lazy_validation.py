"""Out-of-core validation: figures added up block by block equal the in-memory ones exactly.

The same partitioned cohort is validated lazily (validation.lazy, one block at a time) and in
memory (the collected Cohort through validation.survival / validation.transitions): curves,
transition counts, jump chain, sojourn statistics and absorbing states must be identical, bit
for bit, including per-group curves, an endpoint whose origin state some blocks never see,
and a run on two worker processes. The tallies behind them are checked on tied data too.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trajectories.cohort import read_partitioned
from trajectories.parallel import Parallel
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.sharded import simulate_sharded
from validation import survival, transitions
from validation.endpoints import Endpoint, EndpointError, default_endpoints, endpoint_times
from validation.lazy import aggregate, block_aggregates, combine, figures, validate_partitioned

N, BLOCK, SEED = 3_000, 400, 5  # eight blocks, the last one short

ENDPOINTS = [
    *default_endpoints(["progression_free", "progressed", "death"], ["death"]),
    Endpoint(name="progression", events=["progressed"], competing=["death"]),
    Endpoint(name="post_progression", events=["death"], origin="progressed"),
]


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    simulator = MarkovSimulator("oncology_nsclc_two_arm", block_size=BLOCK)
    return simulate_sharded(simulator, tmp_path_factory.mktemp("cohort"), n=N, seed=SEED)


@pytest.fixture(scope="module")
def cohort(directory):
    return read_partitioned(directory).collect()


@pytest.fixture(scope="module")
def lazy(directory):
    return validate_partitioned(directory, ENDPOINTS)


def in_memory_curve(times: pl.DataFrame, endpoint: Endpoint) -> pl.DataFrame:
    """The curve validation.compare draws for ``endpoint`` from per-person times."""
    if endpoint.competing:
        return survival.aalen_johansen(times["time"], times["event"], cause=1)
    return survival.kaplan_meier(times["time"], times["event"] == 1)


def lazy_curve(figures, endpoint: Endpoint) -> pl.DataFrame:
    return (figures.aalen_johansen if endpoint.competing else figures.kaplan_meier)[endpoint.name]


def test_the_cohort_exercises_what_is_compared(cohort, lazy):
    """Guard: every endpoint has events and censoring, and the competing one both causes."""
    assert lazy.n_persons == N == cohort.n_persons
    for endpoint in ENDPOINTS:
        status = endpoint_times(cohort, endpoint).get_column("event")
        expected = {0, 1, 2} if endpoint.competing else {0, 1}
        assert set(status.unique()) == expected, endpoint.name
    assert set(lazy.kaplan_meier) == {"overall_survival", "event_free_survival",
                                      "post_progression"}
    assert set(lazy.aalen_johansen) == {"progression"}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_survival_curves_equal_the_in_memory_ones(cohort, lazy, endpoint):
    expected = in_memory_curve(endpoint_times(cohort, endpoint), endpoint)
    assert_frame_equal(lazy_curve(lazy, endpoint), expected, check_exact=True)


def test_transition_and_sojourn_figures_equal_the_in_memory_ones(cohort, lazy):
    assert_frame_equal(lazy.transitions, transitions.transition_counts(cohort))
    assert_frame_equal(lazy.jump_chain,
                       transitions.jump_chain(transitions.transition_counts(cohort)),
                       check_exact=True)
    absorbing = transitions.infer_absorbing_states(cohort)
    assert lazy.absorbing_states == absorbing == {"death"}
    sojourns = transitions.sojourn_times(cohort, absorbing)
    expected = transitions.compare_sojourns(sojourns, sojourns).select(
        "state",
        pl.col("n_synthetic").alias("n"),
        pl.col("completed_synthetic").alias("completed"),
        pl.col("median_synthetic").alias("median"),
    )
    assert_frame_equal(lazy.sojourns, expected, check_exact=True)
    assert lazy.sojourns.get_column("n").to_list() == [
        sojourns.filter(pl.col("state") == s).height for s in ("progressed", "progression_free")]


def test_curves_by_group_equal_the_in_memory_curves_of_each_group(directory, cohort):
    grouped = validate_partitioned(directory, ENDPOINTS, by=("arm", "site"))
    for endpoint in ENDPOINTS:
        times = endpoint_times(cohort, endpoint)
        stacked = lazy_curve(grouped, endpoint)
        groups = times.select("arm", "site").unique().sort("arm", "site").rows()
        assert stacked.select("arm", "site").unique(maintain_order=True).rows() == groups
        for arm, site in groups:
            mine = (pl.col("arm") == arm) & (pl.col("site") == site)
            assert_frame_equal(stacked.filter(mine).drop("arm", "site"),
                               in_memory_curve(times.filter(mine), endpoint), check_exact=True)


def test_a_resolution_gives_the_curves_of_times_rounded_up_to_it(directory, cohort):
    """resolution=1 day: the tallies hold one row per day and status, and the figures are
    those of the in-memory cohort with times and stays rounded up to whole days."""
    endpoint = ENDPOINTS[0]
    daily = aggregate(directory, [endpoint], resolution=1.0)
    lazy = figures(daily, [endpoint])
    times = endpoint_times(cohort, endpoint).with_columns(pl.col("time").ceil())
    assert_frame_equal(lazy.kaplan_meier[endpoint.name], in_memory_curve(times, endpoint),
                       check_exact=True)
    tally = daily.tallies[endpoint.name].group_by("time", "event").agg(pl.col("count").sum())
    assert tally.height == times.select("time", "event").unique().height < N / 2
    stays = transitions.sojourn_times(cohort, lazy.absorbing_states).with_columns(
        pl.col("duration").ceil())
    expected = transitions.kaplan_meier_medians(stays)
    assert_frame_equal(lazy.sojourns.select("state", "median"), expected, check_exact=True)
    with pytest.raises(EndpointError, match="resolution must be a positive number"):
        block_aggregates(cohort, [endpoint], resolution=0.0)


def test_two_worker_processes_give_the_same_figures(directory, lazy):
    parallel = validate_partitioned(directory, ENDPOINTS, parallel=Parallel(workers=2))
    for endpoint in ENDPOINTS:
        assert_frame_equal(lazy_curve(parallel, endpoint), lazy_curve(lazy, endpoint),
                           check_exact=True)
    assert_frame_equal(parallel.sojourns, lazy.sojourns, check_exact=True)
    assert_frame_equal(parallel.transitions, lazy.transitions)


def test_an_origin_state_missing_from_some_blocks(make_scenario, simulate, tmp_path):
    """Blocks where nobody falls ill add no one at risk after illness; the sum is still exact,
    and a state nobody enters is refused as in memory."""
    scenario = make_scenario(
        [
            {"from": "well", "to": "ill", "hazard": {"family": "exponential", "rate": 2e-4}},
            {"from": "well", "to": "dead", "hazard": {"family": "exponential", "rate": 2e-3}},
            {"from": "ill", "to": "dead", "hazard": {"family": "exponential", "rate": 5e-3}},
        ],
        initial_state="well",
    )
    simulator = MarkovSimulator(scenario, block_size=10)
    out = simulate_sharded(simulator, tmp_path / "rare", n=200, seed=3)
    dataset, cohort = read_partitioned(out), read_partitioned(out).collect()
    after_illness = Endpoint(name="after_illness", events=["dead"], origin="ill")
    ill_blocks = [
        cohort.events.filter(pl.col("code") == "state:ill")
        .filter(((pl.col("person_id") - 1) // 10) == b).height > 0
        for b in range(dataset.n_blocks)
    ]
    assert 0 < sum(ill_blocks) < dataset.n_blocks  # some blocks have no one falling ill
    lazy = figures(aggregate(dataset, [after_illness]), [after_illness])
    expected = in_memory_curve(endpoint_times(cohort, after_illness), after_illness)
    assert_frame_equal(lazy.kaplan_meier["after_illness"], expected, check_exact=True)

    never = Endpoint(name="never", events=["dead"], origin="nowhere")
    with pytest.raises(EndpointError, match="no person ever enters the origin state 'nowhere'"):
        endpoint_times(cohort, never)
    with pytest.raises(EndpointError, match="no person ever enters the origin state 'nowhere'"):
        figures(aggregate(dataset, [never]), [never])


def test_tallies_of_tied_data_give_the_row_level_curves_and_add_up():
    """Whole-day times (many ties, events at time 0): a tally is one row per (day, status), the
    estimators agree with the row-level ones, also on the stacked tallies of two halves."""
    rng = np.random.default_rng(0)
    time = np.floor(rng.exponential(200.0, 20_000))
    status = rng.choice([0, 1, 2], size=time.size, p=[0.3, 0.5, 0.2])
    whole = survival.tally(time, status)
    assert whole.height == pl.DataFrame({"t": time, "s": status}).unique().height < time.size
    assert whole.get_column("count").sum() == time.size
    halves = pl.concat([survival.tally(time[:7_000], status[:7_000]),
                        survival.tally(time[7_000:], status[7_000:])])
    assert halves.height > whole.height  # some (day, status) appear in both halves
    for tallies in (whole, halves):
        assert_frame_equal(
            survival.aalen_johansen_from_counts(tallies, cause=2),
            survival.aalen_johansen(time, status, cause=2), check_exact=True)
        binary = tallies.with_columns((pl.col("event") == 1).cast(pl.Int64).alias("event"))
        assert_frame_equal(survival.kaplan_meier_from_counts(binary),
                           survival.kaplan_meier(time, status == 1), check_exact=True)
    with pytest.raises(survival.SurvivalDataError, match="event: values must be 0"):
        survival.kaplan_meier_from_counts(whole)
    with pytest.raises(survival.SurvivalDataError, match="count: values must be >= 0"):
        survival.kaplan_meier_from_counts(binary.with_columns(pl.lit(-1).alias("count")))


def test_block_aggregates_of_the_blocks_add_up_to_those_of_the_cohort(directory, cohort):
    dataset = read_partitioned(directory)
    parts = combine(block_aggregates(dataset.block(b), ENDPOINTS)
                    for b in range(dataset.n_blocks))
    whole = block_aggregates(cohort, ENDPOINTS)
    assert parts.n_persons == whole.n_persons
    def canonical(tallies: pl.DataFrame) -> pl.DataFrame:
        return (tallies.group_by("time", "event").agg(pl.col("count").sum())
                .sort("time", "event"))

    for name in whole.tallies:
        assert parts.tallies[name].height >= whole.tallies[name].height
        assert_frame_equal(canonical(parts.tallies[name]), canonical(whole.tallies[name]))
    assert_frame_equal(parts.sojourns, whole.sojourns.sort("state", "duration"))
    assert_frame_equal(parts.transitions, whole.transitions.sort("from_state", "to_state"))
    assert_frame_equal(parts.votes, whole.votes.sort("state"))
