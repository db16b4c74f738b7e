"""Old home of the name rules, kept for one release: import from
:mod:`trajectories.io.table.names` instead."""

from trajectories.io.table.names import (  # noqa: F401
    MAX_LENGTH,
    VALID_NAME,
    changed,
    is_valid_name,
    valid_names,
)
