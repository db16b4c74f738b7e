"""The MEDS dataset's file names, codes and covariate types, shared by the writer and the reader."""

from __future__ import annotations

import polars as pl

MEDS_VERSION = "0.4.1"
"""The MEDS release whose schemas the files follow (the same in 0.4.0 and 0.4.1)."""
BIRTH_CODE, DEATH_CODE = "MEDS_BIRTH", "MEDS_DEATH"
SITE_PREFIX, SEX_PREFIX, GENDER_PREFIX = "SITE//", "SEX//", "GENDER//"
COVARIATE_PREFIX = "COVARIATE//"
FOLLOWUP_END_PREFIX = "FOLLOWUP_END//"
END_SUFFIX = "//END"
SPLITS = ("train", "tuning", "held_out")
DATA_DIR = "data"
DATASET_FILE = "metadata/dataset.json"
CODES_FILE = "metadata/codes.parquet"
SPLITS_FILE = "metadata/subject_splits.parquet"
EXTENSION_COLUMNS = ("numeric_value_exact", "end_time")
COVARIATE_TYPES: dict[str, pl.DataType] = {
    str(t): t
    for t in (pl.Float64(), pl.Float32(), pl.Int64(), pl.Int32(), pl.Int16(), pl.Int8(),
              pl.UInt32(), pl.UInt16(), pl.UInt8(), pl.Boolean(), pl.String())
}
"""Covariate types that go to MEDS and come back as themselves."""
