"""OMOP import: simulate -> export (DuckDB, Parquet) -> from_omop gives the same cohort with
times floored to whole days (or to the microsecond with datetimes); the example mapping file;
unmapped rows kept or refused with counts; index at a concept; rows outside follow-up; a
custom table reader; and errors naming the table, column or mapping field."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from conftest import OMOP_ONCOLOGY, named

from trajectories import Cohort
from trajectories.cohort import MICROSECONDS_PER_DAY as MPD
from trajectories.cohort import PERSON_COLUMNS
from trajectories.io.omop import omop_tables, write_duckdb, write_parquet
from trajectories.io.omop.read import (
    OmopImportError,
    OmopMapping,
    from_omop,
    load_mapping,
    mapping_from_cohort,
    mapping_from_concepts,
    mapping_to_toml,
)
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mappings" / "oncology.toml"
N_PERSONS = 1000

ONCOLOGY = named(OMOP_ONCOLOGY, "omop_import_test")
del ONCOLOGY["measurements"][0]["decimals"]  # LDH unrounded: values the import must keep exact


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    scenario = scenario_from_dict(copy.deepcopy(ONCOLOGY), source="<omop import test>")
    return MarkovSimulator(scenario).simulate(N_PERSONS, seed=5)


@pytest.fixture(scope="module")
def exported(cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("omop")
    write_duckdb(cohort, root / "cdm.duckdb", batch_size=300)
    write_parquet(cohort, root / "parquet", batch_size=300)
    return {"duckdb": root / "cdm.duckdb", "parquet": root / "parquet"}


def whole_days(column: str) -> pl.Expr:
    """The exporter's date of ``column`` (days since index): floor to the microsecond, then to
    the day, exactly as integers."""
    micros = (pl.col(column) * MPD).floor().cast(pl.Int64)
    return (micros // MPD).cast(pl.Float64).alias(column)


def micro_floor(column: str) -> pl.Expr:
    return ((pl.col(column) * MPD).floor().cast(pl.Int64) / MPD).alias(column)


def censored_exits() -> pl.Expr:
    """The CDM records death but not why follow-up otherwise ended."""
    return pl.when(pl.col("exit") == "death").then(pl.lit("death")).otherwise(pl.lit("censored"))


def model_persons(cohort: Cohort) -> pl.DataFrame:
    return cohort.persons.select(list(PERSON_COLUMNS)).sort("person_id")


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["duckdb", "parquet"])
def test_round_trip_to_whole_days(cohort: Cohort, exported: dict[str, Path], kind: str) -> None:
    back = from_omop(exported[kind], mapping_from_cohort(cohort))
    expected_persons = model_persons(cohort).with_columns(
        whole_days("followup_end"), censored_exits().alias("exit"))
    assert back.persons.equals(expected_persons)
    expected_events = cohort.events.sort("person_id", maintain_order=True).with_columns(
        whole_days("time"), whole_days("end_time"))
    # same rows in the same order: codes, values, day-floored start and end times
    assert back.events.equals(expected_events)
    report = back.manifest.omop_import
    assert report["unmapped"]["rows"] == 0
    assert report["dropped"] == {"before_index": 0, "after_death": 0}
    assert report["persons_without_index"] == 0
    assert report["rows_read"]["measurement"] == (
        cohort.events["code"] == "measurement:ldh").sum()


def test_round_trip_with_datetimes(cohort: Cohort, exported: dict[str, Path]) -> None:
    mapping = mapping_from_cohort(cohort)
    back = from_omop(exported["parquet"], mapping, resolution="datetime")
    expected_events = cohort.events.sort("person_id", maintain_order=True).with_columns(
        micro_floor("time"), micro_floor("end_time"))
    assert back.events.equals(expected_events)
    # follow-up: deaths to the microsecond; otherwise the end of observation is a date, and
    # follow-up reaches the last event if that falls later on that day
    last = expected_events.group_by("person_id").agg(pl.col("time").max().alias("last"))
    persons = model_persons(cohort).join(last, on="person_id").with_columns(
        pl.when(pl.col("exit") == "death")
        .then(micro_floor("followup_end"))
        .otherwise(pl.max_horizontal(whole_days("followup_end"), "last"))
        .alias("followup_end"),
        censored_exits().alias("exit"),
    ).drop("last")
    assert back.persons.equals(persons)
    later = persons.filter(pl.col("exit") != "death").join(
        model_persons(cohort).select("person_id", whole_days("followup_end").alias("day")),
        on="person_id",
    ).filter(pl.col("followup_end") > pl.col("day")).height
    assert back.manifest.omop_import["persons_with_events_after_observation_end"] == later


def test_absorbing_states_and_alive_exit(cohort: Cohort, exported: dict[str, Path]) -> None:
    mapping = mapping_from_cohort(cohort).model_copy(deep=True)
    mapping.persons.absorbing_states = ["progressed"]
    mapping.persons.alive_exit = "lost_to_follow_up"
    back = from_omop(exported["duckdb"], mapping)
    last_state = cohort.state_spells().group_by("person_id").agg(pl.col("state").last())
    expected = cohort.persons.join(last_state, on="person_id").select(
        "person_id",
        pl.when(pl.col("exit") == "death").then(pl.lit("death"))
        .when(pl.col("state") == "progressed").then(pl.lit("absorbed"))
        .otherwise(pl.lit("lost_to_follow_up")).alias("exit"),
    ).sort("person_id")
    assert back.persons.select("person_id", "exit").equals(expected)
    assert expected["exit"].n_unique() == 3


class FramesSource:
    """An in-memory OmopSource: how another database (PostgreSQL) plugs into from_omop."""

    def __init__(self, tables: dict[str, pl.DataFrame]) -> None:
        self.tables, self.name, self.closed = tables, "frames", False

    def columns(self, table: str) -> list[str] | None:
        return self.tables[table].columns if table in self.tables else None

    def read(self, table: str, columns: list[str]) -> pl.DataFrame:
        return self.tables[table].select(columns)

    def close(self) -> None:
        self.closed = True


def test_a_custom_reader_gives_the_same_cohort(cohort: Cohort, exported: dict[str, Path]) -> None:
    source = FramesSource(omop_tables(cohort))
    mapping = mapping_from_cohort(cohort)
    back = from_omop(source, mapping)
    reference = from_omop(exported["duckdb"], mapping)
    assert back.persons.equals(reference.persons)
    assert back.events.equals(reference.events)
    assert not source.closed  # the caller's reader stays open


# -- the example mapping and unmapped rows --------------------------------------------------


def test_example_mapping_file(cohort: Cohort, exported: dict[str, Path]) -> None:
    back = from_omop(exported["parquet"], EXAMPLE)
    original = Counter(cohort.events["code"].to_list())
    got = Counter(back.events["code"].to_list())
    for code in ("state:progressed", "visit:outpatient", "visit:inpatient", "visit:infusion",
                 "measurement:ldh", "measurement:ecog", "drug:pembrolizumab", "state:death"):
        assert got[code] == original[code] > 0, code
    # no rule for 'stable' or 'telemonitoring' (concept 0): kept, named by source value, counted
    assert got["condition:0/stable"] == original["state:stable"] == N_PERSONS
    assert got["visit:0/telemonitoring"] == original["visit:telemonitoring"] > 0
    # the mapping's initial state is added where no mapped state falls on the index date
    day_zero = cohort.events.with_columns(whole_days("time")).filter(
        (pl.col("time") == 0) & pl.col("code").is_in(["state:progressed", "state:death"]))
    assert got["state:stable"] == N_PERSONS - day_zero["person_id"].n_unique()
    report = back.manifest.omop_import["unmapped"]
    assert report["by_table"] == {"condition_occurrence": N_PERSONS,
                                  "visit_occurrence": original["visit:telemonitoring"]}
    assert report["rows"] == N_PERSONS + original["visit:telemonitoring"]
    top = report["most_frequent"][0]
    assert (top["table"], top["concept_id"], top["source_value"], top["rows"]) == (
        "condition_occurrence", 0, "stable", N_PERSONS)
    ldh = back.events.filter(pl.col("code") == "measurement:ldh")["value"].sort()
    assert ldh.equals(cohort.events.filter(pl.col("code") == "measurement:ldh")["value"].sort())
    assert back.manifest.concepts["measurement:ldh"]["concept_id"] == 3016436
    assert back.manifest.concepts["visit:0/telemonitoring"]["domain"] == "visit"


def test_unmapped_rows_can_be_refused(exported: dict[str, Path], cohort: Cohort) -> None:
    mapping = load_mapping(EXAMPLE).model_copy(deep=True)
    mapping.unmapped.policy = "error"
    tele = (cohort.events["code"] == "visit:telemonitoring").sum()
    expected = (
        f"{N_PERSONS + tele} row\\(s\\) match no mapping rule .*condition_occurrence "
        f"{N_PERSONS}, visit_occurrence {tele}; most frequent: condition_occurrence "
        f"concept_id=0 source_value='stable' \\({N_PERSONS} rows\\)"
    )
    with pytest.raises(OmopImportError, match=expected):
        from_omop(exported["duckdb"], mapping)


# -- index at a concept, rows outside follow-up ---------------------------------------------


def test_index_at_first_progression(cohort: Cohort, exported: dict[str, Path]) -> None:
    mapping = mapping_from_cohort(cohort).model_copy(deep=True)
    mapping.index.source, mapping.index.table = "concept", "condition_occurrence"
    mapping.index.concept_id = 4163261
    back = from_omop(exported["duckdb"], mapping)
    days = cohort.events.with_columns(whole_days("time"), whole_days("end_time"))
    progression = days.filter(pl.col("code") == "state:progressed").group_by("person_id").agg(
        pl.col("time").min().alias("shift"))
    assert back.n_persons == progression.height < N_PERSONS
    report = back.manifest.omop_import
    assert report["persons_without_index"] == N_PERSONS - progression.height
    shifted = days.join(progression, on="person_id").with_columns(
        pl.col("time") - pl.col("shift"), pl.col("end_time") - pl.col("shift"))
    kept = shifted.filter(pl.col("time") >= 0).drop("shift")
    assert report["dropped"]["before_index"] == shifted.height - kept.height > 0
    # ties within a day keep the order of the export's datetimes, except that the index
    # state comes first on the index day (an earlier measurement that day follows it)
    expected = kept.sort("person_id", maintain_order=True).with_row_index("row")
    first_state = (expected.filter((pl.col("time") == 0)
                                   & pl.col("code").str.starts_with("state:"))
                   .group_by("person_id").agg(pl.col("row").min().alias("first")))
    expected = (expected.join(first_state, on="person_id", how="left", maintain_order="left")
                .with_columns((pl.col("row") != pl.col("first")).alias("later"))
                .sort("person_id", "time", "later", maintain_order=True)
                .drop("row", "first", "later"))
    moved = (kept.sort("person_id", maintain_order=True)["code"] != expected["code"]).sum()
    assert moved > 0
    assert back.events.equals(expected)
    index = cohort.persons.join(progression, on="person_id").select(
        "person_id",
        (pl.col("index_date") + pl.duration(days=pl.col("shift").cast(pl.Int64))).alias("i"),
    ).sort("person_id")
    assert back.persons["index_date"].equals(index["i"].rename("index_date"))
    at_zero = back.events.filter((pl.col("time") == 0) & (pl.col("code") == "state:progressed"))
    assert at_zero["person_id"].n_unique() == back.n_persons


def test_rows_before_index_and_after_death(
    cohort: Cohort, exported: dict[str, Path], tmp_path: Path
) -> None:
    tables = omop_tables(cohort)
    measurement = tables["measurement"]
    dead = tables["death"].row(0, named=True)
    person = tables["person"].filter(pl.col("person_id") == dead["person_id"]).row(0, named=True)
    start = tables["observation_period"].filter(
        pl.col("person_id") == dead["person_id"])["observation_period_start_date"][0]
    template = measurement.filter(pl.col("person_id") == person["person_id"]).head(1)
    no_time = pl.lit(None, dtype=pl.Datetime("us")).alias("measurement_datetime")
    extra = pl.concat([  # one row 3 days after death, one 2 days before the index date
        template.with_columns(pl.lit(10**6).alias("measurement_id"), no_time,
                              pl.lit(dead["death_date"]).dt.offset_by("3d")
                              .alias("measurement_date")),
        template.with_columns(pl.lit(10**6 + 1).alias("measurement_id"), no_time,
                              pl.lit(start).dt.offset_by("-2d").alias("measurement_date")),
    ])
    stranger = template.with_columns(pl.lit(10**6 + 2).alias("measurement_id"),
                                     pl.lit(10**7).alias("person_id"))
    tables["measurement"] = pl.concat([measurement, extra, stranger])
    mapping = mapping_from_cohort(cohort)
    back = from_omop(FramesSource(tables), mapping)
    report = back.manifest.omop_import
    assert report["dropped"] == {"before_index": 1, "after_death": 1}
    assert report["rows_of_persons_not_in_person_table"] == 1
    reference = from_omop(exported["duckdb"], mapping)
    assert back.events.equals(reference.events)
    # a person without an observation period has no index: left out, and counted
    last_id = tables["person"]["person_id"].max()
    tables["observation_period"] = tables["observation_period"].filter(
        pl.col("person_id") != last_id)
    fewer = from_omop(FramesSource(tables), mapping)
    assert fewer.manifest.omop_import["persons_without_index"] == 1
    assert fewer.persons.equals(reference.persons.filter(pl.col("person_id") != last_id))
    strict = mapping.model_copy(deep=True)
    strict.death.after_death = "error"
    message = f"1 row\\(s\\) after death .*: measurement 1; persons \\[{dead['person_id']}\\]"
    with pytest.raises(OmopImportError, match=message):
        from_omop(FramesSource(tables), strict)
    strict.index.before_index = "error"
    with pytest.raises(OmopImportError, match="1 row\\(s\\) before the index date"):
        from_omop(FramesSource(tables), strict)


def test_duckdb_schema(cohort: Cohort, exported: dict[str, Path], tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "schema.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(f"ATTACH '{exported['duckdb']}' AS src (READ_ONLY)")
        con.execute("CREATE SCHEMA cdm")
        con.execute('CREATE SCHEMA "site ""b"" cdm"')  # a name with quotes must be escaped
        for (table,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src'"
        ).fetchall():
            con.execute(f'CREATE TABLE cdm."{table}" AS SELECT * FROM src."{table}"')
            con.execute(f'CREATE TABLE "site ""b"" cdm"."{table}" AS SELECT * FROM '
                        f'src."{table}"')
    mapping = mapping_from_cohort(cohort)
    back = from_omop(path, mapping, schema="cdm")
    assert back.events.equals(from_omop(exported["duckdb"], mapping).events)
    quoted = from_omop(path, mapping, schema='site "b" cdm')
    assert quoted.events.equals(back.events)
    with pytest.raises(OmopImportError, match="schema.duckdb \\(schema main\\): table person "
                                              "not found"):
        from_omop(path, mapping)
    with pytest.raises(OmopImportError, match="a Parquet directory has no schema"):
        from_omop(exported["parquet"], mapping, schema="cdm")


def test_parquet_with_upper_case_columns(cohort: Cohort, tmp_path: Path) -> None:
    for table, frame in omop_tables(cohort).items():
        frame.rename(str.upper).write_parquet(tmp_path / f"{table}.parquet")
    mapping = mapping_from_cohort(cohort)
    back = from_omop(tmp_path, mapping)
    assert back.events.equals(from_omop(FramesSource(omop_tables(cohort)), mapping).events)


# -- mappings -------------------------------------------------------------------------------


def test_mapping_from_concepts(cohort: Cohort) -> None:
    mapping = mapping_from_concepts(cohort.manifest.concepts)
    rules = {(r.table, r.code): (r.concept_id, r.source_value) for r in mapping.concepts}
    assert rules[("condition_occurrence", "state:progressed")] == (4163261, "NSCLC progression")
    assert rules[("condition_occurrence", "state:stable")] == (None, "stable")
    assert rules[("visit_occurrence", "visit:outpatient")] == (9202, "outpatient")
    assert rules[("procedure_occurrence", "visit:infusion")] == (4273629, "infusion")
    assert rules[("observation", "measurement:ecog")] == (4172738, "ecog")
    assert rules[("observation", "state:death")] == (None, "death")  # re-routed extra deaths
    assert mapping.death.code == "state:death"
    assert load_mapping(EXAMPLE).index.initial_state == "stable"


def test_mapping_to_toml_reads_back(cohort: Cohort, tmp_path: Path) -> None:
    for mapping in (mapping_from_cohort(cohort), load_mapping(EXAMPLE)):
        path = tmp_path / "mapping.toml"
        path.write_text(mapping_to_toml(mapping))
        assert load_mapping(path) == mapping
    tricky = load_mapping({"concepts": [{"table": "observation", "source_value": 'say "hi"\\n',
                                         "code": "observation:quote"}]})
    path.write_text(mapping_to_toml(tricky))
    assert load_mapping(path) == tricky


def test_mapping_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[index\nsource = 1\n")
    with pytest.raises(OmopImportError, match="bad.toml: invalid TOML"):
        load_mapping(bad)
    bad.write_text('[[concepts]]\ntable = "conditions"\nconcept_id = 1\ncode = "state:x"\n')
    with pytest.raises(OmopImportError, match="bad.toml: concepts.0.table: .*'conditions' is "
                                              "not one of"):
        load_mapping(bad)
    bad.write_text('[[concepts]]\ntable = "measurement"\nconcept_id = 1\ncode = "LDH"\n')
    with pytest.raises(OmopImportError, match="concepts.0.code: .*must be namespaced"):
        load_mapping(bad)
    bad.write_text('[[concepts]]\ntable = "measurement"\ncode = "measurement:ldh"\n')
    with pytest.raises(OmopImportError, match="concepts\\[0\\] \\(measurement:ldh\\) needs "
                                              "concept_id or source_value"):
        load_mapping(bad)
    rule = {"table": "measurement", "concept_id": 7, "code": "measurement:a"}
    with pytest.raises(OmopImportError, match="concepts\\[0\\] and concepts\\[1\\] both match "
                                              "measurement concept_id=7"):
        load_mapping({"concepts": [rule, {**rule, "code": "measurement:b"}]})
    with pytest.raises(OmopImportError, match="index.source = 'concept' needs index.table"):
        load_mapping({"index": {"source": "concept"}})
    with pytest.raises(OmopImportError, match="persons.alive_exit: .*must be a censoring exit"):
        load_mapping({"persons": {"alive_exit": "death"}})
    with pytest.raises(OmopImportError, match="death.code: .*'DEATH' must be namespaced"):
        load_mapping({"death": {"code": "DEATH"}})
    with pytest.raises(OmopImportError, match="unmapped.policy"):
        load_mapping({"unmapped": {"policy": "ignore"}})
    with pytest.raises(OmopImportError, match="cannot read mapping"):
        load_mapping(tmp_path / "missing.toml")
    assert isinstance(load_mapping({}), OmopMapping)


# -- source errors --------------------------------------------------------------------------


def test_source_errors_name_the_table_and_column(cohort: Cohort, tmp_path: Path) -> None:
    tables = omop_tables(cohort)
    mapping = mapping_from_cohort(cohort)
    with pytest.raises(OmopImportError, match="no such DuckDB file or Parquet directory"):
        from_omop(tmp_path / "nothing", mapping)
    with pytest.raises(OmopImportError, match="frames: table person not found"):
        from_omop(FramesSource({k: v for k, v in tables.items() if k != "person"}), mapping)
    no_date = {**tables, "measurement": tables["measurement"].drop("measurement_date")}
    with pytest.raises(OmopImportError, match="table measurement lacks column\\(s\\) "
                                              "\\['measurement_date'\\]"):
        from_omop(FramesSource(no_date), mapping)
    holes = {**tables, "drug_exposure": tables["drug_exposure"].with_columns(
        pl.lit(None, dtype=pl.Int32).alias("drug_concept_id"))}
    with pytest.raises(OmopImportError, match="drug_exposure.drug_concept_id has \\d+ null"):
        from_omop(FramesSource(holes), mapping)
    no_drugs = {k: v for k, v in tables.items() if k != "drug_exposure"}
    with pytest.raises(OmopImportError, match="table drug_exposure not found, but the mapping "
                                              "maps drug:pembrolizumab from it"):
        from_omop(FramesSource(no_drugs), mapping)
    no_state = mapping.model_copy(deep=True)
    no_state.concepts = [r for r in no_state.concepts if r.code != "state:stable"]
    staged = cohort.events.with_columns(whole_days("time")).filter(
        (pl.col("time") == 0) & pl.col("code").is_in(["state:progressed", "state:death"]))
    unstaged = N_PERSONS - staged["person_id"].n_unique()
    with pytest.raises(OmopImportError, match=f"{unstaged} person\\(s\\) have no state at the "
                                              "index date .* set index.initial_state"):
        from_omop(FramesSource(tables), no_state)
    with pytest.raises(OmopImportError, match="resolution: expected 'day' or 'datetime'"):
        from_omop(FramesSource(tables), mapping, resolution="hour")
