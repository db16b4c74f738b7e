"""Sharded simulation: one Parquet file per block, written by any executor, resumable.

Layout of a partitioned cohort directory::

    persons/part-00000.parquet ...   one file per block of persons
    events/part-00000.parquet ...    the events of the same persons
    manifest.json                    written last: the run's settings and every block's file

A block's files depend only on (scenario, n, seed, block size, block), never on the worker or
executor that wrote them, so any number of workers gives the same files. Each file is written
under a temporary name and renamed when complete (``os.replace``): a killed run leaves only
complete part files and ``run.json`` (the settings of the unfinished run), and running it again
with the same settings redoes the missing blocks only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from trajectories.cohort import (
    EVENTS_FILE,
    MANIFEST_FILE,
    PARQUET_OPTIONS,
    PERSONS_FILE,
    Cohort,
    Manifest,
    validate_tables,
    write_manifest,
)
from trajectories.errors import CohortSchemaError, TrajectoriesError
from trajectories.parallel import run_blocks
from trajectories.scenario import scenario_from_dict
from trajectories.simulate.blocks import block_count
from trajectories.simulate.simulator import MarkovSimulator

PERSONS_DIR, EVENTS_DIR = "persons", "events"
RUN_FILE = "run.json"
"""Settings of a run in progress; removed once ``manifest.json`` is in place."""
LAYOUT = "partitioned"
TMP_SUFFIX = ".tmp"
RUN_KEYS = ("generator", "package_version", "scenario_name", "scenario_hash", "n", "seed",
            "block_size", "n_blocks")
"""What must match for a directory's blocks to be reused by a new run."""


class ShardedRunError(TrajectoriesError):
    """A partitioned cohort directory cannot be written, resumed or read as asked."""


# -- naming ---------------------------------------------------------------------------------------


def part_name(block: int, n_blocks: int) -> str:
    """File name of ``block``: zero-padded so that names sort in block order."""
    width = max(5, len(str(max(n_blocks - 1, 0))))
    return f"part-{block:0{width}d}.parquet"


def is_partitioned(directory: str | Path) -> bool:
    """Whether ``directory`` looks like a partitioned cohort (finished or not)."""
    directory = Path(directory)
    return (directory / PERSONS_DIR).is_dir() and (directory / EVENTS_DIR).is_dir()


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
        _publish(_parquet_bytes(frame), directory / folder / name)
        for frame, folder in ((persons, PERSONS_DIR), (events, EVENTS_DIR))
    ]
    return BlockResult(job.block, f"{PERSONS_DIR}/{name}", f"{EVENTS_DIR}/{name}",
                       persons.height, events.height, *digests)


def _parquet_bytes(frame: pl.DataFrame) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(frame.to_arrow(), sink, **PARQUET_OPTIONS)
    return sink.getvalue()


