"""A cohort seen block by block of persons: from memory, or streamed from a cohort directory.

Exporters walk a cohort one block of persons at a time (persons and exactly their events, in
persons' order), so that a million persons never sit in memory at once. A directory whose
``persons.parquet`` has strictly increasing person_id and whose ``events.parquet`` is sorted
by person_id (as :meth:`Cohort.write` and ``simulate_to`` write them) streams: each block
reads the next persons and, by a person_id range that the row-group statistics prune, their
events, and is checked like :meth:`Cohort.read` checks a whole cohort. Any other directory is
read whole and put in persons' order (the same blocks, at the memory of the whole cohort).
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from trajectories.cohort.core import Cohort
from trajectories.cohort.files import Manifest, cohort_files, is_partitioned
from trajectories.cohort.partitioned import PartitionedCohort, read_partitioned
from trajectories.cohort.schema import check_columns, validate_tables
from trajectories.errors import CohortSchemaError, TrajectoriesError

T = TypeVar("T")
Block = tuple[pl.DataFrame, pl.DataFrame]
"""One block: (persons, their events), events grouped by person in persons' order."""


def _check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise TrajectoriesError(
            f"block_size: must be a positive number of persons, got {block_size}"
        )


class CohortBlocks(ABC):
    """A cohort's manifest and size up front, then its persons and events block by block."""

    manifest: Manifest

    @property
    @abstractmethod
    def n_persons(self) -> int:
        """Number of persons (rows of persons)."""

    @abstractmethod
    def person_column(self, name: str) -> pl.Series:
        """One column of persons, every person, in persons' order."""

    @abstractmethod
    def blocks(self, block_size: int) -> Iterator[Block]:
        """(persons, events) of the next ``block_size`` persons, until every person is seen.

        Every event row lands in exactly one block: the block of its person, or (for an id
        absent from persons) a block whose person_id range covers it, so that checking the
        block finds it.
        """


CohortSource = Cohort | CohortBlocks | str | Path
"""What exporters accept: a cohort in memory, a cohort directory, or blocks already set up."""


class InMemoryBlocks(CohortBlocks):
    """Blocks cut out of a :class:`Cohort` already in memory (slices, no copies when the
    events are sorted by person_id as persons are)."""

    def __init__(self, cohort: Cohort) -> None:
        self.cohort = cohort
        self.manifest = cohort.manifest

    @property
    def n_persons(self) -> int:
        return self.cohort.n_persons

    def person_column(self, name: str) -> pl.Series:
        return self.cohort.persons.get_column(name)

    def _ordered_events(self) -> tuple[pl.DataFrame, pl.Series, pl.Series]:
        """Events grouped by person in persons' order, the persons' sort keys and the events'.

        Sorted ids (the simulator's order) cost nothing; other cohorts are put in persons'
        order once by a stable sort (which keeps each person's time order); events of ids
        absent from persons sort first, into the first block.
        """
        persons, events = self.cohort.persons, self.cohort.events
        ids = persons.get_column("person_id")
        if ids.is_sorted() and events.get_column("person_id").is_sorted():
            return events, ids, events.get_column("person_id")
        position = persons.select(
            "person_id", pl.int_range(pl.len(), dtype=pl.Int64).alias("_pos")
        )
        ordered = (
            events.join(position, on="person_id", how="left", maintain_order="left")
            .with_columns(pl.col("_pos").fill_null(-1))
            .sort("_pos", maintain_order=True)
        )
        return ordered.drop("_pos"), position.get_column("_pos"), ordered.get_column("_pos")

    def blocks(self, block_size: int) -> Iterator[Block]:
        _check_block_size(block_size)
        persons = self.cohort.persons
        events, person_keys, event_keys = self._ordered_events()
        n = persons.height
        for start in range(0, max(n, 1), block_size):  # no persons: one block, for strays
            stop = min(start + block_size, n)
            first = 0 if start == 0 else event_keys.search_sorted(person_keys[start - 1], "right")
            last = (
                events.height if stop == n
                else event_keys.search_sorted(person_keys[stop - 1], "right")
            )
            yield persons.slice(start, stop - start), events.slice(first, last - first)


