"""Executors: run one function over many work items on a local process pool or a Dask cluster.

Sharded work (simulation blocks, validation aggregates of a partitioned cohort) goes through
:func:`run_blocks`, so a laptop, a many-core server and a Dask cluster run the same code. The
function must be importable by the workers (a module-level function) and the items picklable
plain data: worker processes are started with ``spawn`` (and Dask workers are other processes,
maybe other machines), so closures, lambdas and open handles do not travel.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TypeVar

from trajectories import progress
from trajectories.errors import ExecutorError

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "dask")
"""``local``: a process pool on this machine; ``dask``: a ``dask.distributed`` cluster."""

AUTO = "auto"


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | str) -> int:
    """``workers`` as a positive count; ``"auto"`` is :func:`available_cores`."""
    if workers == AUTO:
        return available_cores()
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ExecutorError(f"workers must be a positive integer or 'auto', got {workers!r}")
    return workers


@dataclass(frozen=True)
class Parallel:
    """Where sharded work runs, one value for simulation and validation alike.

    ``executor``: ``local`` (in this process when ``workers`` is 1, else a ``spawn`` process
    pool of ``workers`` processes) or ``dask`` (the cluster whose scheduler listens at
    ``scheduler``, e.g. ``tcp://host:8786``, whose own workers run the items; or a
    ``LocalCluster`` of ``workers`` single-threaded processes when ``scheduler`` is None).
    ``workers``: a positive count or ``"auto"`` (:func:`available_cores`).
    """

    executor: str = "local"
    workers: int | str = 1
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ExecutorError(f"executor must be one of {list(EXECUTORS)}, got "
                                f"{self.executor!r}")
        if self.scheduler is not None and self.executor != "dask":
            raise ExecutorError(
                f"a scheduler address ({self.scheduler!r}) only applies to executor 'dask', "
                f"not {self.executor!r}"
            )
        resolve_workers(self.workers)

    @property
    def n_workers(self) -> int:
        """``workers`` as a count."""
        return resolve_workers(self.workers)


SERIAL = Parallel()
"""One process, no pool: the default everywhere."""


def parallel_from(
    parallel: Parallel | str | None = None,
    executor: str | None = None,
    workers: int | str | None = None,
    scheduler: str | None = None,
) -> Parallel:
    """``parallel``, or one built from the separate ``executor``/``workers``/``scheduler``
    arguments that signatures took before :class:`Parallel` (kept for one release, with a
    DeprecationWarning)."""
    if isinstance(parallel, str):  # the old positional executor
        parallel, executor = None, parallel
    if executor is None and workers is None and scheduler is None:
        return SERIAL if parallel is None else parallel
    if parallel is not None:
        raise ExecutorError("give parallel=Parallel(...) or executor/workers/scheduler, not both")
    warnings.warn("executor=/workers=/scheduler= are now one parallel=Parallel(executor, "
                  "workers, scheduler)", DeprecationWarning, stacklevel=3)
    return Parallel(executor or "local", 1 if workers is None else workers, scheduler)


def run_blocks(
    fn: Callable[[T], R],
    items: Iterable[T],
    parallel: Parallel | str | None = None,
    workers: int | str | None = None,
    scheduler: str | None = None,
    description: str = "blocks",
    count: Callable[[R], int] | None = None,
    *,
    executor: str | None = None,
) -> Iterator[R]:
    """Yield ``fn(item)`` for every item, in completion order, where ``parallel`` says.

    Results should say which item they belong to. The first failing item stops the run: items
    not started are cancelled and its exception is raised. Progress (items done, time left,
    and persons per second when ``count`` says how many persons a result holds) goes through
    :func:`trajectories.progress.track`. (``workers``/``scheduler``/``executor``: the old
    separate arguments, see :func:`parallel_from`.)
    """
    parallel = parallel_from(parallel, executor, workers, scheduler)
    n_workers = parallel.n_workers
    items = list(items)
    if parallel.executor == "local":
        results = _run_local(fn, items, n_workers)
    else:
        results = _run_dask(fn, items, n_workers, parallel.scheduler)
    return progress.track(results, total=len(items), description=description, count=count)


def _run_local(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    if workers == 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context)
    pending = {pool.submit(fn, item) for item in items}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BrokenProcessPool:
        raise ExecutorError(
            "a worker process died (killed, or out of memory?); the items already finished are "
            "kept, so running again resumes; fewer workers or smaller blocks use less memory"
        ) from None
    finally:
        # Items not started are dropped; items running finish (each is at most one block).
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(
    fn: Callable[[T], R], items: Sequence[T], workers: int, scheduler: str | None
) -> Iterator[R]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ExecutorError(
            "executor 'dask' needs dask.distributed: pip install 'dask[distributed]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except (OSError, TimeoutError, ValueError) as error:
                raise ExecutorError(
                    f"cannot reach the Dask scheduler at {scheduler!r}: {error}"
                ) from None
        futures = client.map(fn, list(items), pure=False)
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.cancel(futures)
