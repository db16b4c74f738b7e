"""Cohort blocks: a cohort directory streamed block by block of persons gives exactly the
cohort's persons and events, checked block by block like Cohort.read; other layouts fall
back to reading the whole cohort; the background builder hands items over in order."""

from __future__ import annotations

import shutil
import threading

import polars as pl
import pytest
from conftest import WELL_ILL_DEAD, named

from trajectories import Cohort, CohortSchemaError
from trajectories.cohort.blocks import (
    DirectoryBlocks,
    InMemoryBlocks,
    built_ahead,
    cohort_blocks,
)
from trajectories.errors import TrajectoriesError
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator

N_PERSONS = 240
SCENARIO = named(WELL_ILL_DEAD, "blocks_test")


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return MarkovSimulator(scenario_from_dict(SCENARIO)).simulate(N_PERSONS, seed=3)


@pytest.fixture(scope="module")
def directory(cohort, tmp_path_factory):
    return cohort.write(tmp_path_factory.mktemp("blocks") / "cohort")


def copy_with(directory, target, persons=None, events=None):
    """A copy of a cohort directory with persons and/or events replaced (written unchecked)."""
    shutil.copytree(directory, target)
    if persons is not None:
        persons.write_parquet(target / "persons.parquet")
    if events is not None:
        events.write_parquet(target / "events.parquet")
    return target


def events_of(cohort: Cohort, persons: pl.DataFrame) -> pl.DataFrame:
    return cohort.events.filter(pl.col("person_id").is_in(persons["person_id"].implode()))


# -- streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1, 37, N_PERSONS, 10_000])
def test_a_sorted_directory_streams_exactly_each_blocks_persons_and_events(
    cohort, directory, block_size
):
    source = cohort_blocks(directory)
    assert isinstance(source, DirectoryBlocks) and source.streams
    assert source.n_persons == N_PERSONS
    assert source.manifest == cohort.manifest
    assert source.person_column("site").equals(cohort.persons["site"])
    blocks = list(source.blocks(block_size))
    memory = list(InMemoryBlocks(cohort).blocks(block_size))
    expected_sizes = [min(block_size, N_PERSONS - s) for s in range(0, N_PERSONS, block_size)]
    assert [p.height for p, _ in blocks] == expected_sizes
    for (persons, events), (persons_m, events_m) in zip(blocks, memory, strict=True):
        assert persons.equals(persons_m) and events.equals(events_m)
        # only this block's events, all of them: nothing of the rest of the file is kept
        assert events.equals(events_of(cohort, persons))
    assert pl.concat([p for p, _ in blocks]).equals(cohort.persons)
    assert pl.concat([e for _, e in blocks]).equals(cohort.events)


def test_persons_in_another_order_fall_back_to_the_whole_cohort(cohort, directory, tmp_path):
    """Valid but not sorted by person_id: blocks come from the cohort read whole, in persons'
    order, each with its persons' events in time order."""
    order = pl.col("person_id").hash(seed=2)
    persons = cohort.persons.sort(order)
    events = cohort.events.sort(order, maintain_order=True)
    target = copy_with(directory, tmp_path / "shuffled", persons, events)
    source = DirectoryBlocks(target)
    assert not source.streams
    blocks = list(source.blocks(50))
    assert pl.concat([p for p, _ in blocks]).equals(persons)
    for block_persons, block_events in blocks:
        assert block_events.equals(events_of(Cohort.read(target), block_persons))
    # events sorted although persons are not: the same fallback, the same blocks
    sorted_events = copy_with(directory, tmp_path / "half", persons, cohort.events)
    half = DirectoryBlocks(sorted_events)
    assert not half.streams
    assert [p.equals(q) and e.equals(f) for (p, e), (q, f) in
            zip(half.blocks(50), blocks, strict=True)] == [True] * len(blocks)


def test_a_null_event_person_falls_back_and_is_refused_as_by_cohort_read(
    cohort, directory, tmp_path
):
    events = cohort.events.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("person_id"))
        .alias("person_id"))
    target = copy_with(directory, tmp_path / "null", events=events)
    source = DirectoryBlocks(target)
    assert not source.streams
    with pytest.raises(CohortSchemaError, match=r"events\.person_id: 1 null value"):
        next(source.blocks(100))


# -- checks --------------------------------------------------------------------------------


