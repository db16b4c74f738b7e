"""Write a cohort as OMOP CDM v5.4 Parquet: one file per table, ``<directory>/<table>.parquet``.

Each file is written block by block of persons through a pyarrow ``ParquetWriter`` whose
schema comes from the specification (int32, float64, date32, timestamp[us], string;
required columns non-nullable), so empty tables still carry their full schema.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trajectories import progress
from trajectories.cohort import prepare_output_directory
from trajectories.cohort.blocks import CohortSource, cohort_blocks
from trajectories.io.omop.spec import EXPORT_TABLES, OmopError, arrow_schema
from trajectories.io.omop.tables import omop_blocks


def parquet_path(directory: str | Path, table: str) -> Path:
    """Where the Parquet file of ``table`` lives in an export directory."""
    return Path(directory) / f"{table}.parquet"


def _prepare(directory: Path, overwrite: bool) -> None:
    prepare_output_directory(directory, overwrite,
                             owned=[f"{table}.parquet" for table in EXPORT_TABLES],
                             error=OmopError)


def write_parquet(
    source: CohortSource,
    directory: str | Path,
    *,
    batch_size: int = 50_000,
    overwrite: bool = False,
    compression: str = "zstd",
) -> dict[str, int]:
    """Export a cohort (in memory, or a cohort directory streamed block by block) to one
    Parquet file per CDM table; return rows written per table."""
    directory = Path(directory)
    blocks = cohort_blocks(source)
    _prepare(directory, overwrite)
    schemas = {table: arrow_schema(table) for table in EXPORT_TABLES}
    writers: dict[str, pq.ParquetWriter] = {}
    counts = dict.fromkeys(EXPORT_TABLES, 0)
    total = 1 + math.ceil(blocks.n_persons / max(batch_size, 1))
    try:
        for table in EXPORT_TABLES:
            writers[table] = pq.ParquetWriter(
                parquet_path(directory, table), schemas[table], compression=compression
            )
        for block in progress.track(
            omop_blocks(blocks, batch_size), total=total, description="OMOP -> Parquet"
        ):
            for table, frame in block.items():
                if frame.height:
                    writers[table].write_table(frame.to_arrow().cast(schemas[table]))
                    counts[table] += frame.height
    except (OSError, pa.ArrowException) as error:
        _abandon(writers, directory)
        raise OmopError(f"{directory}: Parquet export failed: {error}") from None
    except BaseException:
        _abandon(writers, directory)
        raise
    for writer in writers.values():
        writer.close()
    return counts


def _abandon(writers: dict[str, pq.ParquetWriter], directory: Path) -> None:
    """Close and delete the files of a failed export, so no half-written table remains."""
    for table, writer in writers.items():
        writer.close()
        parquet_path(directory, table).unlink(missing_ok=True)
