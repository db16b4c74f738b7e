"""The data model, at the bottom of the house: every generator makes a Cohort, every check and
exporter reads one. It imports nothing above the ground floor.

- :mod:`.schema`: columns, exits, codes, the rule table and its checks
- :mod:`.files`: file names of both layouts, the manifest, output folders, atomic publish
- :mod:`.core`: :class:`Cohort` (construction, read, write, state spells, fingerprint)
- :mod:`.partitioned`: :class:`PartitionedCohort`, a sharded run's directory opened lazily
- :mod:`.blocks`: block sources for streaming consumers; :func:`read_cohort`, :func:`scan_cohort`
- :mod:`.queries`: state names, death and initial states, site subsets
- :mod:`.split`: :func:`holdout_split`, a reference's train and holdout parts, reproducible
"""

from trajectories.cohort.blocks import (
    Block,
    CohortBlocks,
    CohortSource,
    DirectoryBlocks,
    InMemoryBlocks,
    built_ahead,
    cohort_blocks,
    read_cohort,
    scan_cohort,
)
from trajectories.cohort.core import Cohort
from trajectories.cohort.files import (
    EVENTS_FILE,
    MANIFEST_FILE,
    PARQUET_OPTIONS,
    PERSONS_FILE,
    Manifest,
    cohort_files,
    is_partitioned,
    prepare_output_directory,
    write_manifest,
)
from trajectories.cohort.partitioned import PartitionedCohort, read_partitioned
from trajectories.cohort.queries import death_states, initial_states, site_subset, state_names
from trajectories.cohort.schema import (
    CODE_PATTERN,
    DATA_MODEL_RULES,
    EVENT_COLUMNS,
    EVENT_NULLABLE,
    EXITS,
    MAX_AGE_YEARS,
    MICROSECONDS_PER_DAY,
    PERSON_COLUMNS,
    PERSON_NULLABLE,
    STATE_PREFIX,
    Violation,
    check_columns,
    find_violations,
    grouped_by_person,
    next_of_person,
    same_person_as_previous,
    validate_tables,
    with_initial_state,
)
from trajectories.cohort.split import fit_part, holdout_split

__all__ = [
    "MAX_AGE_YEARS",
    "CODE_PATTERN",
    "DATA_MODEL_RULES",
    "EVENTS_FILE",
    "EVENT_COLUMNS",
    "EVENT_NULLABLE",
    "EXITS",
    "MANIFEST_FILE",
    "MICROSECONDS_PER_DAY",
    "PARQUET_OPTIONS",
    "PERSONS_FILE",
    "PERSON_COLUMNS",
    "PERSON_NULLABLE",
    "STATE_PREFIX",
    "Block",
    "Cohort",
    "CohortBlocks",
    "CohortSource",
    "DirectoryBlocks",
    "InMemoryBlocks",
    "Manifest",
    "PartitionedCohort",
    "Violation",
    "built_ahead",
    "check_columns",
    "cohort_blocks",
    "cohort_files",
    "death_states",
    "find_violations",
    "fit_part",
    "grouped_by_person",
    "holdout_split",
    "initial_states",
    "is_partitioned",
    "next_of_person",
    "prepare_output_directory",
    "read_cohort",
    "read_partitioned",
    "same_person_as_previous",
    "scan_cohort",
    "site_subset",
    "state_names",
    "validate_tables",
    "with_initial_state",
    "write_manifest",
]
