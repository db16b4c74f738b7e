"""Write a cohort as OMOP CDM v5.4 tables in a PostgreSQL schema, through psycopg's COPY.

All of it is one transaction: the schema (when new), the tables (DDL from the shipped
specification) and every block of rows become visible together at commit, and any failure
(a refused row, a lost connection, an exception in the caller's process) rolls everything
back, so a reader sees either nothing (or, with ``overwrite``, the previous tables) or the
whole export. Rows stream block by block of persons, each table's block sent as CSV that
polars writes in one go; only one block is ever in memory.
"""

from __future__ import annotations

import io
import math

import polars as pl
import psycopg
from psycopg import sql

from trajectories import progress
from trajectories.cohort.blocks import CohortSource, cohort_blocks
from trajectories.io.omop.postgres import (
    check_schema,
    check_url,
    connect,
    existing_tables,
    qualified,
    shown_url,
)
from trajectories.io.omop.spec import EXPORT_TABLES, OmopError, cdm_spec, sql_type
from trajectories.io.omop.tables import omop_blocks

FLOAT_TYPE = "DOUBLE PRECISION"
"""SQL type of CDM ``float`` columns: exact float64 values (upstream's NUMERIC would store
the decimal text, and reads back as Decimal)."""
COPY_CHUNK_ROWS = 100_000
"""Rows per CSV chunk handed to COPY: bounds the text held at once, whatever the block size."""
TABLE_KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
               "f": "foreign table"}


def create_table(schema: str, table: str) -> sql.Composed:
    """``CREATE TABLE "schema"."table"`` with the specification's columns, types and NOT NULL."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            sql.Identifier(field.name),
            sql.SQL(sql_type(field, FLOAT_TYPE)),  # a fixed type name from spec.sql_type
            sql.SQL(" NOT NULL" if field.required else ""),
        )
        for field in cdm_spec()[table]
    )
    return sql.SQL("CREATE TABLE {} ({})").format(qualified(schema, table), columns)


def _prepare(con: psycopg.Connection, schema: str, overwrite: bool) -> None:
    """Create ``schema`` if missing; refuse CDM tables already there unless ``overwrite``,
    then drop them (inside the export's transaction, so a failure restores them)."""
    con.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    found = existing_tables(con, schema, EXPORT_TABLES)
    if not found:
        return
    if not overwrite:
        raise OmopError(
            f"schema {schema!r} already holds CDM table(s) {sorted(found)}; choose another "
            "schema or pass --overwrite (overwrite=True) to replace them"
        )
    others = {name: kind for name, kind in found.items() if kind not in ("r", "p")}
    if others:
        described = ", ".join(f"{name} ({TABLE_KINDS.get(k, k)})" for name, k in others.items())
        raise OmopError(
            f"schema {schema!r}: {described} is not a table; overwrite replaces tables only"
        )
    for table in found:
        con.execute(sql.SQL("DROP TABLE {}").format(qualified(schema, table)))


def _copy(con: psycopg.Connection, schema: str, table: str, frame: pl.DataFrame) -> None:
    """Append ``frame`` to ``schema.table`` through ``COPY ... FROM STDIN (FORMAT csv)``.

    polars writes NULL as an unquoted empty field and an empty string as ``""``, which is
    exactly how PostgreSQL's CSV format tells them apart; dates and timestamps are ISO text.
    (The end-of-data line ``\\.`` cannot occur: every CDM table has several columns.)
    """
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        qualified(schema, table), sql.SQL(", ").join(map(sql.Identifier, frame.columns))
    )
    buffer = io.BytesIO()
    with con.cursor() as cur, cur.copy(statement) as copy:
        for offset in range(0, frame.height, COPY_CHUNK_ROWS):
            buffer.seek(0)
            buffer.truncate()
            frame.slice(offset, COPY_CHUNK_ROWS).write_csv(
                buffer,
                include_header=False,
                date_format="%Y-%m-%d",
                datetime_format="%Y-%m-%d %H:%M:%S%.6f",
            )
            copy.write(buffer.getbuffer())


def write_postgres(
    source: CohortSource,
    url: str,
    schema: str,
    *,
    batch_size: int = 50_000,
    overwrite: bool = False,
) -> dict[str, int]:
    """Export a cohort (in memory, or a cohort directory streamed block by block) to the CDM
    tables of ``schema`` in the database at ``url``; return rows written per table.

    The schema is created when missing; CDM tables already in it are refused unless
    ``overwrite``, which replaces them (other tables of the schema, a vocabulary say, stay).
    Every table of :data:`EXPORT_TABLES` exists afterwards, empty ones included.
    """
    url, schema = check_url(url), check_schema(schema)
    counts = dict.fromkeys(EXPORT_TABLES, 0)
    blocks = cohort_blocks(source)
    total = 1 + math.ceil(blocks.n_persons / max(batch_size, 1))
    table = None
    with connect(url) as con:
        try:
            with con.transaction():
                _prepare(con, schema, overwrite)
                for table in EXPORT_TABLES:
                    con.execute(create_table(schema, table))
                for block in progress.track(
                    omop_blocks(blocks, batch_size), total=total,
                    description="OMOP -> PostgreSQL",
                ):
                    for table, frame in block.items():
                        if frame.height:
                            _copy(con, schema, table, frame)
                            counts[table] += frame.height
                table = None
                for name in EXPORT_TABLES:  # statistics for the first queries (the checks)
                    con.execute(sql.SQL("ANALYZE {}").format(qualified(schema, name)))
        except psycopg.Error as error:
            where = f"{schema}.{table}" if table else f"schema {schema!r}"
            raise OmopError(
                f"{shown_url(url)}: PostgreSQL export failed at {where}, nothing was written: "
                f"{error}"
            ) from None
    return counts
