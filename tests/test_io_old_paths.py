"""The io modules' old import paths still work for one release: each exposes the public names it
had, and they are the very objects of the new homes (io/table, io/mstate, io/meds, io/omop/read)."""

from __future__ import annotations

import importlib

import pytest

import trajectories.io

OLD_PATHS = {
    "trajectories.io.survival_table": (
        "trajectories.io.table.common trajectories.io.table.persons "
        "trajectories.io.table.survival",
        "DAYS_PER_UNIT DEFAULT_INDEX_DATE STATE_NAME SEX_CODES ROW_LABEL ID_LABEL LABELS "
        "TEXT_TYPES CENSORED DEATH_NAME as_polars require_columns days_per_unit describe_rows "
        "fail_rows with_labels require_numeric check_times flag_values integer_ids state_name "
        "index_day refuse_structural default_covariates person_values build_persons exit_of "
        "persons_from_rows events_frame assemble_cohort outcome_codes death_names "
        "from_survival_table",
    ),
    "trajectories.io.counting_process": (
        "trajectories.io.table.counting_process", "WHAT ENTRY_RULES from_counting_process"),
    "trajectories.io.measurements": (
        "trajectories.io.table.measurements", "MEASUREMENT_PREFIX add_measurements"),
    "trajectories.io.table_file": (
        "trajectories.io.table.files",
        "NULL_TEXT SEPARATORS read_table parse_codes parse_list sex_codes"),
    "trajectories.io.names": (
        "trajectories.io.table.names",
        "VALID_NAME MAX_LENGTH is_valid_name valid_names changed"),
    "trajectories.io.episodes": (
        "trajectories.io.table.episodes", "episode_name number_episodes"),
    "trajectories.io.mstate": (
        "trajectories.io.mstate.read", "MSTATE_EXTRA ENTRY_RULES WHAT from_mstate"),
    "trajectories.io.meds": (
        "trajectories.io.meds.layout trajectories.io.meds.write trajectories.io.meds.read",
        "MEDS_VERSION ETL_NAME BIRTH_CODE DEATH_CODE SITE_PREFIX SEX_PREFIX GENDER_PREFIX "
        "COVARIATE_PREFIX FOLLOWUP_END_PREFIX END_SUFFIX SPLITS DATA_DIR DATASET_FILE "
        "CODES_FILE SPLITS_FILE EXTENSION_COLUMNS SEX_VALUES DATA_SCHEMA CODES_SCHEMA "
        "SPLITS_SCHEMA ROW_SCHEMA COVARIATE_TYPES assign_splits meds_rows write_meds Shard "
        "READ_TYPES from_meds MedsError",
    ),
    "trajectories.io.omop_import": (
        "trajectories.io.omop.concepts trajectories.io.omop.read.sources "
        "trajectories.io.omop.read.rows trajectories.io.omop.read.mapping "
        "trajectories.io.omop.read.assembly",
        "GENDERS SEX_VALUES OmopSource ParquetSource DuckDBSource PostgresSource open_source "
        "EVENT_TABLES TABLE_ORDER DOMAIN_TABLE Policy ConceptRule IndexSpec PersonsSpec "
        "DeathSpec UnmappedSpec OmopMapping load_mapping mapping_from_concepts "
        "mapping_from_cohort mapping_to_toml from_omop initial_state_row OmopImportError",
    ),
}
"""Old path -> (new home modules, the public names the old module had)."""


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_path_exposes_its_names_from_the_new_home(old: str) -> None:
    homes, names = OLD_PATHS[old]
    module = importlib.import_module(old)
    new = [importlib.import_module(home) for home in homes.split()]
    for name in names.split():
        assert hasattr(module, name), f"{old}.{name} is gone"
        owners = [home for home in new if hasattr(home, name)]
        assert owners, f"{name} has no new home among {homes}"
        assert getattr(module, name) is getattr(owners[0], name), f"{old}.{name}"


def test_the_io_package_exports_what_it_did() -> None:
    assert sorted(trajectories.io.__all__) == [
        "add_measurements", "from_counting_process", "from_meds", "from_mstate", "from_omop",
        "from_survival_table", "read_table", "write_meds",
    ]
    for name in trajectories.io.__all__:
        assert callable(getattr(trajectories.io, name))


def test_the_omop_writer_the_importer_and_meds_share_one_concept_table() -> None:
    from trajectories.io.omop import concepts, tables
    from trajectories.io.omop.read import mapping

    assert tables.concept_table is concepts.concept_table is mapping.concept_table
    assert concepts.GENDERS == {8507: "M", 8532: "F"}
