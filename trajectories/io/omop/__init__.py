"""OMOP CDM v5.4 export: a cohort as CDM tables in DuckDB, PostgreSQL or Parquet, and
conformance checks.

The specification (field-level CSV of the OHDSI CommonDataModel, Apache-2.0) ships in
``data/``; DDL, column order and types all come from it.
"""

from trajectories.io.omop.conformance import (
    CheckResult,
    check_omop_connection,
    check_omop_duckdb,
    check_omop_parquet,
    failures,
)
from trajectories.io.omop.duckdb_writer import write_duckdb
from trajectories.io.omop.parquet_writer import write_parquet
from trajectories.io.omop.postgres import check_omop_postgres, read_omop_postgres
from trajectories.io.omop.postgres_writer import write_postgres
from trajectories.io.omop.spec import EXPORT_TABLES, CdmField, OmopError, cdm_spec, ddl
from trajectories.io.omop.tables import omop_blocks, omop_tables

__all__ = [
    "EXPORT_TABLES",
    "CdmField",
    "CheckResult",
    "OmopError",
    "cdm_spec",
    "check_omop_connection",
    "check_omop_duckdb",
    "check_omop_parquet",
    "check_omop_postgres",
    "ddl",
    "failures",
    "omop_blocks",
    "omop_tables",
    "read_omop_postgres",
    "write_duckdb",
    "write_parquet",
    "write_postgres",
]
