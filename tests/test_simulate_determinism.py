"""Reproducibility: a cohort is a function of (scenario, n, seed, block_size) and nothing else.

Same inputs give byte-identical Parquet files; blocks computed alone, in another order or as a
subset give the same rows as the full run; memory and disk paths agree; the manifest says
what produced the cohort.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trajectories.cohort import EVENTS_FILE, MANIFEST_FILE, PERSONS_FILE, Cohort
from trajectories.errors import TrajectoriesError
from trajectories.simulate import MarkovSimulator

N, BLOCK, SEED = 2_500, 600, 7  # five blocks, the last one short


@pytest.fixture
def simulator(full_scenario) -> MarkovSimulator:
    return MarkovSimulator(full_scenario, block_size=BLOCK)


@pytest.fixture
def cohort(simulator) -> Cohort:
    return simulator.simulate(N, SEED)


def test_the_full_scenario_exercises_every_part(cohort) -> None:
    """Guard for the tests below: the cohort has every event kind, site and exit they compare."""
    codes = set(cohort.events.get_column("code").str.extract(r"^([a-z_]+):", 1).unique())
    assert codes == {"state", "visit", "measurement", "drug"}
    assert set(cohort.persons.get_column("site")) == {"A", "B"}
    assert {"death", "administrative_censoring", "lost_to_follow_up"} <= set(
        cohort.persons.get_column("exit"))
    assert cohort.persons.get_column("person_id").to_list() == list(range(1, N + 1))


def test_simulate_to_twice_gives_byte_identical_files(simulator, tmp_path) -> None:
    first = simulator.simulate_to(tmp_path / "one", N, SEED)
    second = MarkovSimulator(simulator.scenario, block_size=BLOCK).simulate_to(
        tmp_path / "two", N, SEED)
    for name in (PERSONS_FILE, EVENTS_FILE):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    one, two = (json.loads((d / MANIFEST_FILE).read_text()) for d in (first, second))
    one.pop("created"), two.pop("created")
    assert one == two


def test_simulate_twice_gives_equal_frames(simulator, cohort) -> None:
    again = simulator.simulate(N, SEED)
    assert_frame_equal(again.persons, cohort.persons)
    assert_frame_equal(again.events, cohort.events)
    assert again.fingerprint() == cohort.fingerprint()


def test_blocks_in_any_order_or_subset_concatenate_to_the_full_run(simulator, cohort) -> None:
    shuffled = list(simulator.iter_blocks(N, SEED, blocks=[3, 0, 4, 2, 1]))
    assert [block for block, _, _ in shuffled] == [3, 0, 4, 2, 1]
    by_block = {block: (persons, events) for block, persons, events in shuffled}
    persons = pl.concat([by_block[b][0] for b in range(5)])
    events = pl.concat([by_block[b][1] for b in range(5)])
    assert_frame_equal(persons, cohort.persons)
    assert_frame_equal(events, cohort.events)

    # One block alone, from a fresh simulator, equals its slice of the full run.
    fresh = MarkovSimulator(simulator.scenario, block_size=BLOCK)
    block_persons, block_events = fresh.simulate_block(4, N, SEED)
    ids = block_persons.get_column("person_id").to_list()
    assert ids == list(range(4 * BLOCK + 1, N + 1))
    assert_frame_equal(block_persons, cohort.persons.filter(pl.col("person_id").is_in(ids)))
    assert_frame_equal(block_events, cohort.events.filter(pl.col("person_id").is_in(ids)))

    subset = list(fresh.iter_blocks(N, SEED, blocks=[2]))
    assert len(subset) == 1 and subset[0][0] == 2
    assert_frame_equal(subset[0][1], cohort.persons.slice(2 * BLOCK, BLOCK))


def test_a_block_does_not_depend_on_n_beyond_it(simulator) -> None:
    """Block b's stream is keyed by (seed, b): a larger cohort shares its full blocks."""
    small = simulator.simulate(2 * BLOCK, SEED)
    large = simulator.simulate(N, SEED)
    assert_frame_equal(small.persons, large.persons.slice(0, 2 * BLOCK))
    assert_frame_equal(small.events,
                       large.events.filter(pl.col("person_id") <= 2 * BLOCK))


