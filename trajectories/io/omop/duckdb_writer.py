"""Write a cohort as an OMOP CDM v5.4 DuckDB database file (embedded, no server needed).

Tables are created from the shipped specification's DDL (NOT NULL as ``isRequired``), then
filled block by block of persons; the file appears under its name only once complete.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import duckdb

from trajectories import progress
from trajectories.cohort import Cohort
from trajectories.io.omop.spec import EXPORT_TABLES, OmopError, ddl
from trajectories.io.omop.tables import omop_blocks

BLOCK_VIEW = "_trajectories_omop_block"


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


def write_duckdb(
    cohort: Cohort,
    path: str | Path,
    *,
    block_size: int = 50_000,
    overwrite: bool = False,
    float_type: str = "DOUBLE",
) -> dict[str, int]:
    """Export ``cohort`` to the DuckDB file ``path``; return rows written per table.

    Every table of :data:`EXPORT_TABLES` exists afterwards, empty ones included. Only one
    block's tables are in memory at a time. ``float_type`` is the SQL type of CDM ``float``
    columns (DOUBLE by default; "NUMERIC" is DuckDB's DECIMAL(18,3)).
    """
    path = Path(path)
    partial = _prepare(path, overwrite)
    counts = dict.fromkeys(EXPORT_TABLES, 0)
    blocks = 1 + math.ceil(cohort.n_persons / max(block_size, 1))
    try:
        with duckdb.connect(str(partial)) as con:
            con.execute(ddl(float_type=float_type))
            for block in progress.track(
                omop_blocks(cohort, block_size), total=blocks, description="OMOP -> DuckDB"
            ):
                for table, frame in block.items():
                    if frame.height == 0:
                        continue
                    con.register(BLOCK_VIEW, frame.to_arrow())
                    con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM {BLOCK_VIEW}')
                    con.unregister(BLOCK_VIEW)
                    counts[table] += frame.height
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
