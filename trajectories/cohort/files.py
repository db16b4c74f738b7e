"""A cohort on disk: file names of both layouts, the manifest, output folders, atomic publish.

A single-file cohort is ``persons.parquet``, ``events.parquet`` and ``manifest.json``; a
partitioned one (a sharded run) is::

    persons/part-00000.parquet ...   one file per block of persons
    events/part-00000.parquet ...    the events of the same persons
    manifest.json                    written last: the run's settings and every block's file,
                                     with its SHA-256

Files are written under a temporary name and renamed into place when complete, so a reader
never takes a half-written file for a whole one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from trajectories._version import __version__
from trajectories.errors import CohortSchemaError, ShardedRunError, TrajectoriesError

PERSONS_FILE, EVENTS_FILE, MANIFEST_FILE = "persons.parquet", "events.parquet", "manifest.json"
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3}

PERSONS_DIR, EVENTS_DIR = "persons", "events"
RUN_FILE = "run.json"
"""Settings of a sharded run in progress; removed once ``manifest.json`` is in place."""
LAYOUT = "partitioned"
TMP_SUFFIX = ".tmp"
RUN_KEYS = ("generator", "package_version", "scenario_name", "scenario_hash", "n", "seed",
            "block_size", "n_blocks")
"""What must match for a directory's blocks to be reused by a new run."""


FINGERPRINT_WITHHELD = "dp-withheld"
"""``reference_fingerprint`` of cohorts from a differentially private model: the reference's
hash is not a private release, so it is withheld (and a split cannot be checked against it)."""


class Manifest(BaseModel):
    """Provenance of a cohort; generators may add their own keys (a partitioned cohort's
    ``blocks`` list each block's files, rows and SHA-256)."""

    model_config = ConfigDict(extra="allow")

    package_version: str
    generator: str
    created: str
    n_persons: int
    seed: int | None = None
    scenario_name: str | None = None
    scenario_hash: str | None = None
    reference_fingerprint: str | None = None
    reference_split: dict[str, Any] | None = None
    """How the reference was split before fitting, ``{"fraction": f, "seed": s}``: the generator
    saw only the train part of :func:`trajectories.cohort.split.holdout_split`, and validation
    recomputes the holdout part as the privacy measures' control. None: fitted on all of it."""

    @classmethod
    def new(cls, generator: str, n_persons: int, **fields: Any) -> Manifest:
        """A manifest stamped with this package's version and the current UTC time."""
        created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        return cls(
            package_version=__version__,
            generator=generator,
            created=created,
            n_persons=n_persons,
            **fields,
        )


def synthetic_interval_note(manifest: Manifest) -> str | None:
    """What a confidence interval computed on a cohort simulated from a fitted model is worth
    (None for a cohort not made from a fitted model)."""
    extra = manifest.model_extra or {}
    n_reference = extra.get("n_reference") or (extra.get("replicate") or {}).get("n_reference")
    if not n_reference:
        return None
    replicate = extra.get("replicate")
    made = (f"replicate {replicate['index']} of {replicate['m']} ({replicate['draws']} draws)"
            if replicate else "one cohort")
    return (f"this synthetic cohort ({made}, {manifest.n_persons:,} persons) comes from a model "
            f"fitted to {n_reference:,} real persons: a confidence interval computed on it alone "
            "is not a population interval (it ignores the real data's sampling error, and at "
            "10x the real size covers the truth about half the time); simulate replicates "
            "(trajectories simulate --model M --replicates 5) and combine them (trajectories "
            "analyze DIR --hazard-ratio ...)")


# -- a single-file cohort -------------------------------------------------------------------------


def cohort_files(directory: Path) -> tuple[Path, Path, Manifest]:
    """The persons and events files of a (single-file) cohort directory, and its manifest;
    a missing file or an invalid manifest is an error naming it."""
    paths = [directory / name for name in (PERSONS_FILE, EVENTS_FILE, MANIFEST_FILE)]
    for path in paths:
        if not path.is_file():
            raise CohortSchemaError(f"{directory}: not a cohort directory, {path.name} missing")
    try:
        manifest = Manifest.model_validate_json(paths[2].read_text(encoding="utf-8"))
    except ValueError as error:
        raise CohortSchemaError(f"{paths[2]}: invalid manifest: {error}") from None
    return paths[0], paths[1], manifest


