"""Progress reporting that the library may call and only the CLI switches on.

The library never prints: long loops wrap their iterables in :func:`track`, which is a
pass-through unless :func:`enable` was called (the CLI does so).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_enabled = False


def enable(on: bool = True) -> None:
    """Turn progress bars on (the CLI) or off (library default)."""
    global _enabled
    _enabled = on


def track(
    items: Iterable[T],
    total: int | None = None,
    description: str = "",
    *,
    count: Callable[[T], int] | None = None,
    unit: str = "persons",
) -> Iterator[T]:
    """Yield ``items``, drawing a rich progress bar on stderr when progress is enabled.

    With ``count`` (how many ``unit`` an item holds, e.g. a block's persons) the bar also shows
    the throughput in ``unit`` per second.
    """
    if not _enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if count is not None:
        columns.append(TextColumn("{task.fields[throughput]}"))
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, throughput="")
        done, start = 0, time.perf_counter()
        for item in items:
            yield item
            if count is not None:
                done += count(item)
                rate = done / max(time.perf_counter() - start, 1e-9)
                bar.update(task, throughput=f"{rate:,.0f} {unit}/s")
            bar.advance(task)
