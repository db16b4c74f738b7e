"""Sharded simulation: identical files whatever the executor, safe kills, exact resumes.

One worker in process, four local processes and a Dask LocalCluster with two workers must
write byte-identical part files; a run killed mid-block (SIGKILL between two renames) or
stopped by a failing block resumes to the very files of an uninterrupted run, redoing only
the missing blocks, and never takes a leftover temporary file for a complete one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trajectories.cohort import MANIFEST_FILE, Cohort
from trajectories.cohort.files import RUN_FILE, part_name
from trajectories.cohort.partitioned import PartitionedCohort, is_partitioned, read_partitioned
from trajectories.errors import ShardedRunError
from trajectories.parallel import ExecutorError, Parallel, run_blocks
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.sharded import simulate_sharded

N, BLOCK, SEED = 2_300, 300, 11  # eight blocks, the last one short
N_BLOCKS = 8


@pytest.fixture(scope="module")
def simulator() -> MarkovSimulator:
    return MarkovSimulator("oncology_nsclc_two_arm", block_size=BLOCK)


@pytest.fixture(scope="module")
def reference(simulator, tmp_path_factory) -> Path:
    """An uninterrupted run in this process: what every other run must reproduce."""
    return simulate_sharded(simulator, tmp_path_factory.mktemp("reference"), n=N, seed=SEED)


def files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative name -> bytes), manifest.json excluded."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }


def manifest(directory: Path) -> dict:
    """manifest.json without its creation time (the one field that records when, not what)."""
    data = json.loads((directory / MANIFEST_FILE).read_text())
    data.pop("created")
    return data


def test_the_reference_run_is_complete_and_equals_the_in_memory_cohort(simulator, reference):
    names = [part_name(b, N_BLOCKS) for b in range(N_BLOCKS)]
    expected = {f"{table}/{name}" for table in ("persons", "events") for name in names}
    assert set(files(reference)) == expected  # no run.json, no temporary file left
    meta = manifest(reference)
    assert (meta["n_persons"], meta["seed"], meta["block_size"], meta["n_blocks"]) == (
        N, SEED, BLOCK, N_BLOCKS)
    assert meta["scenario_hash"] == simulator.scenario.content_hash()
    assert [b["n_persons"] for b in meta["blocks"]] == [BLOCK] * 7 + [N - 7 * BLOCK]
    for block in meta["blocks"]:  # the recorded digests are those of the files on disk
        for table in ("persons", "events"):
            data = (reference / block[f"{table}_file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == block[f"{table}_sha256"]

    dataset = read_partitioned(reference)
    in_memory = simulator.simulate(N, SEED)
    cohort = dataset.collect()
    assert_frame_equal(cohort.persons, in_memory.persons)
    assert_frame_equal(cohort.events, in_memory.events)
    assert meta["n_events"] == in_memory.events.height == sum(
        b["n_events"] for b in meta["blocks"])
    # The lazy view reads the same rows; a single block is its persons' slice of the cohort.
    assert dataset.events().select(pl.len()).collect().item() == in_memory.events.height
    block = dataset.block(3, check=True)
    ids = block.persons.get_column("person_id")
    assert (ids.min(), ids.max()) == (3 * BLOCK + 1, 4 * BLOCK)
    assert_frame_equal(block.events, in_memory.events.filter(
        pl.col("person_id").is_between(3 * BLOCK + 1, 4 * BLOCK)))


@pytest.mark.parametrize(("executor", "workers"), [("local", 4), ("dask", 2)])
def test_workers_and_executors_write_byte_identical_files(
    simulator, reference, tmp_path, executor, workers
):
    out = simulate_sharded(simulator, tmp_path / "out", n=N, seed=SEED,
                           parallel=Parallel(executor, workers))
    assert files(out) == files(reference)
    assert manifest(out) == manifest(reference)


KILLER = """
import os, signal, sys
from trajectories.simulate import MarkovSimulator
from trajectories.cohort.files import part_name
from trajectories.simulate import sharded

real_replace = os.replace

