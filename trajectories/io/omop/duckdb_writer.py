"""Write a cohort as an OMOP CDM v5.4 DuckDB database file (embedded, no server needed).

Tables are created from the shipped specification's DDL (NOT NULL as ``isRequired``), then
filled block by block of persons; the file appears under its name only once complete. Rows go
in as Arrow tables of exactly one DuckDB row group each (the rest of a block waits for the
next one): DuckDB then writes each row group once, where appends of other sizes leave partial
row groups that cost a rewrite at checkpoint and a third more file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import duckdb
import pyarrow as pa

from trajectories import progress
from trajectories.cohort.blocks import CohortSource, cohort_blocks
from trajectories.io.omop.spec import EXPORT_TABLES, OmopError, ddl
from trajectories.io.omop.tables import omop_blocks

BLOCK_VIEW = "_trajectories_omop_block"
ROW_GROUP_ROWS = 122_880
"""DuckDB's row group size (rows): every insert but each table's last is exactly one."""


def _prepare(path: Path, overwrite: bool) -> Path:
    """Refuse an existing file unless ``overwrite``; return the temporary path to build in."""
    if path.is_dir():
        raise OmopError(f"{path}: is a directory; give a DuckDB file path")
    if path.exists() and not overwrite:
        raise OmopError(f"{path}: file exists; choose another or pass --overwrite (overwrite=True)")
    if not path.parent.is_dir():
        raise OmopError(f"{path.parent}: directory does not exist")
    partial = path.with_name(path.name + ".partial")
    for stale in (partial, partial.with_name(partial.name + ".wal")):
        stale.unlink(missing_ok=True)
    return partial


class _RowGroups:
    """Rows waiting to go into each table, handed out a whole DuckDB row group at a time."""

    def __init__(self) -> None:
        self.waiting: dict[str, pa.Table] = {}

    def add(self, table: str, rows: pa.Table) -> list[pa.Table]:
        """Append ``rows`` to ``table``'s waiting rows; return the full row groups now ready."""
        waiting = self.waiting.get(table)
        rows = rows if waiting is None else pa.concat_tables([waiting, rows])
        full = rows.num_rows - rows.num_rows % ROW_GROUP_ROWS
        self.waiting[table] = rows.slice(full)
        return [rows.slice(start, ROW_GROUP_ROWS) for start in range(0, full, ROW_GROUP_ROWS)]

    def rest(self) -> dict[str, pa.Table]:
        """The last rows of every table (less than a row group each)."""
        return {table: rows for table, rows in self.waiting.items() if rows.num_rows}


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    con.register(BLOCK_VIEW, rows)
    con.execute(f'INSERT INTO "{table}" SELECT * FROM {BLOCK_VIEW}')
    con.unregister(BLOCK_VIEW)


def write_duckdb(
    source: CohortSource,
    path: str | Path,
    *,
    batch_size: int = 50_000,
    overwrite: bool = False,
    float_type: str = "DOUBLE",
) -> dict[str, int]:
    """Export a cohort (in memory, or a cohort directory streamed block by block) to the
    DuckDB file ``path``; return rows written per table.

    Every table of :data:`EXPORT_TABLES` exists afterwards, empty ones included. Only one
    block's tables (and less than a row group per table) are in memory at a time.
    ``float_type`` is the SQL type of CDM ``float`` columns (DOUBLE by default; "NUMERIC" is
    DuckDB's DECIMAL(18,3)).
    """
    path = Path(path)
    blocks = cohort_blocks(source)
    partial = _prepare(path, overwrite)
    counts = dict.fromkeys(EXPORT_TABLES, 0)
    total = 1 + math.ceil(blocks.n_persons / max(batch_size, 1))
    groups = _RowGroups()
    try:
        with duckdb.connect(str(partial)) as con:
            con.execute(ddl(float_type=float_type))
            for block in progress.track(
                omop_blocks(blocks, batch_size), total=total, description="OMOP -> DuckDB"
            ):
                for table, frame in block.items():
                    if frame.height:
                        for rows in groups.add(table, frame.to_arrow()):
                            _insert(con, table, rows)
                        counts[table] += frame.height
            for table, rows in groups.rest().items():
                _insert(con, table, rows)
            con.execute("CHECKPOINT")
    except duckdb.Error as error:
        partial.unlink(missing_ok=True)
        raise OmopError(f"{path}: DuckDB export failed: {error}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if overwrite:
        path.with_name(path.name + ".wal").unlink(missing_ok=True)
    os.replace(partial, path)
    return counts