def _publish(data: pa.Buffer | bytes, path: Path) -> str:
    """Write ``data`` to a temporary name beside ``path``, flush it to disk, rename; its SHA-256.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return hashlib.sha256(memoryview(data)).hexdigest()


def _describe_existing(directory: Path, block: int, n_blocks: int) -> BlockResult:
    """The manifest entry of a block an earlier (interrupted) run already wrote."""
    name = part_name(block, n_blocks)
    files = [directory / PERSONS_DIR / name, directory / EVENTS_DIR / name]
    rows, digests = [], []
    for path in files:
        rows.append(pq.read_metadata(path).num_rows)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda h=handle: h.read(1 << 24), b""):
                digest.update(chunk)
        digests.append(digest.hexdigest())
    return BlockResult(block, f"{PERSONS_DIR}/{name}", f"{EVENTS_DIR}/{name}", *rows, *digests)


# -- the run --------------------------------------------------------------------------------------


def simulate_sharded(
    simulator: MarkovSimulator,
    directory: str | Path,
    n: int | None = None,
    seed: int = 0,
    *,
    executor: str = "local",
    workers: int | str = 1,
    scheduler: str | None = None,
    overwrite: bool = False,
    check: bool = True,
) -> Path:
    """Simulate into a partitioned cohort directory, one file per block; resumes a killed run.

    A directory holding an unfinished run with the same settings (scenario, n, seed, block
    size, package version) is completed: only its missing blocks are simulated; a finished one
    is left as it is. Other settings are refused unless ``overwrite`` (which deletes the
    earlier run's files). Blocks
    are spread over ``workers`` with ``executor`` (see :func:`trajectories.parallel.run_blocks`;
    on a remote Dask cluster ``directory`` must be storage every worker can write). ``check``
    validates each block against the data model before writing it. Returns the directory.
    """
    n = simulator.resolve_n(n, seed)
    settings = _settings(simulator, n, seed)
    directory = Path(directory)
    if not overwrite and _finished(directory, settings):
        return directory
    _prepare(directory, settings, overwrite)
    n_blocks = settings["n_blocks"]
    done = set(_written_blocks(directory, n_blocks))
    scenario = simulator.scenario
    # Key order matters to the simulator (the order effects are summed in), so keep it.
    scenario_json = json.dumps(scenario.model_dump(mode="json", by_alias=True))
    jobs = [
        BlockJob(scenario_json, settings["scenario_hash"], simulator.block_size, n, seed, block,
                 n_blocks, str(directory.resolve()), check)
        for block in range(n_blocks)
        if block not in done
    ]
    results = {r.block: r for r in run_blocks(write_block, jobs, executor, workers, scheduler,
                                              description="simulating blocks",
                                              count=lambda r: r.n_persons)}
    results.update({b: _describe_existing(directory, b, n_blocks) for b in done})
    blocks = [asdict(results[b]) for b in range(n_blocks)]
    manifest = simulator.manifest_for(
        n, seed, n_events=sum(b["n_events"] for b in blocks), layout=LAYOUT,
        n_blocks=n_blocks, blocks=blocks,
    )
    _write_manifest_atomically(manifest, directory)
    (directory / RUN_FILE).unlink(missing_ok=True)
    return directory


def _settings(simulator: MarkovSimulator, n: int, seed: int) -> dict[str, Any]:
    from trajectories import __version__

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


def _recorded_settings(directory: Path) -> dict[str, Any] | None:
    """Settings of the run that wrote ``directory`` (from run.json or manifest.json), if any."""
    run_file, manifest_file = directory / RUN_FILE, directory / MANIFEST_FILE
    for path in (run_file, manifest_file):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ShardedRunError(
                f"{path}: unreadable ({error}); pass overwrite=True (--overwrite) to start again"
            ) from None
        if path == manifest_file:
            if data.get("layout") != LAYOUT:
                return {"layout": "single-file cohort"}
            data = {**data, "n": data.get("n_persons")}
        return {key: data.get(key) for key in RUN_KEYS}
    return None


def _finished(directory: Path, settings: dict[str, Any]) -> bool:
    """Whether ``directory`` already holds the finished run of ``settings``, every file there."""
    if not (directory / MANIFEST_FILE).is_file() or (directory / RUN_FILE).exists():
        return False
    if _recorded_settings(directory) != settings:
        return False
    return len(list(_written_blocks(directory, settings["n_blocks"]))) == settings["n_blocks"]


def _prepare(directory: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Make ``directory`` ready for ``settings``: new, resumable, or cleared if ``overwrite``."""
    if directory.exists() and not directory.is_dir():
        raise ShardedRunError(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        recorded = None if overwrite else _recorded_settings(directory)
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
    _write_text_atomically(directory / RUN_FILE, json.dumps(settings, indent=2, sort_keys=True))
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


def _written_blocks(directory: Path, n_blocks: int) -> Iterator[int]:
    """Blocks whose persons and events files are both in place (renamed, hence complete)."""
    persons = {p.name for p in (directory / PERSONS_DIR).glob("part-*.parquet")}
    events = {p.name for p in (directory / EVENTS_DIR).glob("part-*.parquet")}
    for block in range(n_blocks):
        name = part_name(block, n_blocks)
        if name in persons and name in events:
            yield block


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        temporary.write_text(text + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_manifest_atomically(manifest: Manifest, directory: Path) -> None:
    """:func:`~trajectories.cohort.write_manifest` into a scratch folder, then one rename."""
    scratch = directory / f".manifest-{uuid.uuid4().hex}{TMP_SUFFIX}"
    scratch.mkdir()
    try:
        write_manifest(manifest, scratch)
        os.replace(scratch / MANIFEST_FILE, directory / MANIFEST_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionedCohort:
    """A finished partitioned cohort on disk: lazy scans, single blocks, or all of it."""

    directory: Path
    manifest: Manifest

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return list(self.manifest.model_extra.get("blocks", []))

    @property
    def n_persons(self) -> int:
        return self.manifest.n_persons

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def files(self, table: str) -> list[Path]:
        """The part files of ``table`` ("persons" or "events"), in block order."""
        return [self.directory / b[f"{table}_file"] for b in self.blocks]

    def persons(self) -> pl.LazyFrame:
        """All persons as a lazy scan (nothing is read until collected)."""
        return pl.scan_parquet(self.files(PERSONS_DIR))

    def events(self) -> pl.LazyFrame:
        """All events as a lazy scan, grouped by person and in time order within a person."""
        return pl.scan_parquet(self.files(EVENTS_DIR))

    def block(self, index: int, check: bool = False) -> Cohort:
        """Block ``index`` alone as an in-memory Cohort (whole persons: a block never splits
        a person's events); ``check`` validates it against the data model."""
        entry = self.blocks[index]
        persons = pl.read_parquet(self.directory / entry["persons_file"])
        events = pl.read_parquet(self.directory / entry["events_file"])
        manifest = self.manifest.model_copy(update={"n_persons": persons.height})
        try:
            return Cohort(persons, events, manifest, check=check)
        except CohortSchemaError as error:
            raise CohortSchemaError(f"{self.directory} block {index}: {error}") from None

    def collect(self, check: bool = True) -> Cohort:
        """The whole cohort in memory (only for cohorts that fit); the manifest keeps the run's
        provenance but not the block listing, which no longer applies."""
        manifest = Manifest.model_validate({
            k: v for k, v in self.manifest.model_dump().items()
            if k not in ("layout", "blocks", "n_blocks")
        })
        try:
            return Cohort(self.persons().collect(), self.events().collect(), manifest,
                          check=check)
        except CohortSchemaError as error:
            raise CohortSchemaError(f"{self.directory}: {error}") from None


def read_partitioned(directory: str | Path) -> PartitionedCohort:
    """Open a finished partitioned cohort; an unfinished run is refused with what is missing."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        if (directory / RUN_FILE).is_file():
            settings = _recorded_settings(directory) or {}
            total = settings.get("n_blocks") or 0
            written = len(list(_written_blocks(directory, total)))
            raise ShardedRunError(
                f"{directory}: unfinished sharded run ({written} of {total} blocks written); "
                "run the same simulate command again to finish it"
            )
        raise ShardedRunError(f"{directory}: not a cohort directory, {MANIFEST_FILE} missing")
    try:
        manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ShardedRunError(f"{manifest_path}: invalid manifest: {error}") from None
    if (manifest.model_extra or {}).get("layout") != LAYOUT:
        raise ShardedRunError(f"{directory}: not a partitioned cohort (no layout "
                              f"'{LAYOUT}' in {MANIFEST_FILE}); read it with Cohort.read")
    dataset = PartitionedCohort(directory, manifest)
    missing = [str(p) for table in (PERSONS_DIR, EVENTS_DIR) for p in dataset.files(table)
               if not p.is_file()]
    if missing:
        raise ShardedRunError(
            f"{directory}: {len(missing)} part file(s) listed in {MANIFEST_FILE} are missing, "
            f"e.g. {missing[0]}; run the same simulate command again to rewrite them"
        )
    return dataset
