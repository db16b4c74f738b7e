"""OMOP CDM on PostgreSQL: URL and schema validation, connections, the conformance checks and
reading a table back into polars.

Names never reach SQL as raw text: schemas, tables and columns go through
``psycopg.sql.Identifier`` (or :func:`conformance.quote_ident` in the shared check SQL) and
values through query parameters. Messages show the URL without its password.
"""

from __future__ import annotations

import io
import re
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from trajectories.io.omop.conformance import (
    CheckResult,
    Dialect,
    Thresholds,
    run_checks,
)
from trajectories.io.omop.spec import EXPORT_TABLES, CdmField, OmopError, cdm_spec

URL_SCHEMES = ("postgresql://", "postgres://")
MAX_IDENTIFIER_BYTES = 63
"""PostgreSQL's NAMEDATALEN - 1: longer names would be cut silently, so they are refused."""
CONNECT_TIMEOUT_S = 10
"""Used unless the URL sets ``connect_timeout``: an unreachable host fails instead of hanging."""


# -- validation ---------------------------------------------------------------------------------

def shown_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages."""
    url = re.sub(r"(://[^/@:?]*):[^@/?]*@", r"\1:***@", str(url))
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


def check_url(url: str) -> str:
    """``url`` if it is a parseable ``postgresql://`` (or ``postgres://``) URL, else
    :class:`OmopError`."""
    if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
        raise OmopError(
            f"{shown_url(url)!r}: not a PostgreSQL URL; expected "
            "postgresql://user[:password]@host[:port]/database"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as error:
        raise OmopError(f"{shown_url(url)}: invalid PostgreSQL URL: {error}") from None
    for port in str(params.get("port", "")).split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise OmopError(f"{shown_url(url)}: invalid PostgreSQL URL: port {port!r}")
    return url


def check_schema(schema: str) -> str:
    """``schema`` if PostgreSQL can hold it as a user schema name, else :class:`OmopError`.

    Any other text is allowed (case kept, quotes and semicolons included): it is only ever
    used quoted.
    """
    if not isinstance(schema, str) or not schema:
        raise OmopError(f"schema: expected a non-empty name, got {schema!r}")
    if "\x00" in schema:
        raise OmopError(f"schema {schema!r}: contains a NUL character")
    if len(schema.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise OmopError(
            f"schema {schema!r}: longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte name limit"
        )
    if schema.startswith("pg_") or schema == "information_schema":
        raise OmopError(f"schema {schema!r}: reserved for PostgreSQL's system schemas")
    return schema


# -- connections --------------------------------------------------------------------------------

def connect(url: str, *, autocommit: bool = False, read_only: bool = False) -> psycopg.Connection:
    """A psycopg connection to ``url`` (UTF-8, exact float text), or :class:`OmopError`."""
    params: dict[str, Any] = conninfo_to_dict(check_url(url))
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    params["client_encoding"] = "utf8"
    params.setdefault("application_name", "trajectories")
    try:
        con = psycopg.connect(autocommit=autocommit, **params)
    except psycopg.Error as error:
        raise OmopError(f"{shown_url(url)}: cannot connect to PostgreSQL: {error}") from None
    try:
        con.execute("SET extra_float_digits = 1")  # shortest text that reads back exactly
        if read_only:
            con.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        if not autocommit:
            con.commit()  # the settings stay; the caller's first statement opens a transaction
    except psycopg.Error as error:
        con.close()
        raise OmopError(f"{shown_url(url)}: cannot set up the session: {error}") from None
    return con


def qualified(schema: str, table: str) -> sql.Composed:
    """``"schema"."table"``, both quoted."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def existing_tables(con: psycopg.Connection, schema: str, tables: tuple[str, ...]) -> dict:
    """Which of ``tables`` exist in ``schema``: name -> pg_class.relkind (``r`` a table,
    ``p`` a partitioned table, ``v`` a view...)."""
    rows = con.execute(
        "SELECT c.relname, c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
        [schema, list(tables)],
    ).fetchall()
    return dict(rows)


def schema_exists(con: psycopg.Connection, schema: str) -> bool:
    return con.execute(
        "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = %s", [schema]
    ).fetchone()[0] == 1


# -- conformance --------------------------------------------------------------------------------

def _type_matches(field: CdmField, actual: str) -> bool:
    """Whether a PostgreSQL ``information_schema`` data_type holds the specification's type."""
    actual = actual.lower()
    if field.datatype == "integer":
        return actual == "integer"
    if field.datatype == "float":
        return actual in ("double precision", "real", "numeric")
    if field.datatype == "date":
        return actual == "date"
    if field.datatype == "datetime":
        return actual == "timestamp without time zone"
    return actual in ("character varying", "text")


