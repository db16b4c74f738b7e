"""Sharded simulation: one Parquet file per block, written by any executor, resumable.

The directory layout and its reading live in the data model (:mod:`trajectories.cohort.files`,
:mod:`trajectories.cohort.partitioned`); this module writes it. A block's files depend only on
(scenario, n, seed, block size, block), never on the worker or executor that wrote them, so any
number of workers gives the same files. Each file is written under a temporary name and renamed
when complete (``os.replace``): a killed run leaves only complete part files and ``run.json``
(the settings of the unfinished run), and running it again with the same settings redoes the
missing blocks only.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from trajectories._version import __version__
from trajectories.cohort.files import (
    EVENTS_DIR,
    EVENTS_FILE,
    LAYOUT,
    MANIFEST_FILE,
    PARQUET_OPTIONS,
    PERSONS_DIR,
    PERSONS_FILE,
    RUN_FILE,
    RUN_KEYS,
    TMP_SUFFIX,
    file_sha256,
    is_partitioned,
    part_name,
    publish,
    recorded_settings,
    write_manifest_atomically,
    write_text_atomically,
    written_blocks,
)
from trajectories.cohort.partitioned import PartitionedCohort, read_partitioned
from trajectories.cohort.schema import validate_tables
from trajectories.errors import CohortSchemaError, ShardedRunError
from trajectories.parallel import Parallel, parallel_from, run_blocks
from trajectories.scenario import scenario_from_dict
from trajectories.simulate.blocks import block_count
from trajectories.simulate.simulator import MarkovSimulator

__all__ = [  # the reading side is re-exported from the data model, its home
    "BlockJob", "BlockResult", "PartitionedCohort", "ShardedRunError", "is_partitioned",
    "part_name", "read_partitioned", "simulate_sharded", "write_block",
]


# -- one block, on a worker -----------------------------------------------------------------------


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to write one block: plain, picklable data."""

    scenario_json: str
    scenario_hash: str
    block_size: int
    n: int
    seed: int
    block: int
    n_blocks: int
    directory: str
    check: bool = True


@dataclass(frozen=True)
class BlockResult:
    """What a written block holds, for the manifest."""

    block: int
    persons_file: str
    events_file: str
    n_persons: int
    n_events: int
    persons_sha256: str
    events_sha256: str


@functools.lru_cache(maxsize=4)
def _simulator(scenario_json: str, scenario_hash: str, block_size: int) -> MarkovSimulator:
    """The worker's simulator for a scenario (built once per process and scenario)."""
    scenario = scenario_from_dict(json.loads(scenario_json), source="<sharded run>")
    if scenario.content_hash() != scenario_hash:
        raise ShardedRunError(
            f"scenario {scenario.name!r} changed in transit to the worker (hash "
            f"{scenario.content_hash()[:12]} != {scenario_hash[:12]}): worker and client run "
            "different versions of trajectories?"
        )
    return MarkovSimulator(scenario, block_size=block_size)


def write_block(job: BlockJob) -> BlockResult:
    """Simulate one block and publish its persons and events files (the worker's task).

    The persons file is renamed into place before the events file; a block counts as written
    only when both exist, so a run killed between the two renames redoes the block.
    """
    simulator = _simulator(job.scenario_json, job.scenario_hash, job.block_size)
    persons, events = simulator.simulate_block(job.block, job.n, job.seed)
    if job.check:
        try:
            validate_tables(persons, events)
        except CohortSchemaError as error:
            raise CohortSchemaError(f"block {job.block}: {error}") from None
    directory, name = Path(job.directory), part_name(job.block, job.n_blocks)
    digests = [
        publish(_parquet_bytes(frame), directory / folder / name)
        for frame, folder in ((persons, PERSONS_DIR), (events, EVENTS_DIR))
    ]
    return BlockResult(job.block, f"{PERSONS_DIR}/{name}", f"{EVENTS_DIR}/{name}",
                       persons.height, events.height, *digests)


def _parquet_bytes(frame: pl.DataFrame) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(frame.to_arrow(), sink, **PARQUET_OPTIONS)
    return sink.getvalue()


def _describe_existing(directory: Path, block: int, n_blocks: int) -> BlockResult:
    """The manifest entry of a block an earlier (interrupted) run already wrote."""
    name = part_name(block, n_blocks)
    files = [directory / PERSONS_DIR / name, directory / EVENTS_DIR / name]
    rows = [pq.read_metadata(path).num_rows for path in files]
    digests = [file_sha256(path) for path in files]
    return BlockResult(block, f"{PERSONS_DIR}/{name}", f"{EVENTS_DIR}/{name}", *rows, *digests)


# -- the run --------------------------------------------------------------------------------------


