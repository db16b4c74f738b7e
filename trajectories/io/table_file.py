"""Old home of the table-file readers, kept for one release: import from
:mod:`trajectories.io.table.files` instead."""

from trajectories.io.table.files import (  # noqa: F401
    NULL_TEXT,
    SEPARATORS,
    parse_codes,
    parse_list,
    read_table,
    sex_codes,
)
