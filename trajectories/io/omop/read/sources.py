"""Where the CDM tables come from: the :class:`OmopSource` interface (``columns`` and
``read``) and its readers for a Parquet directory, a DuckDB file and a PostgreSQL database; any
other database plugs in by implementing it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from trajectories.errors import OmopImportError


@runtime_checkable
class OmopSource(Protocol):
    """Reads CDM tables: ``columns`` lists a table's columns (None if it does not exist) and
    ``read`` returns those columns as a polars frame. ``name`` appears in error messages."""

    name: str

    def columns(self, table: str) -> list[str] | None: ...

    def read(self, table: str, columns: Sequence[str]) -> pl.DataFrame: ...

    def close(self) -> None: ...


class ParquetSource:
    """A directory of ``<table>.parquet`` files (as :func:`write_parquet` makes)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.name = str(self.directory)

    def _path(self, table: str) -> Path:
        return self.directory / f"{table}.parquet"

    def _names(self, table: str) -> dict[str, str] | None:
        """Lower-cased column name -> the name in the file; None if there is no file."""
        path = self._path(table)
        if not path.is_file():
            return None
        try:
            return {name.lower(): name for name in pq.read_schema(path).names}
        except (OSError, pa.ArrowException) as error:
            raise OmopImportError(f"{path}: unreadable Parquet: {error}") from None

    def columns(self, table: str) -> list[str] | None:
        names = self._names(table)
        return None if names is None else list(names)

    def read(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        names = self._names(table) or {}
        try:
            frame = pl.read_parquet(self._path(table), columns=[names.get(c, c) for c in columns])
        except (OSError, pl.exceptions.PolarsError) as error:
            raise OmopImportError(f"{self._path(table)}: cannot read: {error}") from None
        return frame.rename({name: name.lower() for name in frame.columns})

    def close(self) -> None:
        return None


def _quoted(identifier: str) -> str:
    """A SQL identifier in double quotes, embedded quotes doubled (DuckDB, standard SQL)."""
    return '"' + identifier.replace('"', '""') + '"'


class DuckDBSource:
    """A DuckDB database file, read only; ``schema`` is the CDM schema (default ``main``)."""

    def __init__(self, path: str | Path, schema: str | None = None) -> None:
        import duckdb

        self.path, self.schema = Path(path), schema or "main"
        self.name = f"{self.path} (schema {self.schema})"
        try:
            self.connection = duckdb.connect(str(self.path), read_only=True)
        except duckdb.Error as error:
            raise OmopImportError(f"{self.path}: cannot open as DuckDB: {error}") from None

    def columns(self, table: str) -> list[str] | None:
        found = self.connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND "
            "lower(table_name) = ? ORDER BY ordinal_position",
            [self.schema, table],
        ).fetchall()
        return [row[0].lower() for row in found] or None

    def read(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        import duckdb

        names = ", ".join(_quoted(c) for c in columns)
        try:
            result = self.connection.sql(
                f"SELECT {names} FROM {_quoted(self.schema)}.{_quoted(table)}")
            return pl.from_arrow(result.to_arrow_table())
        except duckdb.Error as error:
            raise OmopImportError(f"{self.name}: cannot read table {table}: {error}") from None

    def close(self) -> None:
        self.connection.close()


class PostgresSource:
    """A PostgreSQL database (URL), CDM tables in ``schema`` (default ``public``)."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        from trajectories.io.omop.postgres import check_schema, check_url, shown_url

        self.url, self.schema = check_url(url), check_schema(schema or "public")
        self.name = f"{shown_url(url)} (schema {self.schema})"

    def columns(self, table: str) -> list[str] | None:
        from trajectories.io.omop.postgres import connect

        with connect(self.url, autocommit=True, read_only=True) as con:
            found = con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND lower(table_name) = %s ORDER BY ordinal_position", (self.schema, table),
            ).fetchall()
        return [row[0].lower() for row in found] or None

    def read(self, table: str, columns: Sequence[str]) -> pl.DataFrame:
        from trajectories.io.omop.postgres import read_omop_postgres

        frame = read_omop_postgres(self.url, self.schema, table)
        return frame.rename({c: c.lower() for c in frame.columns}).select(columns)

    def close(self) -> None:
        return None


def open_source(source: str | Path | OmopSource, schema: str | None = None) -> OmopSource:
    """A reader for ``source``: a Parquet directory, a DuckDB file, a PostgreSQL URL
    (``postgresql://...``), or a reader."""
    if isinstance(source, OmopSource):
        return source
    if isinstance(source, str) and source.startswith(("postgresql://", "postgres://")):
        return PostgresSource(source, schema)
    path = Path(source)
    if path.is_dir():
        if schema is not None:
            raise OmopImportError(f"{path}: a Parquet directory has no schema (got {schema!r})")
        return ParquetSource(path)
    if path.is_file():
        return DuckDBSource(path, schema)
    raise OmopImportError(f"{path}: no such DuckDB file or Parquet directory")