def test_different_seeds_give_different_cohorts(simulator, cohort) -> None:
    other = simulator.simulate(N, SEED + 1)
    assert other.persons.height == cohort.persons.height
    assert not other.persons.equals(cohort.persons)
    assert not other.events.equals(cohort.events)
    # Not merely reordered: no person keeps a continuous draw (age) of the other seed.
    assert not (other.persons.get_column("age") == cohort.persons.get_column("age")).any()
    # Blocks of one seed are independent streams, not copies of each other.
    ages = cohort.persons.get_column("age").to_numpy()
    firsts = [ages[start:start + 100] for start in range(0, N, BLOCK)]
    for i in range(len(firsts)):
        for j in range(i + 1, len(firsts)):
            assert not (firsts[i] == firsts[j]).any(), f"blocks {i} and {j} share draws"


def test_in_memory_cohort_equals_the_one_streamed_to_disk(simulator, cohort, tmp_path) -> None:
    directory = simulator.simulate_to(tmp_path / "cohort", N, SEED)
    read = Cohort.read(directory)
    assert_frame_equal(read.persons, cohort.persons)
    assert_frame_equal(read.events, cohort.events)
    assert read.fingerprint() == cohort.fingerprint()
    # Writing the in-memory cohort and reading it back also round-trips.
    written = Cohort.read(cohort.write(tmp_path / "written"))
    assert_frame_equal(written.persons, cohort.persons)
    assert_frame_equal(written.events, cohort.events)


def test_manifest_records_what_made_the_cohort(simulator, cohort, tmp_path) -> None:
    directory = simulator.simulate_to(tmp_path / "cohort", N, SEED)
    on_disk = json.loads((directory / MANIFEST_FILE).read_text())
    expected_hash = simulator.scenario.content_hash()
    for manifest in (on_disk, cohort.manifest.model_dump()):
        assert manifest["seed"] == SEED
        assert manifest["n_persons"] == N
        assert manifest["scenario_hash"] == expected_hash
        assert manifest["scenario_name"] == "full"
        assert manifest["block_size"] == BLOCK
        assert manifest["generator"] == "MarkovSimulator"
    assert on_disk["n_events"] == cohort.events.height
    assert len(expected_hash) == 64


def test_block_size_is_part_of_the_definition(full_scenario, cohort) -> None:
    """Another block size draws other streams (so the manifest must record it)."""
    other = MarkovSimulator(full_scenario, block_size=BLOCK * 2).simulate(N, SEED)
    assert not other.persons.equals(cohort.persons)
    assert other.manifest.model_dump()["block_size"] == 2 * BLOCK


def test_scenario_hash_ignores_layout_but_not_content(full_scenario_dict) -> None:
    from trajectories.scenario import scenario_from_dict

    reordered = dict(reversed(list(full_scenario_dict.items())))
    assert (scenario_from_dict(reordered).content_hash()
            == scenario_from_dict(full_scenario_dict).content_hash())
    changed = {**full_scenario_dict, "description": "another"}
    assert (scenario_from_dict(changed).content_hash()
            != scenario_from_dict(full_scenario_dict).content_hash())


def test_fixed_site_sizes_are_exact_across_blocks(make_scenario) -> None:
    sizes = {"A": 700, "B": 500, "C": 300}
    scenario = make_scenario(
        [{"from": "a", "to": "d", "hazard": {"family": "exponential", "rate": 0.01}}],
        sites=[{"name": name, "size": size} for name, size in sizes.items()],
    )
    simulator = MarkovSimulator(scenario, block_size=400)
    cohort = simulator.simulate(seed=3)
    expected = [name for name, size in sizes.items() for _ in range(size)]
    assert cohort.persons.get_column("site").to_list() == expected
    block = simulator.simulate_block(1, sum(sizes.values()), 3)[0]
    assert_frame_equal(block, cohort.persons.slice(400, 400))
    with pytest.raises(TrajectoriesError, match="site sizes summing to 1500"):
        simulator.simulate(1000, seed=3)


@pytest.mark.parametrize(("n", "seed"), [(0, 1), (-5, 1), (10, -1)])
def test_bad_n_or_seed_is_a_user_error(simulator, n, seed) -> None:
    with pytest.raises(TrajectoriesError, match="n must|seed must"):
        simulator.simulate(n, seed)
