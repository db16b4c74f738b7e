"""OMOP CDM v5.4: a cohort as CDM tables in DuckDB, PostgreSQL or Parquet, conformance checks,
and a CDM database read back as a cohort.

- :mod:`.spec`: the field-level specification (shipped in ``data/``, OHDSI CommonDataModel,
  Apache-2.0), DDL and types made from it, frames conformed to it
- :mod:`.concepts`: concepts and domains of cohort codes (both directions and the MEDS writer)
- :mod:`.tables`, :mod:`.visits`: the CDM tables of a cohort, block by block
- :mod:`.duckdb_writer`, :mod:`.parquet_writer`, :mod:`.postgres_writer`: the writers
- :mod:`.conformance`, :mod:`.postgres`: the checks, and PostgreSQL connections and reads
- :mod:`.read`: the importer (sources, mapping, assembly)
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
from trajectories.io.omop.read import OmopMapping, OmopSource, from_omop, load_mapping
from trajectories.io.omop.spec import EXPORT_TABLES, CdmField, OmopError, cdm_spec, ddl
from trajectories.io.omop.tables import omop_blocks, omop_tables

__all__ = [
    "EXPORT_TABLES",
    "CdmField",
    "CheckResult",
    "OmopError",
    "OmopMapping",
    "OmopSource",
    "cdm_spec",
    "check_omop_connection",
    "check_omop_duckdb",
    "check_omop_parquet",
    "check_omop_postgres",
    "ddl",
    "failures",
    "from_omop",
    "load_mapping",
    "omop_blocks",
    "omop_tables",
    "read_omop_postgres",
    "write_duckdb",
    "write_parquet",
    "write_postgres",
]
