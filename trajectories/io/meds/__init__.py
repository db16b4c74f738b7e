"""MEDS (Medical Event Data Standard, v0.4): a cohort out (:mod:`.write`), a MEDS dataset in
(:mod:`.read`); :mod:`.layout` holds the file names and codes both use.

Layout written (``glob("data/**/*.parquet")`` finds the data, as MEDS requires)::

    data/<split>/<shard>.parquet      subject_id, time, code, numeric_value, text_value,
                                      numeric_value_exact, end_time   (sorted by subject, time)
    metadata/dataset.json             dataset_name, dataset_version, etl_*, meds_version, ...
    metadata/codes.parquet            code, description, parent_codes, omop_concept_id/domain
    metadata/subject_splits.parquet   subject_id, split (train / tuning / held_out)

Conventions (the MEDS schema leaves them to the ETL; each is undone by :func:`from_meds`):

* an event at ``time`` days after index is at ``index_date`` 00:00 + ``time`` days, floored to
  the microsecond; event codes are written unchanged (``state:progressed``);
* static facts have a null ``time`` and come first: ``SITE//<site>``, ``SEX//<F|M>``,
  ``COVARIATE//<name>//<value>`` for text covariates and ``COVARIATE//<name>`` with the value
  for numeric and boolean ones;
* ``MEDS_BIRTH`` at the birth date; ``MEDS_DEATH`` at the end of follow-up of persons who
  died, ``FOLLOWUP_END//<exit>`` at the end of follow-up of everyone else;
* an event with a duration keeps its end in the extension column ``end_time`` and, with
  ``end_events``, also gets a ``<code>//END`` row at its end (MEDS has no intervals: readers
  that know only the core columns still see when a stay or a drug ended);
* ``numeric_value`` is float32 as MEDS requires; where that rounds the cohort's float64 value
  the exact value is in the extension column ``numeric_value_exact`` (null elsewhere).

The extension columns are declared in ``dataset.json`` (``other_extension_columns``), which also
carries the cohort's manifest and covariate types under the key ``trajectories``.
"""

from trajectories.errors import MedsError
from trajectories.io.meds.layout import (
    BIRTH_CODE,
    CODES_FILE,
    COVARIATE_PREFIX,
    COVARIATE_TYPES,
    DATA_DIR,
    DATASET_FILE,
    DEATH_CODE,
    END_SUFFIX,
    EXTENSION_COLUMNS,
    FOLLOWUP_END_PREFIX,
    GENDER_PREFIX,
    MEDS_VERSION,
    SEX_PREFIX,
    SITE_PREFIX,
    SPLITS,
    SPLITS_FILE,
)
from trajectories.io.meds.read import READ_TYPES, SEX_VALUES, from_meds
from trajectories.io.meds.write import (
    CODES_SCHEMA,
    DATA_SCHEMA,
    ETL_NAME,
    ROW_SCHEMA,
    SPLITS_SCHEMA,
    Shard,
    assign_splits,
    meds_rows,
    write_meds,
)

__all__ = [
    "BIRTH_CODE",
    "CODES_FILE",
    "CODES_SCHEMA",
    "COVARIATE_PREFIX",
    "COVARIATE_TYPES",
    "DATASET_FILE",
    "DATA_DIR",
    "DATA_SCHEMA",
    "DEATH_CODE",
    "END_SUFFIX",
    "ETL_NAME",
    "EXTENSION_COLUMNS",
    "FOLLOWUP_END_PREFIX",
    "GENDER_PREFIX",
    "MEDS_VERSION",
    "READ_TYPES",
    "ROW_SCHEMA",
    "SEX_PREFIX",
    "SEX_VALUES",
    "SITE_PREFIX",
    "SPLITS",
    "SPLITS_FILE",
    "SPLITS_SCHEMA",
    "MedsError",
    "Shard",
    "assign_splits",
    "from_meds",
    "meds_rows",
    "write_meds",
]
