"""Loaders of reference data: survival tables (lifelines' datasets) and mstate long format."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines import KaplanMeierFitter
from lifelines.datasets import load_gbsg2, load_lymph_node, load_rossi, load_waltons

from trajectories import Cohort, ReferenceDataError
from trajectories.io import from_mstate, from_survival_table

ROSSI_COVARIATES = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]


# -- survival tables ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rossi() -> pd.DataFrame:
    return load_rossi()


@pytest.fixture(scope="module")
def rossi_cohort(rossi: pd.DataFrame) -> Cohort:
    return from_survival_table(rossi, "week", "arrest", time_unit="weeks", age_col="age")


def test_rossi_counts_times_and_states(rossi, rossi_cohort):
    persons, events = rossi_cohort.persons, rossi_cohort.events
    assert persons.height == len(rossi) == 432
    assert persons.get_column("person_id").to_list() == list(range(1, 433))
    assert (persons.get_column("exit") == "death").sum() == rossi["arrest"].sum() == 114
    assert (persons.get_column("exit") == "censored").sum() == 432 - 114
    np.testing.assert_array_equal(persons.get_column("followup_end").to_numpy(),
                                  rossi["week"].to_numpy() * 7.0)
    assert events.filter(pl.col("code") == "state:alive").height == 432
    assert events.filter(pl.col("time") == 0).get_column("code").unique().to_list() == [
        "state:alive"
    ]
    deaths = events.filter(pl.col("code") == "state:death")
    arrested = rossi.index[rossi["arrest"] == 1].to_numpy() + 1
    np.testing.assert_array_equal(deaths.get_column("person_id").to_numpy(), arrested)
    np.testing.assert_array_equal(deaths.get_column("time").to_numpy(),
                                  rossi["week"].to_numpy()[arrested - 1] * 7.0)
    assert rossi_cohort.manifest.generator == "survival_table"
    assert rossi_cohort.manifest.n_persons == 432
    assert rossi_cohort.manifest.reference_fingerprint == rossi_cohort.fingerprint()


def test_rossi_kaplan_meier_matches_lifelines_exactly(rossi, rossi_cohort):
    original = KaplanMeierFitter().fit(rossi["week"], rossi["arrest"])
    persons = rossi_cohort.persons
    loaded = KaplanMeierFitter().fit(
        persons.get_column("followup_end").to_numpy(),
        (persons.get_column("exit") == "death").to_numpy(),
    )
    np.testing.assert_array_equal(loaded.timeline, original.timeline * 7.0)
    np.testing.assert_array_equal(loaded.survival_function_.to_numpy(),
                                  original.survival_function_.to_numpy())
    assert loaded.median_survival_time_ == original.median_survival_time_ * 7.0


def test_rossi_covariates_and_birth_dates(rossi, rossi_cohort):
    persons = rossi_cohort.persons
    assert rossi_cohort.covariates == ROSSI_COVARIATES
    for name in ROSSI_COVARIATES:
        assert persons.schema[name] == pl.Float64
        np.testing.assert_array_equal(persons.get_column(name).to_numpy(),
                                      rossi[name].to_numpy().astype(float))
    index = dt.date(2000, 1, 1)
    assert persons.get_column("index_date").unique().to_list() == [index]
    first = persons.row(0, named=True)  # age 27 -> 27 * 365.25 = 9861.75 -> 9862 days
    assert first["birth_date"] == index - dt.timedelta(days=9862)
    assert persons.get_column("sex").null_count() == 432
    assert persons.get_column("site").unique().to_list() == ["reference"]


def test_polars_and_pandas_inputs_give_the_same_cohort(rossi, rossi_cohort):
    again = from_survival_table(pl.from_pandas(rossi), "week", "arrest", time_unit="weeks",
                                age_col="age")
    assert again.fingerprint() == rossi_cohort.fingerprint()


def test_gbsg2_text_covariates_days_and_round_trip(tmp_path):
    gbsg2 = load_gbsg2()
    cohort = from_survival_table(gbsg2, "time", "cens", age_col="age",
                                 covariates=["horTh", "tgrade", "age", "pnodes"],
                                 index_date="1985-06-01")
    persons = cohort.persons
    assert persons.schema["horTh"] == pl.String and persons.schema["tgrade"] == pl.String
    assert persons.schema["pnodes"] == pl.Float64
    assert persons.get_column("horTh").to_list() == gbsg2["horTh"].astype(str).tolist()
    assert (persons.get_column("exit") == "death").sum() == gbsg2["cens"].sum() == 299
    np.testing.assert_array_equal(persons.get_column("followup_end").to_numpy(),
                                  gbsg2["time"].to_numpy().astype(float))
    expected_birth = [dt.date(1985, 6, 1) - dt.timedelta(days=round(a * 365.25))
                      for a in gbsg2["age"]]
    assert persons.get_column("birth_date").to_list() == expected_birth
    back = Cohort.read(cohort.write(tmp_path / "gbsg2"))
    assert back.fingerprint() == cohort.fingerprint()
    assert back.manifest.reference_fingerprint == cohort.fingerprint()


def test_time_units_ids_sites_sex_and_non_death_events():
    frame = pl.DataFrame({
        "pid": [10, 20, 30, 40],
        "months": [1.0, 2.5, 0.0, 12.0],
        "relapsed": [True, False, True, False],
        "gender": ["female", " Male", None, "F"],
        "centre": ["A", "B", "A", "C"],
        "stage": pl.Series(["I", "II", "I", "III"], dtype=pl.Categorical),
    })
    cohort = from_survival_table(
        frame, "months", "relapsed", time_unit="months", id_col="pid", site_col="centre",
        sex_col="gender", initial_state="remission", event_state="relapse",
        event_is_death=False,
    )
    persons = cohort.persons
    assert persons.get_column("person_id").to_list() == [10, 20, 30, 40]
    assert persons.get_column("followup_end").to_list() == [30.4375, 2.5 * 30.4375, 0.0,
                                                            365.25]
    assert persons.get_column("exit").to_list() == ["absorbed", "censored", "absorbed",
                                                    "censored"]
    assert persons.get_column("sex").to_list() == ["F", "M", None, "F"]
    assert persons.get_column("site").to_list() == ["A", "B", "A", "C"]
    assert cohort.covariates == ["stage"] and persons.schema["stage"] == pl.String
    spells = cohort.state_spells().select("person_id", "state", "start", "stop", "next_state")
    assert spells.rows() == [
        (10, "remission", 0.0, 30.4375, "relapse"),
        (10, "relapse", 30.4375, 30.4375, None),
        (20, "remission", 0.0, 2.5 * 30.4375, None),
        (30, "remission", 0.0, 0.0, "relapse"),
        (30, "relapse", 0.0, 0.0, None),
        (40, "remission", 0.0, 365.25, None),
    ]
    years = from_survival_table(frame, "months", "relapsed", time_unit="years", covariates=[])
    assert years.persons.get_column("followup_end").to_list() == [365.25, 2.5 * 365.25, 0.0,
                                                                  12 * 365.25]
    assert years.covariates == []


def test_numeric_sex_needs_a_map():
    frame = pd.DataFrame({"t": [1, 2, 3], "e": [0, 1, 1], "sex": [1, 2, 1]})
    with pytest.raises(ReferenceDataError, match=r"sex column 'sex' holds codes.*sex_map"):
        from_survival_table(frame, "t", "e", sex_col="sex")
    cohort = from_survival_table(frame, "t", "e", sex_col="sex", sex_map={1: "M", 2: "F"})
    assert cohort.persons.get_column("sex").to_list() == ["M", "F", "M"]
    with pytest.raises(ReferenceDataError, match=r"values \[2\] that sex_map does not cover"):
        from_survival_table(frame, "t", "e", sex_col="sex", sex_map={1: "M"})
    with pytest.raises(ReferenceDataError, match=r"column 'sex' would clash.*sex_col='sex'"):
        from_survival_table(frame, "t", "e")
    text = pd.DataFrame({"t": [1, 2], "e": [0, 1], "s": ["f", "x"]})
    with pytest.raises(ReferenceDataError, match=r"values \['x'\].*female/male"):
        from_survival_table(text, "t", "e", sex_col="s")


def test_missing_columns_are_named_with_the_available_ones():
    waltons = load_waltons()
    with pytest.raises(ReferenceDataError, match=r"missing column\(s\) \['time', 'dead'\]; "
                                                 r"available columns: \['T', 'E', 'group'\]"):
        from_survival_table(waltons, "time", "dead")
    with pytest.raises(ReferenceDataError, match=r"missing column\(s\) \['age'\]"):
        from_survival_table(waltons, "T", "E", covariates=["group", "age"])


def test_bad_durations_are_counted_and_located():
    frame = pd.DataFrame({"t": [3.0, -1.0, np.nan, 4.0, -2.0], "e": [1, 0, 1, 0, 1]})
    with pytest.raises(ReferenceDataError,
                       match=r"column 't' .*missing, infinite or negative.*"
                             r"3 row\(s\): row 2, 3, 5"):
        from_survival_table(frame, "t", "e")
    with_ids = frame.assign(pid=[11, 12, 13, 14, 15])
    with pytest.raises(ReferenceDataError, match=r"3 row\(s\): id 12, 13, 15"):
        from_survival_table(with_ids, "t", "e", id_col="pid")
    infinite = pl.DataFrame({"t": [1.0, float("inf"), float("nan")], "e": [1, 1, 0]})
    with pytest.raises(ReferenceDataError, match=r"2 row\(s\): row 2, 3"):
        from_survival_table(infinite, "t", "e")


def test_bad_event_values_are_refused():
    frame = pd.DataFrame({"t": [1, 2, 3, 4], "e": [0, 1, 2, 1]})
    with pytest.raises(ReferenceDataError,
                       match=r"column 'e' must hold 0/1 or True/False; other values \[2\] in "
                             r"1 row\(s\): row 3"):
        from_survival_table(frame, "t", "e")
    missing = pd.DataFrame({"t": [1, 2], "e": [1.0, np.nan]})
    with pytest.raises(ReferenceDataError, match=r"0/1 or True/False.*row 2"):
        from_survival_table(missing, "t", "e")
    text = pd.DataFrame({"t": [1, 2], "e": ["yes", "no"]})
    with pytest.raises(ReferenceDataError, match=r"0/1 or True/False, got type String"):
        from_survival_table(text, "t", "e")


def test_ids_must_be_unique_integers():
    frame = pd.DataFrame({"t": [1, 2, 3, 4], "e": [0, 1, 1, 0], "pid": [5, 6, 5, 7]})
    with pytest.raises(ReferenceDataError,
                       match=r"duplicated ids \(several rows .* start column.*: id 5$"):
        from_survival_table(frame, "t", "e", id_col="pid")
    with pytest.raises(ReferenceDataError, match=r"must hold integers.*got type String"):
        from_survival_table(frame.assign(pid=["a", "b", "c", "d"]), "t", "e", id_col="pid")


def test_other_user_mistakes():
    frame = pd.DataFrame({"t": [1, 2], "e": [0, 1], "exit": ["x", "y"]})
    with pytest.raises(ReferenceDataError, match=r"unknown time_unit 'fortnights'"):
        from_survival_table(frame, "t", "e", time_unit="fortnights", covariates=[])
    with pytest.raises(ReferenceDataError, match=r"column 'exit' would clash"):
        from_survival_table(frame, "t", "e")
    with pytest.raises(ReferenceDataError, match=r"expected a pandas or polars DataFrame"):
        from_survival_table({"t": [1], "e": [1]}, "t", "e")
    with pytest.raises(ReferenceDataError, match=r"cannot read the pandas frame"):
        from_survival_table(frame.assign(x=[1, "a"]), "t", "e", covariates=["x"])
    with pytest.raises(ReferenceDataError, match=r"no rows"):
        from_survival_table(frame.iloc[:0], "t", "e", covariates=[])
    with pytest.raises(ReferenceDataError, match=r"event_state 'state 2' is not a usable"):
        from_survival_table(frame, "t", "e", covariates=[], event_state="state 2")
    with pytest.raises(ReferenceDataError, match=r"age column 'a' has infinite or negative"):
        from_survival_table(frame.assign(a=[40, -3]), "t", "e", covariates=[], age_col="a")


# -- mstate long format ---------------------------------------------------------------------------

ILLNESS_DEATH = ["healthy", "ill", "dead"]

# msprep output for an illness-death model (1 healthy, 2 ill, 3 dead; transitions 1: 1->2,
# 2: 1->3, 3: 2->3): id 1 censored healthy at 10; id 2 ill at 5, dead at 9; id 3 dead at 4;
# id 4 ill at 2, censored ill at 7.
HAND_WRITTEN = pl.DataFrame({
    "id":     [1, 1, 2, 2, 2, 3, 3, 4, 4, 4],
    "from":   [1, 1, 1, 1, 2, 1, 1, 1, 1, 2],
    "to":     [2, 3, 2, 3, 3, 2, 3, 2, 3, 3],
    "trans":  [1, 2, 1, 2, 3, 1, 2, 1, 2, 3],
    "Tstart": [0, 0, 0, 0, 5, 0, 0, 0, 0, 2],
    "Tstop":  [10, 10, 5, 5, 9, 4, 4, 2, 2, 7],
    "time":   [10, 10, 5, 5, 4, 4, 4, 2, 2, 5],
    "status": [0, 0, 1, 0, 1, 0, 1, 1, 0, 0],
    "age":    [50, 50, 61, 61, 61, 72, 72, 45, 45, 45],
    "sex":    ["F", "F", "M", "M", "M", "F", "F", "M", "M", "M"],
})


def test_hand_written_illness_death_paths():
    cohort = from_mstate(HAND_WRITTEN, state_names=ILLNESS_DEATH, sex_col="sex",
                         time_unit="weeks")
    assert cohort.events.select("person_id", "time", "code").rows() == [
        (1, 0.0, "state:healthy"),
        (2, 0.0, "state:healthy"), (2, 35.0, "state:ill"), (2, 63.0, "state:dead"),
        (3, 0.0, "state:healthy"), (3, 28.0, "state:dead"),
        (4, 0.0, "state:healthy"), (4, 14.0, "state:ill"),
    ]
    persons = cohort.persons
    assert persons.select("person_id", "followup_end", "exit", "sex", "age").rows() == [
        (1, 70.0, "censored", "F", 50.0),
        (2, 63.0, "death", "M", 61.0),
        (3, 28.0, "death", "F", 72.0),
        (4, 49.0, "censored", "M", 45.0),
    ]
    assert cohort.covariates == ["age"]  # trans and time are msprep's, not covariates
    manifest = cohort.manifest
    assert manifest.generator == "mstate"
    assert manifest.reference_fingerprint == cohort.fingerprint()
    assert manifest.model_extra["death_states"] == ["dead"]
    assert manifest.model_extra["absorbing_states"] == ["dead"]


def test_state_codes_names_and_death_states():
    as_dict = from_mstate(HAND_WRITTEN, state_names={1: "healthy", 2: "ill", 3: "dead"},
                          covariates=[])
    as_list = from_mstate(HAND_WRITTEN, state_names=ILLNESS_DEATH, covariates=[])
    assert as_dict.fingerprint() == as_list.fingerprint()
    with pytest.raises(ReferenceDataError, match=r"cannot tell which of the absorbing state\(s\) "
                                                 r"\['state_3'\] mean death"):
        from_mstate(HAND_WRITTEN, covariates=[])
    by_code = from_mstate(HAND_WRITTEN, death_states=[3], covariates=[])
    assert by_code.events.get_column("code").unique().sort().to_list() == [
        "state:state_1", "state:state_2", "state:state_3"
    ]
    assert by_code.persons.get_column("exit").to_list() == ["censored", "death", "death",
                                                            "censored"]
    absorbed = from_mstate(HAND_WRITTEN, death_states=[], covariates=[])
    assert absorbed.persons.get_column("exit").to_list() == ["censored", "absorbed",
                                                             "absorbed", "censored"]
    text = HAND_WRITTEN.with_columns(
        pl.col("from", "to").replace_strict([1, 2, 3], ["well", "sick", "died"])
    )
    named = from_mstate(text.to_pandas(), covariates=[])
    assert named.persons.get_column("exit").to_list() == ["censored", "death", "death",
                                                          "censored"]
    with pytest.raises(ReferenceDataError,
                       match=r"2 names for states numbered 1\.\.2 .* state code\(s\) \[3\]"):
        from_mstate(HAND_WRITTEN, state_names=["healthy", "ill"], covariates=[])
    with pytest.raises(ReferenceDataError, match=r"death state 'gone' does not occur"):
        from_mstate(HAND_WRITTEN, state_names=ILLNESS_DEATH, death_states=["gone"],
                    covariates=[])
    with pytest.raises(ReferenceDataError, match=r"death state\(s\) \['ill'\] are left again .*"
                                                 r"2 row\(s\): id 2, 4"):
        from_mstate(HAND_WRITTEN, state_names=ILLNESS_DEATH, death_states=["ill", "dead"],
                    covariates=[])


def _broken(**changes: tuple[int, object]) -> pl.DataFrame:
    """HAND_WRITTEN with single cells changed: column=(row, value)."""
    frame = HAND_WRITTEN.clone()
    for column, (row, value) in changes.items():
        values = frame.get_column(column).to_list()
        values[row] = value
        frame = frame.with_columns(pl.Series(column, values))
    return frame


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"status": (3, 1)}, r"more than one status=1 in the same at-risk block.*id 2"),
        ({"from": (4, 1)}, r"a transition starts from a state the person is not in.*id 2"),
        ({"from": (9, 3)}, r"a transition starts from a state the person is not in.*id 4"),
        ({"Tstop": (9, 1)}, r"Tstop before Tstart; 1 row\(s\): id 4"),
        ({"Tstop": (2, 6)}, r"disagree on Tstop; 1 row\(s\): id 2"),
        ({"Tstart": (4, 6)}, r"Tstart differs from the previous block's Tstop.*id 2"),
        ({"status": (7, 0)}, r"rows continue after follow-up ended.*id 4"),
        ({"status": (2, 2)}, r"column 'status' must hold 0/1"),
        ({"age": (1, 51)}, r"column 'age' varies within a person.*id 1"),
        ({"from": (0, None)}, r"column 'from' has missing states; 1 row\(s\): id 1"),
    ],
)
def test_inconsistent_long_format_is_refused(changes, message):
    with pytest.raises(ReferenceDataError, match=message):
        from_mstate(_broken(**changes), state_names=ILLNESS_DEATH, covariates=["age"])


def test_delayed_entry_is_refused_or_shifted():
    late = HAND_WRITTEN.with_columns(
        pl.col("Tstart", "Tstop") + pl.col("id").replace_strict({1: 0, 2: 3, 3: 0, 4: 1})
    )
    with pytest.raises(ReferenceDataError, match=r"must start at Tstart 0.*2 row\(s\): id 2, 4"):
        from_mstate(late, state_names=ILLNESS_DEATH)
    shifted = from_mstate(late, state_names=ILLNESS_DEATH, delayed_entry="shift",
                          covariates=[])
    original = from_mstate(HAND_WRITTEN, state_names=ILLNESS_DEATH, covariates=[])
    assert shifted.events.equals(original.events)
    assert shifted.persons.equals(original.persons)
    with pytest.raises(ReferenceDataError, match=r"missing column\(s\) \['Tstart'\]"):
        from_mstate(late.rename({"Tstart": "start"}), state_names=ILLNESS_DEATH)
    with pytest.raises(ReferenceDataError, match=r"delayed_entry must be one of"):
        from_mstate(late, state_names=ILLNESS_DEATH, delayed_entry="drop")


def test_lymph_node_illness_death_from_real_data():
    """GBSG (lifelines' lymph node data) as mstate's ebmt3 example: recurrence, then death.

    ``rectime``/``censrec`` is recurrence-free survival (recurrence or death) and
    ``survtime``/``censdead`` overall survival, both in days; a death at ``rectime`` without
    an earlier recurrence is a direct transition, as msprep decides it.
    """
    wide = pl.from_pandas(load_lymph_node().reset_index())
    recurred = (pl.col("censrec") == 1) & ~(
        (pl.col("censdead") == 1) & (pl.col("rectime") == pl.col("survtime"))
    )
    wide = wide.with_columns(recurred.cast(pl.Int64).alias("rec"))
    first = wide.select(
        "id", "age", pl.lit(1).alias("from"),
        pl.when(pl.col("rec") == 1).then("rectime").otherwise("survtime").alias("Tstop"),
        pl.col("rec"), ((pl.col("rec") == 0) & (pl.col("censdead") == 1)).cast(pl.Int64)
        .alias("direct"),
    )
    rows = pl.concat(how="vertical_relaxed", items=[
        first.select("id", "age", "from", pl.lit(2).alias("to"), pl.lit(0).alias("Tstart"),
                     "Tstop", pl.col("rec").alias("status")),
        first.select("id", "age", "from", pl.lit(3).alias("to"), pl.lit(0).alias("Tstart"),
                     "Tstop", pl.col("direct").alias("status")),
        wide.filter(pl.col("rec") == 1).select(
            "id", "age", pl.lit(2).alias("from"), pl.lit(3).alias("to"),
            pl.col("rectime").alias("Tstart"), pl.col("survtime").alias("Tstop"),
            pl.col("censdead").alias("status")),
    ]).sort("id", "Tstart", "from", "to")
    cohort = from_mstate(rows, state_names=["disease_free", "recurrence", "dead"],
                         age_col="age")
    source = wide.sort("id")
    persons = cohort.persons
    assert persons.height == 686
    assert persons.get_column("followup_end").to_list() == source.get_column(
        "survtime").cast(pl.Float64).to_list()
    assert (persons.get_column("exit") == "death").sum() == source["censdead"].sum() == 171
    assert (persons.get_column("exit") == "censored").sum() == 515
    counts = dict(cohort.state_spells().filter(pl.col("next_state").is_not_null())
                  .group_by("state", "next_state").len().select(
                      pl.concat_str("state", "next_state", separator=">"), "len").rows())
    assert counts == {"disease_free>recurrence": 278, "disease_free>dead": 21,
                      "recurrence>dead": 150}
    recurrences = cohort.events.filter(pl.col("code") == "state:recurrence")
    assert recurrences.get_column("time").to_list() == source.filter(
        pl.col("rec") == 1).get_column("rectime").cast(pl.Float64).to_list()
    # 17 recurrences at the last follow-up: msprep writes a zero-length censored block.
    zero = rows.filter((pl.col("from") == 2) & (pl.col("Tstart") == pl.col("Tstop")))
    assert zero.height == 17 and zero.get_column("status").sum() == 0


# -- randomly generated paths in msprep long format -----------------------------------------------

NAMES = {1: "healthy", 2: "ill", 3: "dead", 4: "withdrawn"}
RATES = np.array([  # per year, row = from, column = to (states 1..4)
    [0.0, 0.30, 0.05, 0.00],
    [0.20, 0.0, 0.15, 0.05],
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
])


def _simulate(n: int, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Reversible illness-death paths with censoring; returns (long rows, expected spells)."""
    state = np.zeros(n, dtype=np.int64)  # 0-based states
    now = np.zeros(n)
    censor = rng.uniform(0.0, 15.0, n)
    active = np.ones(n, dtype=bool)
    total = RATES.sum(axis=1)
    spells, blocks = [], []
    step = 0
    while active.any():
        who = np.flatnonzero(active)
        s = state[who]
        sojourn = rng.exponential(1.0 / total[s])
        probabilities = RATES[s] / total[s, None]
        target = (rng.random(who.size)[:, None] > np.cumsum(probabilities, axis=1)).sum(axis=1)
        jumps = now[who] + sojourn < censor[who]
        stop = np.where(jumps, now[who] + sojourn, censor[who])
        nxt = np.where(jumps, target, -1)
        spells.append((who, s, now[who], stop, nxt, np.full(who.size, 2 * step)))
        blocks.append((who, s, now[who], stop, nxt))
        arrived_absorbing = jumps & (total[np.maximum(nxt, 0)] == 0)
        a = who[arrived_absorbing]
        spells.append((a, nxt[arrived_absorbing], stop[arrived_absorbing],
                       stop[arrived_absorbing], np.full(a.size, -1), np.full(a.size, 2 * step + 1)))
        state[who[jumps]] = target[jumps]
        now[who] = stop
        active[who[~jumps | arrived_absorbing]] = False
        step += 1

    def stack(parts, i):
        return np.concatenate([p[i] for p in parts])

    expected = pl.DataFrame({
        "person_id": stack(spells, 0) + 1, "state": stack(spells, 1) + 1,
        "start": stack(spells, 2), "stop": stack(spells, 3),
        "next_state": stack(spells, 4) + 1, "order": stack(spells, 5),
    }).sort("person_id", "order")
    expected = expected.select(
        "person_id",
        pl.col("state").replace_strict(NAMES, return_dtype=pl.String),
        pl.col("start") * 365.25,
        pl.col("stop") * 365.25,
        pl.when(pl.col("next_state") > 0).then(pl.col("next_state"))
        .replace_strict(NAMES, default=None, return_dtype=pl.String).alias("next_state"),
    )
    who, s, start, stop, nxt = (stack(blocks, i) for i in range(5))
    allowed = [np.flatnonzero(RATES[k] > 0) for k in range(RATES.shape[0])]
    width = np.array([a.size for a in allowed])
    flat = np.concatenate(allowed)
    offset = np.concatenate([[0], np.cumsum(width)[:-1]])
    row_block = np.repeat(np.arange(who.size), width[s])
    within = np.arange(row_block.size) - np.repeat(np.cumsum(width[s]) - width[s], width[s])
    to = flat[offset[s][row_block] + within]
    transition = np.cumsum(RATES.ravel() > 0).reshape(RATES.shape)
    long = pl.DataFrame({
        "id": who[row_block] + 1, "from": s[row_block] + 1, "to": to + 1,
        "trans": transition[s[row_block], to],
        "Tstart": start[row_block], "Tstop": stop[row_block],
        "status": (nxt[row_block] == to).astype(np.int64),
        "arm": np.where((who[row_block] % 3) == 0, "control", "treated"),
    }).sort("id", "Tstart", "from", "to")
    return long, expected


def test_random_paths_round_trip_through_long_format():
    rng = np.random.default_rng(20240611)
    long, expected = _simulate(3000, rng)
    shuffled = long.sample(fraction=1.0, shuffle=True, seed=7)  # row order must not matter
    cohort = from_mstate(shuffled.to_pandas(), state_names=NAMES, time_unit="years")
    spells = cohort.state_spells().select(expected.columns)
    assert spells.height == expected.height > 3000
    assert spells.rows() == expected.rows()
    persons = cohort.persons
    last = expected.group_by("person_id", maintain_order=True).agg(pl.col("state").last())
    exits = last.get_column("state").replace_strict(
        {"dead": "death", "withdrawn": "absorbed"}, default="censored")
    assert persons.get_column("exit").to_list() == exits.to_list()
    counts = persons.get_column("exit").value_counts()
    assert set(counts.get_column("exit")) == {"death", "absorbed", "censored"}
    assert persons.get_column("arm").to_list() == [
        "control" if i % 3 == 0 else "treated" for i in range(3000)
    ]
    revisits = spells.group_by("person_id", "state").len().filter(pl.col("len") > 1)
    assert revisits.height > 100  # the paths do go back and forth between healthy and ill
