"""Old home of the OMOP importer, kept for one release: import from
:mod:`trajectories.io.omop.read` instead."""

from trajectories.errors import OmopImportError  # noqa: F401
from trajectories.io.omop.concepts import GENDERS  # noqa: F401
from trajectories.io.omop.read.assembly import from_omop, initial_state_row  # noqa: F401
from trajectories.io.omop.read.mapping import (  # noqa: F401
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
from trajectories.io.omop.read.rows import (  # noqa: F401
    DOMAIN_TABLE,
    EVENT_TABLES,
    SEX_VALUES,
    TABLE_ORDER,
)
from trajectories.io.omop.read.sources import (  # noqa: F401
    DuckDBSource,
    OmopSource,
    ParquetSource,
    PostgresSource,
    open_source,
)
