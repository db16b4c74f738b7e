"""A partitioned cohort (one Parquet file per block, as a sharded run writes it), opened lazily.

The layout's names and checks live in :mod:`trajectories.cohort.files` (below
:class:`~trajectories.cohort.core.Cohort`, whose ``read`` collects such a directory); the
writer is :mod:`trajectories.simulate.sharded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from trajectories.cohort.core import Cohort, collect_partitioned
from trajectories.cohort.files import (
    EVENTS_DIR,
    LAYOUT,
    PERSONS_DIR,
    RUN_FILE,
    Manifest,
    is_partitioned,
    part_files,
    part_name,
    partitioned_manifest,
)
from trajectories.errors import CohortSchemaError, ShardedRunError

__all__ = [
    "EVENTS_DIR", "LAYOUT", "PERSONS_DIR", "RUN_FILE", "PartitionedCohort", "ShardedRunError",
    "is_partitioned", "part_name", "read_partitioned",
]


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
        return part_files(self.directory, self.manifest, table)

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
        return collect_partitioned(self.directory, self.manifest, check=check)


def read_partitioned(directory: str | Path) -> PartitionedCohort:
    """Open a finished partitioned cohort; an unfinished run is refused with what is missing."""
    directory = Path(directory)
    return PartitionedCohort(directory, partitioned_manifest(directory))