# -- a partitioned cohort -------------------------------------------------------------------------


def part_name(block: int, n_blocks: int) -> str:
    """File name of ``block``: zero-padded so that names sort in block order."""
    width = max(5, len(str(max(n_blocks - 1, 0))))
    return f"part-{block:0{width}d}.parquet"


def is_partitioned(directory: str | Path) -> bool:
    """Whether ``directory`` looks like a partitioned cohort (finished or not)."""
    directory = Path(directory)
    return (directory / PERSONS_DIR).is_dir() and (directory / EVENTS_DIR).is_dir()


def part_files(directory: Path, manifest: Manifest, table: str) -> list[Path]:
    """The part files of ``table`` ("persons" or "events") listed in ``manifest``, in order."""
    return [directory / b[f"{table}_file"] for b in (manifest.model_extra or {}).get("blocks", [])]


def recorded_settings(directory: Path) -> dict[str, Any] | None:
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


def written_blocks(directory: Path, n_blocks: int) -> Iterator[int]:
    """Blocks whose persons and events files are both in place (renamed, hence complete)."""
    persons = {p.name for p in (directory / PERSONS_DIR).glob("part-*.parquet")}
    events = {p.name for p in (directory / EVENTS_DIR).glob("part-*.parquet")}
    for block in range(n_blocks):
        name = part_name(block, n_blocks)
        if name in persons and name in events:
            yield block


def partitioned_manifest(directory: Path) -> Manifest:
    """The manifest of a finished partitioned cohort, every listed part file checked present;
    an unfinished run is refused with what is missing."""
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        if (directory / RUN_FILE).is_file():
            settings = recorded_settings(directory) or {}
            total = settings.get("n_blocks") or 0
            written = len(list(written_blocks(directory, total)))
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
    missing = [str(p) for table in (PERSONS_DIR, EVENTS_DIR)
               for p in part_files(directory, manifest, table) if not p.is_file()]
    if missing:
        raise ShardedRunError(
            f"{directory}: {len(missing)} part file(s) listed in {MANIFEST_FILE} are missing, "
            f"e.g. {missing[0]}; run the same simulate command again to rewrite them"
        )
    return manifest


# -- writing --------------------------------------------------------------------------------------


COHORT_OUTPUTS = (PERSONS_FILE, EVENTS_FILE, MANIFEST_FILE, PERSONS_DIR, EVENTS_DIR, RUN_FILE)
"""What a cohort directory of either layout holds: a new cohort replaces all of it."""


def prepare_output_directory(
    directory: str | Path,
    overwrite: bool,
    owned: Iterable[str | Path] = COHORT_OUTPUTS,
    error: type[TrajectoriesError] = CohortSchemaError,
) -> Path:
    """Create ``directory``; refuse a non-empty one unless ``overwrite``, then delete the files
    and folders ``owned`` (paths relative to it) that a previous output of the same kind left
    there (a cohort written over a partitioned one loses its ``persons/`` and ``events/``)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise error(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        if not overwrite:
            raise error(
                f"{directory}: directory is not empty; choose another or pass --overwrite "
                "(overwrite=True)"
            )
        for name in owned:
            path = directory / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_manifest(manifest: Manifest, directory: Path) -> None:
    """Write ``manifest.json`` with sorted keys, so equal manifests give equal files."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    (directory / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")


def publish(data: Any, path: Path) -> str:
    """Write ``data`` (bytes or a buffer) to a temporary name beside ``path``, flush it to
    disk, rename; its SHA-256."""
    temporary = _temporary(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return hashlib.sha256(memoryview(data)).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomically(path: Path, text: str) -> None:
    """``text`` and a newline into ``path``, through a temporary sibling and one rename."""
    temporary = _temporary(path)
    try:
        temporary.write_text(text + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_manifest_atomically(manifest: Manifest, directory: Path) -> None:
    """:func:`write_manifest` into a scratch folder, then one rename."""
    scratch = directory / f".manifest-{uuid.uuid4().hex}{TMP_SUFFIX}"
    scratch.mkdir()
    try:
        write_manifest(manifest, scratch)
        os.replace(scratch / MANIFEST_FILE, directory / MANIFEST_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