def replace(source, target):
    # Die like a killed job: after block {victim}'s persons file is in place and its events
    # file is written under its temporary name, before that one is renamed.
    if str(target).endswith("events/" + part_name({victim}, {n_blocks})):
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, target)

os.replace = replace
simulator = MarkovSimulator("oncology_nsclc_two_arm", block_size={block})
sharded.simulate_sharded(simulator, sys.argv[1], n={n}, seed={seed})
"""


def test_a_killed_run_resumes_to_the_same_files(simulator, reference, tmp_path, monkeypatch):
    out, victim = tmp_path / "killed", 3
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER.format(victim=victim, n_blocks=N_BLOCKS,
                                                    block=BLOCK, n=N, seed=SEED)))
    finished = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                              timeout=120)
    assert finished.returncode == -9, finished.stderr.decode()[-2000:]

    # What the kill left: whole blocks before the victim, the victim's persons file, its
    # events file only under a temporary name, the run's settings and no manifest.
    left = files(out)
    temporaries = [name for name in left if name.endswith(".tmp")]
    assert len(temporaries) == 1 and temporaries[0].startswith(f"events/.{part_name(victim, 8)}")
    assert f"persons/{part_name(victim, N_BLOCKS)}" in left
    assert f"events/{part_name(victim, N_BLOCKS)}" not in left
    assert RUN_FILE in left and not (out / MANIFEST_FILE).exists()
    assert is_partitioned(out)
    with pytest.raises(ShardedRunError, match=r"unfinished sharded run \(3 of 8 blocks"):
        read_partitioned(out)
    with pytest.raises(ShardedRunError, match=r"seed 12 \(directory has 11\)"):
        simulate_sharded(simulator, out, n=N, seed=SEED + 1)

    done = record_simulated_blocks(monkeypatch)
    simulate_sharded(simulator, out, n=N, seed=SEED)
    assert sorted(done) == list(range(victim, N_BLOCKS))  # only the missing blocks
    assert files(out) == files(reference)
    assert manifest(out) == manifest(reference)


def record_simulated_blocks(monkeypatch) -> list[int]:
    """Make this process's simulator note every block it simulates (workers=1 runs here)."""
    done: list[int] = []
    original = MarkovSimulator.simulate_block

    def simulate_block(self, block, n, seed):
        done.append(block)
        return original(self, block, n, seed)

    monkeypatch.setattr(MarkovSimulator, "simulate_block", simulate_block)
    return done


def test_a_failing_block_stops_the_run_and_a_rerun_completes_it(
    simulator, reference, tmp_path, monkeypatch
):
    out = tmp_path / "failed"
    original = MarkovSimulator.simulate_block

    def failing(self, block, n, seed):
        if block == 5:
            raise RuntimeError("disk full (injected)")
        return original(self, block, n, seed)

    monkeypatch.setattr(MarkovSimulator, "simulate_block", failing)
    with pytest.raises(RuntimeError, match="injected"):
        simulate_sharded(simulator, out, n=N, seed=SEED)
    assert sorted(p.name for p in (out / "events").iterdir()) == [
        part_name(b, N_BLOCKS) for b in range(5)]
    assert not (out / MANIFEST_FILE).exists()

    monkeypatch.undo()
    done = record_simulated_blocks(monkeypatch)
    simulate_sharded(simulator, out, n=N, seed=SEED)
    assert sorted(done) == [5, 6, 7]
    assert files(out) == files(reference)

    # Running a finished directory again simulates nothing and changes no file.
    done.clear()
    before = (out / MANIFEST_FILE).read_bytes()
    simulate_sharded(simulator, out, n=N, seed=SEED)
    assert done == [] and files(out) == files(reference)
    assert (out / MANIFEST_FILE).read_bytes() == before
    # A part file lost from a finished run is simulated again, and only that one.
    (out / "events" / part_name(2, N_BLOCKS)).unlink()
    with pytest.raises(ShardedRunError, match="1 part file.s. listed in manifest.json are missing"):
        read_partitioned(out)
    simulate_sharded(simulator, out, n=N, seed=SEED)
    assert done == [2] and files(out) == files(reference)


