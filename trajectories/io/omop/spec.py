"""The OMOP CDM v5.4 field-level specification shipped with the package, and DDL made from it.

``data/OMOP_CDMv5.4_Field_Level.csv`` holds the upstream rows (OHDSI/CommonDataModel,
Apache-2.0, see ``data/NOTICE``) of the tables the exporter writes, copied byte for byte, so
that column names, order, types and NOT NULL flags come from the specification, not from code.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import polars as pl
import pyarrow as pa

from trajectories.errors import OmopError

SPEC_FILE = "OMOP_CDMv5.4_Field_Level.csv"

EXPORT_TABLES = (
    "person",
    "observation_period",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "death",
    "care_site",
    "location",
    "cdm_source",
)
"""The CDM tables the exporter writes (all of them, empty ones included), in DDL order."""


@dataclass(frozen=True)
class CdmField:
    """One column of a CDM table as the field-level specification describes it."""

    table: str
    name: str
    required: bool
    datatype: str
    """``integer``, ``float``, ``date``, ``datetime``, ``varchar(N)`` or ``varchar(max)``."""
    primary_key: bool
    fk_table: str | None
    fk_field: str | None

    @property
    def varchar_length(self) -> int | None:
        """N of ``varchar(N)``; None for other types and for ``varchar(max)``."""
        if self.datatype.startswith("varchar(") and self.datatype != "varchar(max)":
            return int(self.datatype[len("varchar(") : -1])
        return None

    @property
    def is_text(self) -> bool:
        return self.datatype.startswith("varchar")


def _missing(value: str) -> bool:
    return value in ("", "NA")


def parse_field_level(text: str, source: str = "<text>") -> dict[str, tuple[CdmField, ...]]:
    """Table (lower case) -> its fields in DDL order, from the text of a field-level CSV.

    Handles the upstream quirks: CRLF rows with multi-line quoted cells, ``NA`` for missing,
    ``Yes``/``No`` flags, the ``Integer`` typo and the quoted ``"offset"`` field name.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""))
    needed = {"cdmTableName", "cdmFieldName", "isRequired", "cdmDatatype", "isPrimaryKey",
              "fkTableName", "fkFieldName"}
    if reader.fieldnames is None or needed - set(reader.fieldnames):
        raise OmopError(f"{source}: not a CDM field-level CSV; needs columns {sorted(needed)}")
    tables: dict[str, list[CdmField]] = {}
    for row in reader:
        table = row["cdmTableName"].strip().lower()
        tables.setdefault(table, []).append(
            CdmField(
                table=table,
                name=row["cdmFieldName"].strip().strip('"').lower(),
                required=row["isRequired"].strip() == "Yes",
                datatype=row["cdmDatatype"].strip().lower(),
                primary_key=row["isPrimaryKey"].strip() == "Yes",
                fk_table=None if _missing(row["fkTableName"]) else row["fkTableName"].lower(),
                fk_field=None if _missing(row["fkFieldName"]) else row["fkFieldName"].lower(),
            )
        )
    return {table: tuple(fields) for table, fields in tables.items()}


def shipped_spec_text() -> str:
    """The text of the field-level CSV shipped inside the package."""
    path = resources.files("trajectories.io.omop").joinpath("data", SPEC_FILE)
    with path.open("r", encoding="utf-8", newline="") as handle:
        return handle.read()


@cache
def cdm_spec() -> dict[str, tuple[CdmField, ...]]:
    """The shipped specification: table -> fields in DDL order (the exported tables only)."""
    return parse_field_level(shipped_spec_text(), source=f"trajectories/io/omop/data/{SPEC_FILE}")


def read_field_level(path: str | Path) -> dict[str, tuple[CdmField, ...]]:
    """Parse a field-level CSV on disk (for example the full upstream file)."""
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise OmopError(f"{path}: cannot read the field-level CSV: {error}") from None
    return parse_field_level(text, source=str(path))


def field_level_subset(text: str, tables: tuple[str, ...] = EXPORT_TABLES) -> str:
    """The header and the rows of ``tables`` of a field-level CSV, each copied verbatim.

    Used to make (and, in the tests, to re-check) the shipped copy from the upstream file:
    records are cut out of the raw text, so quoting and line endings stay byte for byte.
    """
    lines = io.StringIO(text, newline="").readlines()
    consumed: list[int] = []

    def feed():
        for number, line in enumerate(lines):
            consumed.append(number)
            yield line

    reader = csv.reader(feed())
    header = next(reader)
    column = header.index("cdmTableName")
    kept = ["".join(lines[: len(consumed)])]
    wanted = set(tables)
    while True:
        start = len(consumed)
        try:
            record = next(reader)
        except StopIteration:
            break
        if record and record[column].lower() in wanted:
            kept.append("".join(lines[start : len(consumed)]))
    return "".join(kept)


# -- types ------------------------------------------------------------------------------------

