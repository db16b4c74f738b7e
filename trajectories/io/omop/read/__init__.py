"""Import an OMOP CDM v5.4 database (DuckDB file, Parquet directory, PostgreSQL, or any reader)
as a Cohort.

A mapping (TOML, see ``examples/mappings/oncology.toml``) says which concepts or source values
become which cohort codes: a code ``state:<name>`` makes a state, any other namespaced code an
event (``visit:outpatient``, ``measurement:ldh``...). The index date is the person's first
observation period start, or the first occurrence of a concept; follow-up ends at death or at
the last observation period end. Nothing is dropped silently: unmapped rows are kept as
``<domain>:<concept_id>`` events (``<domain>:0/<source_value>`` for concept 0) or raise,
as the mapping says, and every count lands in ``manifest.omop_import``.

- :mod:`.sources`: the :class:`OmopSource` interface and its Parquet, DuckDB, PostgreSQL readers
- :mod:`.rows`: the CDM tables read, as uniform frames
- :mod:`.mapping`: the mapping file's schema, loading, and the mapping that undoes an export
- :mod:`.assembly`: :func:`from_omop`, building the cohort
"""

from trajectories.errors import OmopImportError
from trajectories.io.omop.read.assembly import from_omop, initial_state_row
from trajectories.io.omop.read.mapping import (
    ConceptRule,
    DeathSpec,
    IndexSpec,
    OmopMapping,
    PersonsSpec,
    Policy,
    UnmappedSpec,
    load_mapping,
    mapping_from_cohort,
    mapping_from_concepts,
    mapping_to_toml,
)
from trajectories.io.omop.read.rows import DOMAIN_TABLE, EVENT_TABLES, SEX_VALUES, TABLE_ORDER
from trajectories.io.omop.read.sources import (
    DuckDBSource,
    OmopSource,
    ParquetSource,
    PostgresSource,
    open_source,
)

__all__ = [
    "DOMAIN_TABLE",
    "EVENT_TABLES",
    "SEX_VALUES",
    "TABLE_ORDER",
    "ConceptRule",
    "DeathSpec",
    "DuckDBSource",
    "IndexSpec",
    "OmopImportError",
    "OmopMapping",
    "OmopSource",
    "ParquetSource",
    "PersonsSpec",
    "Policy",
    "PostgresSource",
    "UnmappedSpec",
    "from_omop",
    "initial_state_row",
    "load_mapping",
    "mapping_from_cohort",
    "mapping_from_concepts",
    "mapping_to_toml",
    "open_source",
]
