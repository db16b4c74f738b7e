"""Old home of the measurements loader, kept for one release: import from
:mod:`trajectories.io.table.measurements` (or :mod:`trajectories.io.table`) instead."""

from trajectories.io.table.measurements import (  # noqa: F401
    MEASUREMENT_PREFIX,
    add_measurements,
)