def test_each_block_is_checked_with_the_message_cohort_read_gives(cohort, directory, tmp_path):
    """An event after the end of follow-up of a person of the third block: two blocks
    stream, then the third raises the same error as reading the whole directory."""
    culprit = cohort.persons.filter(pl.col("exit") != "death").filter(
        pl.col("person_id") > 100)["person_id"][0]
    late = cohort.persons.filter(pl.col("person_id") == culprit).select(
        "person_id", (pl.col("followup_end") + 1).alias("time"),
        pl.lit(None, pl.Float64).alias("end_time"), pl.lit("visit:outpatient").alias("code"),
        pl.lit(None, pl.Float64).alias("value"))
    events = pl.concat([cohort.events, late]).sort("person_id", maintain_order=True)
    target = copy_with(directory, tmp_path / "late", events=events)
    with pytest.raises(CohortSchemaError) as whole:
        Cohort.read(target)
    assert str(culprit) in str(whole.value) and "followup_end" in str(whole.value)
    blocks = DirectoryBlocks(target).blocks(50)
    assert [next(blocks)[0].height, next(blocks)[0].height] == [50, 50]
    with pytest.raises(CohortSchemaError) as streamed:
        next(blocks)
    assert str(streamed.value) == str(whole.value)


@pytest.mark.parametrize("dropped", [1, 51, N_PERSONS])
def test_events_of_an_id_absent_from_persons_are_caught_wherever_it_falls(
    cohort, directory, tmp_path, dropped
):
    """Before the first id, between two blocks (51: the first block of 50 ends at 50, the
    second starts at 52), after the last: every event row belongs to some block, so some
    block's check finds it."""
    persons = cohort.persons.filter(pl.col("person_id") != dropped)
    target = copy_with(directory, tmp_path / f"without_{dropped}", persons=persons)
    source = DirectoryBlocks(target)
    assert source.streams and source.n_persons == N_PERSONS - 1
    pattern = rf"^{target}: events\.person_id: ids absent from persons; 1 person\(s\): {dropped}$"
    with pytest.raises(CohortSchemaError, match=pattern):
        list(source.blocks(50))


def test_unusable_directories_are_refused_naming_the_file(cohort, directory, tmp_path):
    with pytest.raises(CohortSchemaError, match="not a cohort directory, persons.parquet missing"):
        DirectoryBlocks(tmp_path / "nothing")
    broken = copy_with(directory, tmp_path / "manifest")
    (broken / "manifest.json").write_text("{", encoding="utf-8")
    with pytest.raises(CohortSchemaError, match=r"manifest\.json: invalid manifest"):
        DirectoryBlocks(broken)
    typed = copy_with(directory, tmp_path / "typed",
                      events=cohort.events.with_columns(pl.col("time").cast(pl.Float32)))
    with pytest.raises(CohortSchemaError, match=rf"^{typed}: events\.time: expected type"):
        DirectoryBlocks(typed)
    garbage = copy_with(directory, tmp_path / "garbage")
    (garbage / "events.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(CohortSchemaError, match=rf"^{garbage}: unreadable Parquet"):
        DirectoryBlocks(garbage)


def test_sources_and_block_sizes(cohort, directory):
    assert isinstance(cohort_blocks(cohort), InMemoryBlocks)
    assert isinstance(cohort_blocks(str(directory)), DirectoryBlocks)
    given = DirectoryBlocks(directory)
    assert cohort_blocks(given) is given
    with pytest.raises(TypeError, match="cohort directory"):
        cohort_blocks(42)
    for source in (given, cohort_blocks(cohort)):
        with pytest.raises(TrajectoriesError, match="block_size: must be a positive"):
            next(source.blocks(0))


# -- building ahead ----------------------------------------------------------------------------


def test_built_ahead_hands_over_every_item_in_order_from_another_thread():
    threads = []

    def items():
        for i in range(25):
            threads.append(threading.get_ident())
            yield i

    assert list(built_ahead(items(), depth=2)) == list(range(25))
    assert set(threads) == {threads[0]} and threads[0] != threading.get_ident()


def test_built_ahead_raises_the_producers_error_after_its_last_item():
    def items():
        yield from range(3)
        raise ValueError("block 3 is broken")

    seen = []
    with pytest.raises(ValueError, match="block 3 is broken"):
        for item in built_ahead(items()):
            seen.append(item)
    assert seen == [0, 1, 2]


def test_built_ahead_stops_and_closes_the_producer_when_the_consumer_stops():
    produced, closed = [], []

    def items():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.append(True)

    stream = built_ahead(items(), depth=1)
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    # two taken, one waiting in the hand-over, one built while the consumer stopped
    assert closed == [True] and len(produced) <= 4
