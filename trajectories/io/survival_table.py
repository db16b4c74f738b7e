"""Old home of the survival-table loader and the shared tabular helpers, kept for one release:
import from :mod:`trajectories.io.table` (``.survival``, ``.common``, ``.persons``) instead."""

from trajectories.io.table.common import (  # noqa: F401
    CENSORED,
    DAYS_PER_UNIT,
    DEATH_NAME,
    DEFAULT_INDEX_DATE,
    ID_LABEL,
    LABELS,
    ROW_LABEL,
    STATE_NAME,
    TEXT_TYPES,
    as_polars,
    assemble_cohort,
    check_times,
    days_per_unit,
    death_names,
    default_covariates,
    describe_rows,
    events_frame,
    exit_of,
    fail_rows,
    flag_values,
    index_day,
    integer_ids,
    outcome_codes,
    refuse_structural,
    require_columns,
    require_numeric,
    state_name,
    with_labels,
)
from trajectories.io.table.persons import (  # noqa: F401
    SEX_CODES,
    build_persons,
    person_values,
    persons_from_rows,
)
from trajectories.io.table.survival import from_survival_table  # noqa: F401
