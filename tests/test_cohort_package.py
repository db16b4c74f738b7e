"""The data-model package: read_cohort / scan_cohort, the shared queries, the one initial-state
helper, the version at the ground floor, and the old import paths kept for one release."""

from __future__ import annotations

import tomllib
from pathlib import Path

import polars as pl
import pytest
from conftest import WELL_ILL_DEAD, named

import trajectories
from trajectories import Cohort, CohortSchemaError, read_cohort, scan_cohort
from trajectories.cohort import (
    STATE_PREFIX,
    DirectoryBlocks,
    PartitionedCohort,
    death_states,
    initial_states,
    site_subset,
    state_names,
    with_initial_state,
)
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.sharded import simulate_sharded

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = named(WELL_ILL_DEAD, "package_test")


@pytest.fixture(scope="module")
def simulator() -> MarkovSimulator:
    return MarkovSimulator(scenario_from_dict(SCENARIO), block_size=100)


@pytest.fixture(scope="module")
def cohort(simulator) -> Cohort:
    return simulator.simulate(250, seed=3)


@pytest.fixture(scope="module")
def single(cohort, tmp_path_factory) -> Path:
    return cohort.write(tmp_path_factory.mktemp("single") / "cohort")


@pytest.fixture(scope="module")
def partitioned(simulator, tmp_path_factory) -> Path:
    return simulate_sharded(simulator, tmp_path_factory.mktemp("parts") / "cohort", n=250,
                            seed=3)


def test_read_cohort_is_eager_for_single_files_and_opens_a_partitioned_directory(
    cohort, single, partitioned
):
    read = read_cohort(single)
    assert isinstance(read, Cohort) and read.events.equals(cohort.events)
    opened = read_cohort(partitioned)
    assert isinstance(opened, PartitionedCohort) and opened.n_blocks == 3
    assert opened.collect().events.equals(Cohort.read(partitioned).events)


def test_read_cohort_passes_check_through(cohort, single, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("manifest.json", "persons.parquet"):
        (broken / name).write_bytes((single / name).read_bytes())
    cohort.events.reverse().write_parquet(broken / "events.parquet")
    with pytest.raises(CohortSchemaError, match="time order"):
        read_cohort(broken)
    assert read_cohort(broken, check=False).events.height == cohort.events.height


def test_scan_cohort_never_loads_the_cohort(single, partitioned, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("scan_cohort loaded the cohort")

    monkeypatch.setattr(Cohort, "read", refuse)
    monkeypatch.setattr(PartitionedCohort, "collect", refuse)
    scanned = scan_cohort(single)
    assert isinstance(scanned, DirectoryBlocks) and scanned.streams
    assert scanned.n_persons == 250
    assert isinstance(scan_cohort(partitioned), PartitionedCohort)


def test_the_queries(cohort):
    assert state_names(cohort) == ["well", "ill", "dead"]
    assert state_names(cohort, cohort) == ["well", "ill", "dead"]
    assert death_states(cohort) == ["dead"]
    assert initial_states(cohort) == ["well"]
    assert site_subset(cohort, None) is cohort
    site = cohort.persons["site"][0]
    subset = site_subset(cohort, site)
    assert subset.n_persons == (cohort.persons["site"] == site).sum()
    assert set(subset.events["person_id"]) <= set(subset.persons["person_id"])


def test_with_initial_state_adds_the_state_first_or_refuses():
    events = pl.DataFrame({"person_id": [1, 2], "time": [0.0, 3.0],
                           "code": [STATE_PREFIX + "a", "visit:x"], "__order__": [0, 1]})
    persons = pl.DataFrame({"person_id": [1, 2, 3]})
    added = with_initial_state(events, persons, "b", ValueError)
    assert added.filter(pl.col("__order__") == -1).sort("person_id")["person_id"].to_list() \
        == [2, 3]
    assert set(added["code"]) == {"state:a", "visit:x", "state:b"}
    assert with_initial_state(events, persons.head(1), None, ValueError) is events
    with pytest.raises(ValueError) as raised:
        with_initial_state(events, persons, None, lambda ids: ValueError(ids.to_list()))
    assert raised.value.args == ([2, 3],)


def test_the_version_lives_at_the_ground_floor():
    from trajectories._version import __version__

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert __version__ == pyproject["project"]["version"] == trajectories.__version__


def test_old_import_paths_still_work():
    import trajectories.cohort.blocks as blocks
    import trajectories.cohort.partitioned as partitioned
    from trajectories import cohort_blocks
    from trajectories.simulate import sharded

    assert cohort_blocks.cohort_blocks is blocks.cohort_blocks
    assert cohort_blocks.DirectoryBlocks is blocks.DirectoryBlocks
    for name in ("PartitionedCohort", "read_partitioned", "is_partitioned", "ShardedRunError"):
        assert getattr(sharded, name) is getattr(partitioned, name)


def test_overwriting_a_partitioned_directory_replaces_its_layout(simulator, cohort, tmp_path):
    directory = simulate_sharded(simulator, tmp_path / "cohort", n=250, seed=3)
    (directory / "notes.txt").write_text("mine")
    small = simulator.simulate(40, seed=9)
    small.write(directory, overwrite=True)
    assert sorted(p.name for p in directory.iterdir()) == [
        "events.parquet", "manifest.json", "notes.txt", "persons.parquet"]
    read = read_cohort(directory)
    assert isinstance(read, Cohort) and read.n_persons == 40
    assert read.events.equals(small.events)
