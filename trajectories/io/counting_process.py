"""Old home of the counting-process loader, kept for one release: import from
:mod:`trajectories.io.table.counting_process` (or :mod:`trajectories.io.table`) instead."""

from trajectories.io.table.counting_process import (  # noqa: F401
    ENTRY_RULES,
    WHAT,
    from_counting_process,
)