class DirectoryBlocks(CohortBlocks):
    """Blocks streamed from a cohort directory (single files, or the part files of a sharded
    run); see the module docstring.

    Opening it reads the manifest, the column types and persons.person_id, and checks that
    events.person_id never decreases (one column, a batch at a time).
    """

    streams: bool
    """Whether blocks stream (sorted tables), or come from the whole cohort read at once."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = directory = Path(directory)
        if is_partitioned(directory):
            partitioned = read_partitioned(directory)
            self.manifest = partitioned.manifest
            self.persons_files = partitioned.files("persons")
            self.events_files = partitioned.files("events")
        else:
            persons_path, events_path, self.manifest = cohort_files(directory)
            self.persons_files, self.events_files = [persons_path], [events_path]
        self._in_memory: InMemoryBlocks | None = None
        with self._reading():
            persons = pl.scan_parquet(self.persons_files).head(0).collect()
            events = pl.scan_parquet(self.events_files).head(0).collect()
            try:
                check_columns(persons, events)
            except CohortSchemaError as error:
                raise CohortSchemaError(f"{directory}: {error}") from None
            self._ids = pl.scan_parquet(self.persons_files).select("person_id").collect()
            self._ids = self._ids.to_series()
            self.streams = (
                self._ids.null_count() == 0
                and bool((self._ids.diff().drop_nulls() > 0).all())
                and self._events_sorted()
            )

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Report an unreadable Parquet file as the directory's error."""
        try:
            yield
        except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as error:
            raise CohortSchemaError(f"{self.directory}: unreadable Parquet: {error}") from None

    def _events_sorted(self) -> bool:
        """events.person_id has no null and never decreases (one column, a batch at a time)."""
        previous = None
        batches = (
            batch
            for path in self.events_files
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20,
                                                           columns=["person_id"])
        )
        for batch in batches:
            column = batch.column(0)
            if column.null_count:
                return False
            ids = column.to_numpy()
            if ids.size == 0:
                continue
            if (previous is not None and ids[0] < previous) or bool((np.diff(ids) < 0).any()):
                return False
            previous = ids[-1]
        return True

    def _whole(self) -> InMemoryBlocks:
        if self._in_memory is None:
            self._in_memory = InMemoryBlocks(Cohort.read(self.directory))
        return self._in_memory

    @property
    def n_persons(self) -> int:
        return self._ids.len()

    def person_column(self, name: str) -> pl.Series:
        if name == "person_id":
            return self._ids
        with self._reading():
            return pl.scan_parquet(self.persons_files).select(name).collect().to_series()

    def _block(self, start: int, stop: int) -> Block:
        """Persons ``start:stop`` and the events of ids after the previous block's last person
        up to this block's last (before the first person and after the last: any id)."""
        ids, person_id = self._ids, pl.col("person_id")
        bounds = [pl.lit(True)]
        if start > 0:
            bounds.append(person_id > ids[start - 1])
        if stop < ids.len():
            bounds.append(person_id <= ids[stop - 1])
        with self._reading():
            persons = pl.scan_parquet(self.persons_files).slice(start, stop - start).collect()
            events = pl.scan_parquet(self.events_files).filter(*bounds).collect()
        try:
            validate_tables(persons, events)
        except CohortSchemaError as error:
            raise CohortSchemaError(f"{self.directory}: {error}") from None
        return persons, events

    def blocks(self, block_size: int) -> Iterator[Block]:
        _check_block_size(block_size)
        if not self.streams:
            yield from self._whole().blocks(block_size)
            return
        for start in range(0, max(self.n_persons, 1), block_size):  # no persons: one block
            yield self._block(start, min(start + block_size, self.n_persons))


def cohort_blocks(source: CohortSource) -> CohortBlocks:
    """``source`` as blocks: a :class:`Cohort` in memory, or a cohort directory (streamed)."""
    if isinstance(source, CohortBlocks):
        return source
    if isinstance(source, Cohort):
        return InMemoryBlocks(source)
    if isinstance(source, str | Path):
        return DirectoryBlocks(source)
    raise TypeError(f"expected a Cohort or a cohort directory, got {type(source).__name__}")


def read_cohort(path: str | Path, check: bool = True) -> Cohort | PartitionedCohort:
    """The cohort directory ``path``, eagerly: a :class:`Cohort` in memory, or for a
    partitioned directory its :class:`PartitionedCohort` (read block by block by consumers;
    ``.collect()`` loads it whole). ``check`` as :meth:`Cohort.read`."""
    if is_partitioned(path):
        return read_partitioned(path)
    return Cohort.read(path, check=check)


def scan_cohort(path: str | Path) -> PartitionedCohort | DirectoryBlocks:
    """The cohort directory ``path``, lazily, never loading it whole: a partitioned one as its
    :class:`PartitionedCohort`, a single-file one as :class:`DirectoryBlocks` (streamed when
    sorted by person_id, as this package writes them; else read whole at the first block)."""
    if is_partitioned(path):
        return read_partitioned(path)
    return DirectoryBlocks(path)


_END = object()


def built_ahead(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """``items``, produced in a background thread up to ``depth`` ahead of their consumer.

    Building the next block (polars) then overlaps writing the last one (DuckDB, Parquet,
    COPY), which both release the GIL. An exception in the producer is raised here, at the
    item it stopped at; when the consumer stops early, the producer stops after its item.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                handoff.put((item, None))
                if stop.is_set():
                    return
            handoff.put((_END, None))
        except BaseException as error:  # handed to the consumer, raised there
            handoff.put((_END, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="trajectories-blocks", daemon=True)
    thread.start()
    try:
        while True:
            item, error = handoff.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting to hand over its item
            try:
                handoff.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