def simulate_sharded(
    simulator: MarkovSimulator,
    directory: str | Path,
    n: int | None = None,
    seed: int = 0,
    *,
    parallel: Parallel | None = None,
    overwrite: bool = False,
    check: bool = True,
    executor: str | None = None,
    workers: int | str | None = None,
    scheduler: str | None = None,
) -> Path:
    """Simulate into a partitioned cohort directory, one file per block; resumes a killed run.

    A directory holding an unfinished run with the same settings (scenario, n, seed, block
    size, package version) is completed: only its missing blocks are simulated; a finished one
    is left as it is. Other settings are refused unless ``overwrite`` (which deletes the
    earlier run's files). Blocks
    run where ``parallel`` says (:class:`trajectories.parallel.Parallel`; on a remote Dask
    cluster ``directory`` must be storage every worker can write; ``executor``/``workers``/
    ``scheduler``: the old separate arguments, for one release). ``check``
    validates each block against the data model before writing it. Returns the directory.
    """
    parallel = parallel_from(parallel, executor, workers, scheduler)
    n = simulator.resolve_n(n, seed)
    settings = _settings(simulator, n, seed)
    directory = Path(directory)
    if not overwrite and _finished(directory, settings):
        return directory
    _prepare(directory, settings, overwrite)
    n_blocks = settings["n_blocks"]
    done = set(written_blocks(directory, n_blocks))
    scenario = simulator.scenario
    # Key order matters to the simulator (the order effects are summed in), so keep it.
    scenario_json = json.dumps(scenario.model_dump(mode="json", by_alias=True))
    jobs = [
        BlockJob(scenario_json, settings["scenario_hash"], simulator.block_size, n, seed, block,
                 n_blocks, str(directory.resolve()), check)
        for block in range(n_blocks)
        if block not in done
    ]
    results = {r.block: r for r in run_blocks(write_block, jobs, parallel,
                                              description="simulating blocks",
                                              count=lambda r: r.n_persons)}
    results.update({b: _describe_existing(directory, b, n_blocks) for b in done})
    blocks = [asdict(results[b]) for b in range(n_blocks)]
    manifest = simulator.manifest_for(
        n, seed, n_events=sum(b["n_events"] for b in blocks), layout=LAYOUT,
        n_blocks=n_blocks, blocks=blocks,
    )
    write_manifest_atomically(manifest, directory)
    (directory / RUN_FILE).unlink(missing_ok=True)
    return directory


def _settings(simulator: MarkovSimulator, n: int, seed: int) -> dict[str, Any]:
    return {
        "generator": simulator.generator_name,
        "package_version": __version__,
        "scenario_name": simulator.scenario.name,
        "scenario_hash": simulator.scenario.content_hash(),
        "n": n,
        "seed": seed,
        "block_size": simulator.block_size,
        "n_blocks": block_count(n, simulator.block_size),
    }


def _finished(directory: Path, settings: dict[str, Any]) -> bool:
    """Whether ``directory`` already holds the finished run of ``settings``, every file there."""
    if not (directory / MANIFEST_FILE).is_file() or (directory / RUN_FILE).exists():
        return False
    if recorded_settings(directory) != settings:
        return False
    return len(list(written_blocks(directory, settings["n_blocks"]))) == settings["n_blocks"]


def _prepare(directory: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Make ``directory`` ready for ``settings``: new, resumable, or cleared if ``overwrite``."""
    if directory.exists() and not directory.is_dir():
        raise ShardedRunError(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        recorded = None if overwrite else recorded_settings(directory)
        if overwrite:
            _clear(directory)
        elif recorded is None:
            raise ShardedRunError(
                f"{directory}: directory is not empty and holds no sharded run to resume; "
                "choose another or pass --overwrite (overwrite=True)"
            )
        elif recorded != settings:
            different = [
                f"{key} {settings[key]!r} (directory has {recorded.get(key)!r})"
                for key in RUN_KEYS if recorded.get(key) != settings[key]
            ] if "layout" not in recorded else ["it holds a single-file cohort"]
            raise ShardedRunError(
                f"{directory}: holds a run with other settings, so its blocks cannot be reused: "
                + "; ".join(different)
                + ". Resume it with the same settings, choose another directory, or pass "
                "--overwrite (overwrite=True) to start again"
            )
    # From here on the directory is an unfinished run until the manifest is written again.
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomically(directory / RUN_FILE, json.dumps(settings, indent=2, sort_keys=True))
    (directory / MANIFEST_FILE).unlink(missing_ok=True)
    _remove_temporaries(directory)
    for folder in (PERSONS_DIR, EVENTS_DIR):
        (directory / folder).mkdir(exist_ok=True)


def _remove_temporaries(directory: Path) -> None:
    """Delete what killed runs left under temporary names (never taken for complete files)."""
    for folder in (directory, directory / PERSONS_DIR, directory / EVENTS_DIR):
        for leftover in folder.glob(f".*{TMP_SUFFIX}") if folder.is_dir() else ():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _clear(directory: Path) -> None:
    """Delete the files a cohort run writes (single-file or partitioned), nothing else."""
    for folder in (PERSONS_DIR, EVENTS_DIR):
        path = directory / folder
        if path.is_dir():
            for entry in path.glob("part-*.parquet"):
                entry.unlink()
    _remove_temporaries(directory)
    for folder in (PERSONS_DIR, EVENTS_DIR):
        path = directory / folder
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for name in (MANIFEST_FILE, RUN_FILE, PERSONS_FILE, EVENTS_FILE):
        (directory / name).unlink(missing_ok=True)