def _make_date(year: str, month: str, day: str) -> str:
    """A date, NULL where year/month/day name none (make_date itself would raise)."""
    last_day = f"extract(day FROM make_date(CAST({year} AS integer), CAST({month} AS integer), 1)"
    last_day += " + INTERVAL '1 month' - INTERVAL '1 day')"
    return (
        f"CASE WHEN {year} BETWEEN 1 AND 9999 AND {month} BETWEEN 1 AND 12 AND {day} BETWEEN 1 "
        f"AND 31 THEN CASE WHEN {day} <= {last_day} THEN make_date(CAST({year} AS integer), "
        f"CAST({month} AS integer), CAST({day} AS integer)) END END"
    )


POSTGRES = Dialect("PostgreSQL", "%s", (psycopg.Error,), _type_matches, _make_date)


def check_omop_postgres(
    url: str,
    schema: str = "public",
    *,
    thresholds: Thresholds = "strict",
    tables: tuple[str, ...] = EXPORT_TABLES,
) -> list[CheckResult]:
    """Run the conformance checks (the same SQL as on DuckDB) on the CDM tables in ``schema``
    of the PostgreSQL database at ``url``, through a read-only session."""
    schema = check_schema(schema)
    with connect(url, autocommit=True, read_only=True) as con:
        return run_checks(con, POSTGRES, schema=schema, thresholds=thresholds, tables=tables)


# -- reading back -------------------------------------------------------------------------------

EPOCH_DAYS = "CAST({} - DATE '1970-01-01' AS integer)"
EPOCH_MICROS = "CAST(extract(epoch FROM {}) * 1000000 AS bigint)"

COLUMN_READERS: dict[str, tuple[str, pl.DataType, pl.DataType | None]] = {
    "integer": ("{}", pl.Int32(), None),
    "smallint": ("{}", pl.Int16(), None),
    "bigint": ("{}", pl.Int64(), None),
    "double precision": ("{}", pl.Float64(), None),
    "real": ("{}", pl.Float64(), None),
    "numeric": ("{}", pl.Float64(), None),
    "date": (EPOCH_DAYS, pl.Int32(), pl.Date()),
    "timestamp without time zone": (EPOCH_MICROS, pl.Int64(), pl.Datetime("us")),
    "timestamp with time zone": (EPOCH_MICROS, pl.Int64(), pl.Datetime("us", "UTC")),
    "boolean": ("CAST({} AS integer)", pl.Int8(), pl.Boolean()),
}
"""data_type -> (SQL around the quoted column, type of its CSV text, final polars type).
Dates and timestamps travel as epoch days / microseconds: exact and free of DateStyle.
Other types are read as text."""


def _order_by(table: str, columns: list[str]) -> list[str]:
    """The specification's primary key of ``table``, else person_id, when present: rows come
    back in the order the exporter wrote them, not in whatever order the heap holds."""
    keys = [f.name for f in cdm_spec().get(table, ()) if f.primary_key]
    return [k for k in keys if k in columns] or [c for c in ("person_id",) if c in columns]


def read_omop_postgres(url: str, schema: str, table: str) -> pl.DataFrame:
    """Table ``schema.table`` of the database at ``url`` as a polars frame, columns in table
    order, ordered by its primary key; one ``COPY ... TO STDOUT`` read by polars' CSV reader.

    Types: integer Int32, bigint Int64, double/numeric Float64, date Date, timestamp
    Datetime("us"), text String (the same as DuckDB's export read with ``.pl()``).
    """
    schema = check_schema(schema)
    with connect(url, autocommit=True, read_only=True) as con:
        try:
            rows = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE "
                "table_schema = %s AND table_name = %s ORDER BY ordinal_position",
                [schema, table],
            ).fetchall()
            if not rows:
                raise OmopError(
                    f"{schema}.{table}: no such table (or no columns) in {shown_url(url)}"
                )
            names = [name for name, _ in rows]
            readers = [COLUMN_READERS.get(dtype, ("CAST({} AS text)", pl.String(), None))
                       for _, dtype in rows]
            select = sql.SQL(", ").join(
                sql.SQL(template).format(sql.Identifier(name))
                for name, (template, *_) in zip(names, readers, strict=True)
            )
            query = sql.SQL("SELECT {} FROM {}").format(select, qualified(schema, table))
            order = _order_by(table, names)
            if order:
                query += sql.SQL(" ORDER BY {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, order))
                )
            buffer = io.BytesIO()
            with con.cursor() as cur, cur.copy(
                sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)
            ) as copy:
                for data in copy:
                    buffer.write(data)
        except psycopg.Error as error:
            raise OmopError(
                f"{schema}.{table}: cannot read from {shown_url(url)}: {error}"
            ) from None
    text_schema = {name: reader[1] for name, reader in zip(names, readers, strict=True)}
    if buffer.tell() == 0:
        frame = pl.DataFrame(schema=text_schema)
    else:
        buffer.seek(0)
        # PostgreSQL writes NULL as an unquoted empty field and '' as "": polars reads the
        # first as null and the second as an empty string, so both survive
        frame = pl.read_csv(buffer, has_header=False, schema=text_schema)
    casts = [pl.col(name).cast(reader[2]) for name, reader in zip(names, readers, strict=True)
             if reader[2] is not None]
    return frame.with_columns(casts) if casts else frame
