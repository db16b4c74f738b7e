"""Progress reporting that the library may call and only the CLI switches on.

The library never prints: long loops wrap their iterables in :func:`track`, which is a
pass-through unless :func:`enable` was called (the CLI does so).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_enabled = False


def enable(on: bool = True) -> None:
    """Turn progress bars on (the CLI) or off (library default)."""
    global _enabled
    _enabled = on


def track(items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    """Yield ``items``, drawing a rich progress bar on stderr when progress is enabled."""
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

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