def test_other_settings_and_foreign_directories_are_refused(simulator, reference, tmp_path):
    with pytest.raises(ShardedRunError, match=r"n 2400 \(directory has 2300\)"):
        simulate_sharded(simulator, reference, n=N + 100, seed=SEED)
    other_blocks = MarkovSimulator(simulator.scenario, block_size=BLOCK * 2)
    with pytest.raises(ShardedRunError, match="block_size 600 .directory has 300."):
        simulate_sharded(other_blocks, reference, n=N, seed=SEED)

    single = simulator.simulate(50, SEED).write(tmp_path / "single")
    with pytest.raises(ShardedRunError, match="single-file cohort"):
        simulate_sharded(simulator, single, n=N, seed=SEED)
    with pytest.raises(ShardedRunError, match="not a partitioned cohort"):
        read_partitioned(single)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ShardedRunError, match="holds no sharded run"):
        simulate_sharded(simulator, tmp_path / "other", n=N, seed=SEED)

    # overwrite replaces the single-file cohort by the partitioned one, and keeps foreign files
    (single / "notes.txt").write_text("mine")
    simulate_sharded(simulator, single, n=N, seed=SEED, overwrite=True)
    assert files(single) == {**files(reference), "notes.txt": b"mine"}
    assert isinstance(read_partitioned(single).collect(check=False), Cohort)


def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative item {x}")
    return x * x


def test_run_blocks_returns_every_result_and_raises_the_first_failure():
    assert sorted(run_blocks(square, range(6), Parallel(workers=2))) == [0, 1, 4, 9, 16, 25]
    assert list(run_blocks(square, [3], Parallel("local", "auto"))) == [9]
    with pytest.raises(ValueError, match="negative item -1"):
        list(run_blocks(square, [1, -1, 2], Parallel(workers=2)))
    with pytest.raises(ExecutorError, match="executor must be one of"):
        Parallel("spark")
    with pytest.raises(ExecutorError, match="only applies to executor 'dask'"):
        Parallel(scheduler="tcp://localhost:8786")
    with pytest.raises(ExecutorError, match="positive integer or 'auto'"):
        Parallel(workers=0)
    # the separate arguments of before still work for one release, with a warning
    with pytest.warns(DeprecationWarning, match="now one parallel=Parallel"):
        assert sorted(run_blocks(square, range(3), workers=2)) == [0, 1, 4]
    with pytest.warns(DeprecationWarning), pytest.raises(ExecutorError, match="executor must"):
        run_blocks(square, [1], executor="spark")
    with pytest.raises(ExecutorError, match="not both"):
        run_blocks(square, [1], Parallel(workers=2), workers=2)


def test_describe_sums_the_blocks_to_the_in_memory_summary(reference, monkeypatch):
    from typer.testing import CliRunner

    from trajectories.cli import app
    from trajectories.summary import summarize

    dataset = read_partitioned(reference)
    whole, by_blocks = summarize(dataset.collect()), summarize(dataset)
    for table in ("sites", "codes", "followup", "states", "exits"):
        assert_frame_equal(getattr(whole, table), getattr(by_blocks, table), check_exact=False,
                           rel_tol=1e-12)
    assert by_blocks.sites["persons"].sum() == N
    monkeypatch.setattr(PartitionedCohort, "collect",
                        lambda self, check=True: pytest.fail("the cohort was collected"))
    result = CliRunner().invoke(app, ["describe", str(reference)])
    assert result.exit_code == 0, result.output
    events = sum(b["n_events"] for b in dataset.blocks)
    assert f"{N:,} persons, {events:,} events" in " ".join(result.output.split())


def test_the_progress_bar_shows_blocks_persons_per_second_and_time_left(
        simulator, tmp_path, capsys):
    from trajectories import progress

    progress.enable(True)
    try:
        simulate_sharded(simulator, tmp_path / "shown", n=900, seed=SEED)
    finally:
        progress.enable(False)
    shown = capsys.readouterr().err
    assert "simulating blocks" in shown and "3/3" in shown
    assert "persons/s" in shown and "0:00:00" in shown
