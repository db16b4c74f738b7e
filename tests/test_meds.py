"""MEDS export and import: every file against the meds package's schemas, the layout rules
(one file per subject, sorted by time), the conventions (birth, death, statics, ends), the
round trip simulate -> write_meds -> from_meds, and a hand-made foreign MEDS dataset."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import meds
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flexible_schema.exceptions import SchemaValidationError

from trajectories import Cohort, Manifest
from trajectories.cohort import MICROSECONDS_PER_DAY as MPD
from trajectories.cohort import PERSON_COLUMNS
from trajectories.io.meds import (
    CODES_FILE,
    DATASET_FILE,
    MEDS_VERSION,
    SPLITS_FILE,
    MedsError,
    assign_splits,
    from_meds,
    write_meds,
)
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator

N_PERSONS = 1200
MICROSECOND = 1.01 / MPD
"""A microsecond in days, plus the float64 rounding of ``t * MPD`` (an ulp near 2e13 us)."""


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    from conftest import FULL_SCENARIO

    data = dict(FULL_SCENARIO)
    data["measurements"] = [
        *FULL_SCENARIO["measurements"],
        {"name": "crp", "mean": {"stable": 5.0, "progressed": 20.0}, "noise_sd": 2.0,
         "min": 0.0},  # no rounding: float64 values that float32 cannot hold
    ]
    scenario = scenario_from_dict(data, source="<meds test>")
    return MarkovSimulator(scenario).simulate(N_PERSONS, seed=11)


@pytest.fixture(scope="module")
def written(cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("meds") / "dataset"
    counts = write_meds(cohort, out, shard_size=400, seed=3)
    return out, counts


def data_files(root: Path) -> list[Path]:
    return sorted((root / "data").glob("**/*.parquet"))


def all_rows(root: Path) -> pl.DataFrame:
    return pl.concat(
        pl.read_parquet(f).with_columns(pl.lit(str(f.relative_to(root))).alias("file"))
        for f in data_files(root)
    )


def micro_floor(days: pl.Expr) -> pl.Expr:
    return (days * MPD).floor().cast(pl.Int64)


# -- schemas and layout ---------------------------------------------------------------------


def test_every_file_validates_against_the_meds_schemas(written: tuple[Path, dict]) -> None:
    root, counts = written
    files = data_files(root)
    assert [str(f.relative_to(root)) for f in files] == sorted(counts)
    for path in files:
        table = pq.read_table(path)
        meds.DataSchema.validate(table)  # raises on a missing column or a wrong type
        assert table.schema.field("numeric_value").type == pa.float32()
        assert table.schema.field("time").type == pa.timestamp("us")
        assert table.num_rows == counts[str(path.relative_to(root))]
    meds.CodeMetadataSchema.validate(pq.read_table(root / CODES_FILE))
    meds.SubjectSplitSchema.validate(pq.read_table(root / SPLITS_FILE))
    metadata = json.loads((root / DATASET_FILE).read_text())
    meds.DatasetMetadataSchema.validate(metadata)
    assert meds.dataset_metadata_filepath == DATASET_FILE
    assert meds.code_metadata_filepath == CODES_FILE
    assert meds.subject_splits_filepath == SPLITS_FILE
    assert meds.__version__.split(".")[:2] == MEDS_VERSION.split(".")[:2]
    assert metadata["meds_version"] == MEDS_VERSION
    assert metadata["etl_name"] == "trajectories"
    assert dt.datetime.fromisoformat(metadata["created_at"]).tzinfo is not None
    assert set(metadata["other_extension_columns"]) == {"numeric_value_exact", "end_time"}


def test_a_wrong_type_fails_the_meds_validation(written: tuple[Path, dict]) -> None:
    """The schema check above can fail: an int32 subject_id is refused."""
    table = pq.read_table(data_files(written[0])[0])
    bad = table.set_column(0, "subject_id", table.column("subject_id").cast(pa.int32()))
    with pytest.raises(SchemaValidationError, match="subject_id"):
        meds.DataSchema.validate(bad)


def test_each_subject_is_in_one_file_contiguous_and_sorted(
    written: tuple[Path, dict], cohort: Cohort
) -> None:
    root, _ = written
    rows = all_rows(root)
    files_per_subject = rows.group_by("subject_id").agg(pl.col("file").n_unique())
    assert files_per_subject.height == N_PERSONS
    assert files_per_subject.get_column("file").max() == 1
    for path in data_files(root):
        frame = pl.read_parquet(path)
        ids = frame.get_column("subject_id")
        assert ids.is_sorted()  # contiguous and in subject order
        # within a subject: static rows (null time) first, then non-decreasing times
        key = frame.select(
            "subject_id",
            pl.col("time").is_not_null().alias("timed"),
            pl.col("time").dt.epoch("us").fill_null(-(2**62)).alias("t"),
        )
        same = key["subject_id"].shift(1) == key["subject_id"]
        assert not ((key["t"] < key["t"].shift(1)) & same).any()
        assert frame.height <= 400 * 200  # shards are bounded by persons, not giant
    shard_persons = rows.group_by("file").agg(pl.col("subject_id").n_unique())
    assert shard_persons.get_column("subject_id").max() <= 400


def test_splits_follow_fractions_and_directories(written: tuple[Path, dict]) -> None:
    root, _ = written
    splits = pl.read_parquet(root / SPLITS_FILE)
    counts = dict(splits.group_by("split").len().rows())
    assert counts == {"train": N_PERSONS - 120 - 120, "tuning": 120, "held_out": 120}
    placed = all_rows(root).select(
        "subject_id", pl.col("file").str.split("/").list.get(1).alias("dir")
    ).unique()
    joined = placed.join(splits, on="subject_id")
    assert joined.height == N_PERSONS
    assert (joined["dir"] == joined["split"]).all()
    # deterministic for a seed, different for another
    again = assign_splits(splits["subject_id"].reverse(), (0.8, 0.1, 0.1), seed=3)
    assert again.equals(splits)
    other = assign_splits(splits["subject_id"], (0.8, 0.1, 0.1), seed=4)
    assert not other.equals(splits)
    assert dict(other.group_by("split").len().rows()) == counts


def test_codes_metadata_covers_every_code(written: tuple[Path, dict], cohort: Cohort) -> None:
    root, _ = written
    codes = pl.read_parquet(root / CODES_FILE)
    used = set(all_rows(root)["code"].unique())
    assert set(codes["code"]) == used
    assert codes["code"].is_unique().all()
    described = dict(zip(codes["code"], codes["description"], strict=True))
    assert described["MEDS_BIRTH"] == "Birth"
    assert described["visit:inpatient//END"] == "End of visit:inpatient"
    concepts = dict(zip(codes["code"], codes["omop_concept_id"], strict=True))
    assert concepts["visit:outpatient"] == 9202 and concepts["visit:inpatient"] == 9201
    assert concepts["SITE//A"] is None


# -- conventions ----------------------------------------------------------------------------


def test_birth_death_followup_and_static_rows(written: tuple[Path, dict], cohort: Cohort) -> None:
    root, _ = written
    rows = all_rows(root)
    persons = cohort.persons
    birth = rows.filter(pl.col("code") == "MEDS_BIRTH").select(
        pl.col("subject_id").alias("person_id"), pl.col("time").alias("birth"))
    expected = persons.filter(pl.col("birth_date").is_not_null()).select(
        "person_id", pl.col("birth_date").cast(pl.Datetime("us")).alias("birth"))
    assert birth.sort("person_id").equals(expected.sort("person_id"))

    ends = rows.filter(
        (pl.col("code") == "MEDS_DEATH") | pl.col("code").str.starts_with("FOLLOWUP_END//")
    ).select(pl.col("subject_id").alias("person_id"), "code", "time").sort("person_id")
    want = persons.sort("person_id").select(
        "person_id",
        pl.when(pl.col("exit") == "death").then(pl.lit("MEDS_DEATH"))
        .otherwise("FOLLOWUP_END//" + pl.col("exit")).alias("code"),
        (pl.col("index_date").cast(pl.Datetime("us"))
         + pl.duration(microseconds=micro_floor(pl.col("followup_end")))).alias("time"),
    )
    assert ends.equals(want)
    assert ends.filter(pl.col("code") == "MEDS_DEATH").height == (
        persons["exit"] == "death").sum()

    static = rows.filter(pl.col("time").is_null())
    assert static.filter(pl.col("code").str.starts_with("SITE//")).height == N_PERSONS
    assert static.filter(pl.col("code").str.starts_with("SEX//")).height == (
        persons["sex"].is_not_null().sum())
    ages = static.filter(pl.col("code") == "COVARIATE//age").sort("subject_id")
    exact = pl.coalesce("numeric_value_exact", pl.col("numeric_value").cast(pl.Float64))
    assert (ages.select(exact).to_series() == persons.sort("person_id")["age"]).all()
    arms = static.filter(pl.col("code").str.starts_with("COVARIATE//arm//"))
    assert arms.height == N_PERSONS
    # every static row comes before the subject's first timed row
    first_timed = rows.with_row_index("i").filter(pl.col("time").is_not_null()).group_by(
        "file", "subject_id").agg(pl.col("i").min())
    last_static = rows.with_row_index("i").filter(pl.col("time").is_null()).group_by(
        "file", "subject_id").agg(pl.col("i").max().alias("j"))
    order = first_timed.join(last_static, on=["file", "subject_id"])
    assert (order["j"] < order["i"]).all()


def test_event_times_values_and_end_rows(written: tuple[Path, dict], cohort: Cohort) -> None:
    root, _ = written
    rows = all_rows(root)
    events = cohort.events.join(cohort.persons.select("person_id", "index_date"), on="person_id")
    # END rows: one per event with a duration, at its end
    with_duration = events.filter(pl.col("end_time") > pl.col("time"))
    end_rows = rows.filter(pl.col("code").str.ends_with("//END"))
    assert end_rows.height == with_duration.height
    assert end_rows["end_time"].null_count() == end_rows.height
    got = end_rows.select(
        pl.col("subject_id").alias("person_id"),
        pl.col("code").str.strip_suffix("//END"), "time").sort(pl.all())
    want = with_duration.select(
        "person_id", "code",
        (pl.col("index_date").cast(pl.Datetime("us"))
         + pl.duration(microseconds=micro_floor(pl.col("end_time")))).alias("time"),
    ).sort(pl.all())
    assert got.equals(want)
    # numeric values: float32 in numeric_value, the exact float64 only where float32 rounds
    crp = rows.filter(pl.col("code") == "measurement:crp")
    original = cohort.events.filter(pl.col("code") == "measurement:crp")
    assert crp.height == original.height > 0
    rounded = crp["numeric_value"].cast(pl.Float64) != crp["numeric_value_exact"]
    assert crp["numeric_value_exact"].null_count() < crp.height // 10
    assert rounded.fill_null(False).sum() == crp["numeric_value_exact"].drop_nulls().len()
    ldh = rows.filter(pl.col("code") == "measurement:ldh")
    assert ldh["numeric_value_exact"].null_count() == ldh.height  # integers: float32 is exact
    assert np.allclose(
        np.sort(crp["numeric_value"].to_numpy()), np.sort(original["value"].to_numpy()),
        rtol=2.0**-23, atol=0,
    )


# -- round trip -----------------------------------------------------------------------------


def test_round_trip_gives_the_same_cohort(written: tuple[Path, dict], cohort: Cohort) -> None:
    root, _ = written
    back = from_meds(root)
    original_persons = cohort.persons.sort("person_id")
    expected_persons = original_persons.with_columns(
        (micro_floor(pl.col("followup_end")) / MPD).alias("followup_end"))
    assert back.persons.columns == original_persons.columns
    assert back.persons.equals(expected_persons)
    # follow-up ends within a microsecond of the original
    gap = (back.persons["followup_end"] - original_persons["followup_end"]).abs().max()
    assert gap < MICROSECOND

    original = cohort.events.sort("person_id", maintain_order=True)
    assert back.events.height == original.height
    expected = original.with_columns(
        (micro_floor(pl.col("time")) / MPD).alias("time"),
        (micro_floor(pl.col("end_time")) / MPD).alias("end_time"),
    )
    assert back.events.equals(expected)  # order, codes, values (float64 exact), null ends
    assert (back.events["time"] - original["time"]).abs().max() < MICROSECOND
    assert back.manifest.generator == "from_meds"
    assert back.manifest.concepts == cohort.manifest.concepts
    assert back.manifest.source_manifest["seed"] == cohort.manifest.seed


def test_round_trip_without_end_rows_and_by_split(cohort: Cohort, tmp_path: Path) -> None:
    out = tmp_path / "plain"
    counts = write_meds(cohort, out, end_events=False, split_fractions=(0.5, 0.25, 0.25))
    rows = all_rows(out)
    assert not rows["code"].str.ends_with("//END").any()
    assert sum(counts.values()) == rows.height
    back = from_meds(out)
    assert back.events.height == cohort.events.height
    held = from_meds(out, splits=["held_out"])
    ids = pl.read_parquet(out / SPLITS_FILE).filter(pl.col("split") == "held_out")["subject_id"]
    assert held.persons["person_id"].sort().equals(ids.sort().rename("person_id"))
    assert held.n_persons == N_PERSONS // 4


def test_round_trip_keeps_nulls_and_covariate_types(cohort: Cohort, tmp_path: Path) -> None:
    persons = cohort.persons.with_row_index("k").with_columns(
        pl.when(pl.col("k") % 3 == 0).then(None).otherwise(pl.col("sex")).alias("sex"),
        pl.when(pl.col("k") % 4 == 0).then(None).otherwise(pl.col("birth_date"))
        .alias("birth_date"),
        pl.when(pl.col("k") % 5 == 0).then(None).otherwise(pl.col("k").cast(pl.Int64) * 10**9 + 1)
        .alias("count"),
        pl.when(pl.col("k") % 7 == 0).then(None).otherwise(pl.col("k") % 2 == 0)
        .alias("flag"),
        pl.when(pl.col("k") % 6 == 0).then(None).otherwise(pl.col("arm")).alias("arm"),
    ).drop("k")
    odd = Cohort(persons, cohort.events, cohort.manifest)
    write_meds(odd, tmp_path / "nulls", shard_size=500)
    back = from_meds(tmp_path / "nulls")
    expected = persons.sort("person_id").with_columns(
        (micro_floor(pl.col("followup_end")) / MPD).alias("followup_end"))
    assert back.persons.schema == expected.schema
    assert back.persons.equals(expected)
    assert back.persons["sex"].null_count() == persons["sex"].null_count() > 0
    assert back.persons["count"].max() > 2**24  # integers float32 would round come back exact


# -- someone else's MEDS --------------------------------------------------------------------


def foreign_dataset(root: Path) -> None:
    """Three subjects in a MIMIC-like style: GENDER static, admissions, labs, stages."""
    def t(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text)

    rows = [
        (7, None, "GENDER//F", None, None),
        (7, None, "RACE//WHITE", None, None),
        (7, t("1950-05-02"), "MEDS_BIRTH", None, None),
        (7, t("2020-01-01T09:00"), "LAB//LDH", 250.0, None),  # before the index code
        (7, t("2020-01-03T12:00"), "ENROLLMENT", None, None),
        (7, t("2020-01-03T12:00"), "STAGE//IIIA", None, None),
        (7, t("2020-02-01T06:00"), "LAB//LDH", 310.5, None),
        (7, t("2020-03-01T18:00"), "STAGE//IV", None, "progression"),
        (7, t("2020-06-01T00:00"), "MEDS_DEATH", None, None),
        (3, None, "GENDER//M", None, None),
        (3, None, "RACE//ASIAN", None, None),
        (3, t("2019-12-31T23:00"), "ENROLLMENT", None, None),
        (3, t("2020-01-10T00:00"), "ADMISSION//ED", None, None),
        (3, t("2020-04-15T08:30"), "LAB//LDH", 199.0, None),
    ]
    frame = pl.DataFrame(
        rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String,
                      "numeric_value": pl.Float32, "text_value": pl.String}, orient="row",
    )
    (root / "data").mkdir(parents=True)
    table = frame.to_arrow().cast(meds.DataSchema.schema())
    meds.DataSchema.validate(table)
    # one subject per file, as MEDS allows
    pq.write_table(table.filter(pa.compute.equal(table["subject_id"], 7)), root / "data/a.parquet")
    pq.write_table(table.filter(pa.compute.equal(table["subject_id"], 3)), root / "data/b.parquet")


def test_foreign_dataset_becomes_a_cohort(tmp_path: Path) -> None:
    foreign_dataset(tmp_path)
    back = from_meds(tmp_path, state_prefix="STAGE//", index_code="ENROLLMENT",
                     initial_state="enrolled", default_site="mimic")
    persons = back.persons.sort("person_id")
    assert persons["person_id"].to_list() == [3, 7]
    assert persons["index_date"].to_list() == [dt.date(2019, 12, 31), dt.date(2020, 1, 3)]
    assert persons["birth_date"].to_list() == [None, dt.date(1950, 5, 2)]
    assert persons["sex"].to_list() == ["M", "F"]
    assert persons["site"].to_list() == ["mimic", "mimic"]
    assert persons["race"].to_list() == ["ASIAN", "WHITE"]
    assert persons["exit"].to_list() == ["censored", "death"]
    # subject 3: last row 2020-04-15 08:30 since 2019-12-31 00:00; subject 7: death
    assert persons["followup_end"].to_list() == pytest.approx(
        [106 + 8.5 / 24, (dt.date(2020, 6, 1) - dt.date(2020, 1, 3)).days], abs=1e-9)
    seven = back.events.filter(pl.col("person_id") == 7)
    # times count from the index date's midnight, so the stage at noon is not at time 0 and
    # the initial state is added there
    assert seven["code"].to_list() == [
        "state:enrolled", "observation:ENROLLMENT", "state:IIIA", "observation:LAB//LDH",
        "state:IV"]
    assert seven["time"].to_list() == pytest.approx([0.0, 0.5, 0.5, 29.25, 58.75])
    assert seven["value"].to_list()[3] == 310.5
    three = back.events.filter(pl.col("person_id") == 3)
    assert three["code"].to_list() == [
        "state:enrolled", "observation:ENROLLMENT", "observation:ADMISSION//ED",
        "observation:LAB//LDH"]
    assert three["time"][0] == 0.0 and three["time"][1] == pytest.approx(23 / 24)
    assert back.manifest.meds_import["before_index_dropped"] == 1
    with pytest.raises(MedsError, match="1 row\\(s\\) before the index; 1 subject\\(s\\): 7"):
        from_meds(tmp_path, state_prefix="STAGE//", index_code="ENROLLMENT",
                  initial_state="enrolled", before_index="error")


def test_foreign_dataset_errors(tmp_path: Path) -> None:
    foreign_dataset(tmp_path)
    with pytest.raises(MedsError, match="no index, as a row with code 'CONSENT' is missing; "
                                        "2 subject\\(s\\): 3, 7"):
        from_meds(tmp_path, index_code="CONSENT")
    # without an initial state, neither subject has a state at time 0 (7 is staged at noon)
    with pytest.raises(MedsError, match="no state at time 0 .* 2 subject\\(s\\): 3, 7; pass "
                                        "initial_state"):
        from_meds(tmp_path, state_prefix="STAGE//", index_code="ENROLLMENT")
    with pytest.raises(MedsError, match="not a MEDS dataset"):
        from_meds(tmp_path / "nowhere")
    pq.write_table(pa.table({"subject_id": [1], "code": ["X"]}), tmp_path / "data/c.parquet")
    with pytest.raises(MedsError, match="c.parquet: missing MEDS column\\(s\\) \\['time'\\]"):
        from_meds(tmp_path)


def test_static_rows_of_others(tmp_path: Path) -> None:
    def write(rows: list[tuple]) -> Path:
        root = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        (root / "data").mkdir(parents=True)
        frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                           "code": pl.String}, orient="row")
        pq.write_table(frame.to_arrow().cast(pa.schema(
            [("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string())])),
            root / "data" / "0.parquet")
        return root

    day, later = dt.datetime(2021, 5, 1), dt.datetime(2021, 5, 1, 10)
    plain = write([(1, day, "STAGE//I"), (2, day, "STAGE//II"), (2, later, "LAB//X")])
    back = from_meds(plain, state_prefix="STAGE//")  # no statics, no values
    assert back.persons.columns == list(PERSON_COLUMNS)
    assert back.persons["site"].to_list() == ["unknown", "unknown"]
    assert back.events["code"].to_list() == ["state:I", "state:II", "observation:LAB//X"]
    assert back.events["time"].to_list() == pytest.approx([0, 0, 10 / 24])
    assert back.persons["followup_end"].to_list() == pytest.approx([0, 10 / 24])
    twice = write([(4, None, "RACE//A"), (4, None, "RACE//B"), (4, day, "STAGE//I")])
    with pytest.raises(MedsError, match="subject 4 has several static rows for 'race'"):
        from_meds(twice, state_prefix="STAGE//")
    reserved = write([(4, None, "EXIT//death"), (4, day, "STAGE//I")])
    with pytest.raises(MedsError, match="code 'EXIT//death' would set the person field 'exit'"):
        from_meds(reserved, state_prefix="STAGE//")


# -- export errors --------------------------------------------------------------------------


def test_export_refusals(cohort: Cohort, written: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = written
    with pytest.raises(MedsError, match="directory is not empty"):
        write_meds(cohort, root)
    with pytest.raises(MedsError, match="split_fractions: .* sum to 1"):
        write_meds(cohort, tmp_path / "a", split_fractions=(0.8, 0.1, 0.2))
    with pytest.raises(MedsError, match="split_fractions: expected 3"):
        write_meds(cohort, tmp_path / "b", split_fractions=(0.8, 0.2))
    with pytest.raises(MedsError, match="shard_size"):
        write_meds(cohort, tmp_path / "c", shard_size=0)
    dated = cohort.persons.with_columns(pl.col("index_date").alias("enrolled_on"))
    odd = Cohort(dated, cohort.events, Manifest.new("test", cohort.n_persons))
    with pytest.raises(MedsError, match="persons.enrolled_on: covariate type Date"):
        write_meds(odd, tmp_path / "d")
    # overwrite replaces the shards: fewer shards leave no stale file behind
    small = tmp_path / "e"
    write_meds(cohort, small, shard_size=100)
    counts = write_meds(cohort, small, shard_size=10_000, overwrite=True)
    assert sorted(counts) == [str(f.relative_to(small)) for f in data_files(small)]
    assert len(counts) == 3


def test_a_partitioned_cohort_streams_to_the_same_files(tmp_path: Path, monkeypatch) -> None:
    from conftest import FULL_SCENARIO

    from trajectories.cohort import PartitionedCohort, read_partitioned
    from trajectories.simulate.sharded import simulate_sharded

    scenario = scenario_from_dict(dict(FULL_SCENARIO), source="<meds test>")
    simulator = MarkovSimulator(scenario, block_size=250)  # shards span blocks
    dataset = read_partitioned(simulate_sharded(simulator, tmp_path / "cohort", n=1100, seed=4))
    in_memory = write_meds(dataset.collect(), tmp_path / "whole", shard_size=300, seed=2)
    monkeypatch.setattr(PartitionedCohort, "collect",
                        lambda self, check=True: pytest.fail("the cohort was collected"))
    streamed = write_meds(dataset, tmp_path / "streamed", shard_size=300, seed=2)
    assert streamed == in_memory and len(streamed) >= 5
    for name in (*streamed, CODES_FILE, SPLITS_FILE):
        assert pl.read_parquet(tmp_path / "streamed" / name).equals(
            pl.read_parquet(tmp_path / "whole" / name)), name
    meta = {side: json.loads((tmp_path / side / DATASET_FILE).read_text())
            for side in ("whole", "streamed")}
    assert meta["streamed"]["trajectories"] == meta["whole"]["trajectories"]
    back = from_meds(tmp_path / "streamed")
    assert back.n_persons == 1100