def polars_dtype(field: CdmField) -> pl.DataType:
    """The polars type a column of this field is built with."""
    if field.datatype == "integer":
        return pl.Int32()
    if field.datatype == "float":
        return pl.Float64()
    if field.datatype == "date":
        return pl.Date()
    if field.datatype == "datetime":
        return pl.Datetime("us")
    if field.is_text:
        return pl.String()
    raise OmopError(f"{field.table}.{field.name}: unknown CDM datatype {field.datatype!r}")


ARROW_TYPES = {
    "integer": pa.int32(),
    "float": pa.float64(),
    "date": pa.date32(),
    "datetime": pa.timestamp("us"),
}


def arrow_type(field: CdmField) -> pa.DataType:
    """The Arrow (Parquet) type of this field: int32, float64, date32, timestamp[us], string."""
    if field.is_text:
        return pa.string()
    if field.datatype in ARROW_TYPES:
        return ARROW_TYPES[field.datatype]
    return _unknown(field)


def _unknown(field: CdmField) -> pa.DataType:
    raise OmopError(f"{field.table}.{field.name}: unknown CDM datatype {field.datatype!r}")


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a CDM table: spec order, NOT NULL as non-nullable fields."""
    return pa.schema(
        [pa.field(f.name, arrow_type(f), nullable=not f.required) for f in cdm_spec()[table]]
    )


def sql_type(field: CdmField, float_type: str = "DOUBLE") -> str:
    """The SQL type of the DDL: INTEGER, DOUBLE (upstream: NUMERIC), DATE, TIMESTAMP,
    VARCHAR(N) or TEXT.

    Floats default to DOUBLE because DuckDB's bare NUMERIC is DECIMAL(18,3), which would round
    measurement values; pass ``float_type="NUMERIC"`` for the upstream text.
    """
    if field.datatype == "integer":
        return "INTEGER"
    if field.datatype == "float":
        return float_type
    if field.datatype == "date":
        return "DATE"
    if field.datatype == "datetime":
        return "TIMESTAMP"
    if field.datatype == "varchar(max)":
        return "TEXT"
    if field.varchar_length is not None:
        return f"VARCHAR({field.varchar_length})"
    return _unknown(field)


def create_table_sql(table: str, schema: str | None = None, float_type: str = "DOUBLE") -> str:
    """``CREATE TABLE`` for one CDM table, columns and NOT NULL exactly as the specification."""
    fields = cdm_spec().get(table)
    if fields is None:
        raise OmopError(f"{table}: not a table of the shipped CDM specification")
    prefix = f'"{schema}".' if schema else ""
    columns = ",\n".join(
        f'    "{f.name}" {sql_type(f, float_type)}{" NOT NULL" if f.required else ""}'
        for f in fields
    )
    return f'CREATE TABLE {prefix}"{table}" (\n{columns}\n);'


def ddl(
    tables: tuple[str, ...] = EXPORT_TABLES, schema: str | None = None, float_type: str = "DOUBLE"
) -> str:
    """The DDL for ``tables`` (no primary-key or foreign-key constraints, as upstream's
    separate constraint scripts; the conformance checks test keys instead)."""
    return "\n\n".join(create_table_sql(t, schema, float_type) for t in tables) + "\n"


# -- conforming frames to the specification ----------------------------------------------------

def _needs_cut(frame: pl.DataFrame, name: str, length: int) -> bool:
    """Whether a text column may hold values over ``length`` characters (bytes bound chars:
    a column whose longest value has at most ``length`` bytes is left as it is)."""
    if frame.schema[name] != pl.String:
        return True
    longest = frame.get_column(name).str.len_bytes().max()
    return longest is not None and longest > length


def conform(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """``frame`` with exactly the spec's columns of ``table`` in DDL order and types.

    Missing columns become typed nulls; text longer than ``varchar(N)`` is cut to N characters;
    an integer outside the 32-bit range of the DDL raises :class:`OmopError`.
    """
    if not frame.columns:
        return pl.DataFrame(schema={f.name: polars_dtype(f) for f in cdm_spec()[table]})
    columns = []
    for field in cdm_spec()[table]:
        dtype = polars_dtype(field)
        if field.name not in frame.columns:
            columns.append(pl.lit(None, dtype=dtype).alias(field.name))
            continue
        column = pl.col(field.name)
        if frame.schema[field.name] != dtype:
            column = column.cast(dtype, strict=False)
        length = field.varchar_length
        if length is not None and _needs_cut(frame, field.name, length):
            column = column.str.slice(0, length)
        columns.append(column)
    out = frame.select(columns)
    for field in cdm_spec()[table]:
        if field.name in frame.columns and field.datatype == "integer":
            lost = out.get_column(field.name).null_count() - frame.get_column(
                field.name
            ).null_count()
            if lost:
                raise OmopError(
                    f"{table}.{field.name}: {lost} value(s) outside the 32-bit integer range "
                    "of the OMOP DDL"
                )
    return out
