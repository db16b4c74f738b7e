"""Tables of real data in: competing-risk codes, counting-process rows with recurrent events,
mstate self-transitions, long measurement tables, valid names, and `trajectories import`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from lifelines import AalenJohansenFitter
from lifelines.datasets import load_recur

from trajectories import Cohort
from trajectories.errors import CohortSchemaError, ReferenceDataError
from trajectories.io import (
    add_measurements,
    from_counting_process,
    from_mstate,
    from_survival_table,
)
from trajectories.io.table.names import valid_names


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trajectories.cli", *args],
                          capture_output=True, text=True)


def _paths(cohort: Cohort) -> dict[int, list[str]]:
    states = cohort.events.filter(pl.col("code").str.starts_with("state:"))
    return {pid: codes for pid, codes in states.group_by("person_id", maintain_order=True)
            .agg(pl.col("code").str.strip_prefix("state:")).iter_rows()}


# -- names -----------------------------------------------------------------------------------------


def test_valid_names_map_each_value_once_and_never_merge():
    mapping = valid_names(["Univ. of Zurich", "1", 2.0, "ok", "Univ_of_Zurich", "a b", "a_b"],
                          "site")
    assert mapping == {"Univ. of Zurich": "Univ._of_Zurich", "1": "site_1", 2.0: "site_2",
                       "ok": "ok", "Univ_of_Zurich": "Univ_of_Zurich", "a b": "a_b_2",
                       "a_b": "a_b"}
    assert valid_names(["x" * 80], "s")["x" * 80] == "x" * 64


def test_site_and_level_names_are_made_valid_and_kept_in_the_manifest():
    frame = pd.DataFrame({"t": [5.0, 6, 7, 8], "e": [1, 0, 1, 0],
                          "centre": ["Univ. of Zurich", "Univ. of Zurich", "3", "3"],
                          "ecog": ["ECOG 0", "ECOG 2", "ECOG 0", "2"]})
    cohort = from_survival_table(frame, "t", "e", site_col="centre")
    assert cohort.persons["site"].to_list() == ["Univ._of_Zurich"] * 2 + ["site_3"] * 2
    assert cohort.persons["ecog"].to_list() == ["ECOG_0", "ECOG_2", "ECOG_0", "ecog_2"]
    assert cohort.manifest.name_mapping == {
        "site": {"Univ. of Zurich": "Univ._of_Zurich", "3": "site_3"},
        "ecog": {"ECOG 0": "ECOG_0", "ECOG 2": "ECOG_2", "2": "ecog_2"},
    }
    # The renamed sites are usable by the fit and the scenario it writes (this used to fail).
    from trajectories.fit import MultiStateModel

    big = pd.concat([frame] * 10, ignore_index=True)
    big["t"] = np.arange(1, big.shape[0] + 1, dtype=float)
    model = MultiStateModel(covariates=[]).fit(from_survival_table(big, "t", "e",
                                                                   site_col="centre"))
    assert {s.name for s in model.to_scenario().sites} == {"Univ._of_Zurich", "site_3"}


# -- competing risks in one row per person -------------------------------------------------------


def test_status_codes_give_competing_absorbing_states():
    rng = np.random.default_rng(3)
    n = 400
    time = rng.exponential(300, n) + 0.5
    status = rng.choice([0, 1, 2], n, p=[0.3, 0.45, 0.25])
    frame = pd.DataFrame({"time": time, "status": status, "age": rng.normal(60, 8, n)})
    cohort = from_survival_table(frame, "time", "status",
                                 status_codes={0: "censored", 1: "relapse", 2: "dead"})
    exits = cohort.persons["exit"].to_numpy()
    assert (exits == "censored").sum() == (status == 0).sum()
    assert (exits == "absorbed").sum() == (status == 1).sum()
    assert (exits == "death").sum() == (status == 2).sum()
    assert cohort.manifest.death_states == ["dead"]
    paths = _paths(cohort)
    assert paths[1][0] == "alive" and len(paths[1]) == (1 if status[0] == 0 else 2)
    # The cumulative incidence of relapse read back from the cohort is lifelines' AJ.
    spells = cohort.state_spells().filter(pl.col("first"))
    code = spells["next_state"].replace_strict({"relapse": 1, "dead": 2}, default=0).to_numpy()
    ajf = AalenJohansenFitter(calculate_variance=False).fit(time, status, event_of_interest=1)
    ours = AalenJohansenFitter(calculate_variance=False).fit(
        spells["stop"].to_numpy(), code, event_of_interest=1)
    assert np.allclose(ours.cumulative_density_.to_numpy()[-1],
                       ajf.cumulative_density_.to_numpy()[-1], atol=1e-12)


def test_unknown_status_codes_are_named_with_their_rows():
    frame = pd.DataFrame({"t": [1.0, 2, 3], "s": [0, 1, 7]})
    with pytest.raises(ReferenceDataError, match=r"status code\(s\) \['7'\] .* row\(s\): row 3"):
        from_survival_table(frame, "t", "s", status_codes={0: "censored", 1: "death"})
    with pytest.raises(ReferenceDataError, match="name no code for 'censored'"):
        from_survival_table(frame, "t", "s", status_codes={1: "relapse", 7: "death"})


# -- counting-process rows ----------------------------------------------------------------------


def _cgd_like() -> pd.DataFrame:
    return pd.DataFrame({
        "id": [1, 1, 1, 2, 2, 3, 4, 4],
        "start": [0, 10, 20, 0, 5, 0, 0, 12],
        "stop": [10, 20, 30, 5, 9, 7, 12, 40],
        "status": [1, 1, 0, 1, 2, 0, 1, 1],
        "treat": ["placebo"] * 3 + ["rIFN-g"] * 2 + ["placebo"] + ["rIFN-g"] * 2,
        "center": ["Univ. of Zurich"] * 3 + ["Amsterdam"] * 2 + ["1"] + ["Amsterdam"] * 2,
    })


def test_counting_process_numbers_recurrent_episodes_and_ends_on_death():
    cohort = from_counting_process(_cgd_like(), "id", "start", "stop", "status",
                                   status_codes={0: "censored", 1: "infection", 2: "death"},
                                   site_col="center")
    assert _paths(cohort) == {
        1: ["at_risk", "infection", "infection_2"],
        2: ["at_risk", "infection", "death"],
        3: ["at_risk"],
        4: ["at_risk", "infection", "infection_2"],
    }
    persons = cohort.persons
    assert persons["followup_end"].to_list() == [30.0, 9.0, 7.0, 40.0]
    assert persons["exit"].to_list() == ["censored", "death", "censored", "censored"]
    times = cohort.events.filter(pl.col("person_id") == 4)["time"].to_list()
    assert times == [0.0, 12.0, 40.0]
    manifest = cohort.manifest
    assert manifest.episodes == {"infection": 2}
    assert manifest.recurrent_states == ["infection"]
    assert manifest.absorbing_states == ["death"]
    assert manifest.name_mapping == {"site": {"Univ. of Zurich": "Univ._of_Zurich",
                                              "1": "site_1"}}


def test_counting_process_on_lifelines_recur_keeps_every_event():
    recur = load_recur()
    cohort = from_counting_process(recur, "ID", "TIME0", "TIME1", "CENSOR",
                                   event_state="recurrence", covariates=["AGE", "TREAT"])
    states = cohort.events.filter(pl.col("code").str.starts_with("state:"))
    assert cohort.n_persons == recur["ID"].nunique()
    assert states.height - cohort.n_persons == int(recur["CENSOR"].sum())
    most = int(recur.groupby("ID")["CENSOR"].sum().max())
    assert cohort.manifest.episodes == {"recurrence": most}
    last = recur.sort_values("TIME1").groupby("ID")["TIME1"].max().sort_index()
    assert cohort.persons["followup_end"].to_list() == last.astype(float).tolist()


@pytest.mark.parametrize(("change", "message"), [
    ({"stop": [10, 20, 30, 5, 5, 7, 12, 40]}, r"'stop' must be after 'start'.*id 2"),
    ({"start": [0, 11, 20, 0, 5, 0, 0, 12]}, r"differs from the previous row's 'stop'.*id 1"),
    ({"start": [-1, 10, 20, 0, 5, 0, 0, 12]}, r"negative values.*id 1"),
    ({"start": [0, 10, 20, 2, 5, 0, 0, 12]}, r"must start at 'start' 0.*id 2"),
    ({"status": [2, 1, 0, 1, 2, 0, 1, 1]}, r"rows continue after death.*id 1"),
    ({"status": [1, 1, 0, 1, 5, 0, 1, 1]}, r"status code\(s\) \['5'\].*id 2"),
    ({"treat": ["placebo", "other", "placebo", "a", "a", "a", "a", "a"]},
     r"column 'treat' varies within a person.*id 1"),
])
def test_counting_process_bad_rows_are_named(change, message):
    frame = _cgd_like().assign(**change)
    with pytest.raises(ReferenceDataError, match=message):
        from_counting_process(frame, "id", "start", "stop", "status",
                              status_codes={0: "censored", 1: "infection", 2: "death"},
                              covariates=["treat"])


def test_delayed_entry_can_be_shifted():
    frame = _cgd_like().assign(start=[0, 10, 20, 2, 5, 0, 0, 12])
    cohort = from_counting_process(frame, "id", "start", "stop", "status", delayed_entry="shift",
                                   status_codes={0: "censored", 1: "infection", 2: "death"})
    assert cohort.persons.filter(pl.col("person_id") == 2)["followup_end"].item() == 7.0


# -- mstate self-transitions -----------------------------------------------------------------------


def test_mstate_self_transition_is_a_recurrent_episode():
    frame = pd.DataFrame({
        "id": [1, 1, 1, 1, 1, 1, 2, 2],
        "from": [1, 1, 2, 2, 2, 2, 1, 1],
        "to": [2, 3, 2, 3, 2, 3, 2, 3],
        "Tstart": [0, 0, 4, 4, 9, 9, 0, 0],
        "Tstop": [4, 4, 9, 9, 15, 15, 6, 6],
        "status": [1, 0, 1, 0, 0, 1, 0, 1],
    })
    cohort = from_mstate(frame, state_names=["healthy", "flare", "dead"], covariates=[])
    assert _paths(cohort) == {1: ["healthy", "flare", "flare_2", "dead"], 2: ["healthy", "dead"]}
    assert cohort.manifest.episodes == {"flare": 2}
    assert cohort.persons["exit"].to_list() == ["death", "death"]


# -- measurements ---------------------------------------------------------------------------------


def _small_cohort() -> Cohort:
    frame = pd.DataFrame({"id": [1, 2, 3], "t": [100.0, 50.0, 80.0], "e": [1, 0, 1]})
    return from_survival_table(frame, "t", "e", id_col="id")


def test_measurements_become_events_after_the_state_at_the_same_time():
    long = pd.DataFrame({"id": [1, 1, 2, 3], "day": [0.0, 30.0, 10.0, 80.0],
                         "test": ["bili", "bili", "serum albumin", "bili"],
                         "value": ["1.5", "2.5", "3.9", "0.7"], "unit": ["mg/dl"] * 2 +
                         ["g/dl"] + ["mg/dl"]})
    cohort = add_measurements(_small_cohort(), long, time_col="day", name_col="test",
                              unit_col="unit")
    first = cohort.events.filter(pl.col("person_id") == 1)
    assert first["code"].to_list() == ["state:alive", "measurement:bili", "measurement:bili",
                                       "state:death"]
    assert first["value"].to_list()[1:3] == [1.5, 2.5]
    last = cohort.events.filter(pl.col("person_id") == 3)["code"].to_list()
    assert last == ["state:alive", "state:death", "measurement:bili"]
    assert cohort.manifest.measurements == {"bili": {"unit": "mg/dl", "rows": 3},
                                            "serum_albumin": {"unit": "g/dl", "rows": 1}}
    assert cohort.manifest.name_mapping == {"measurement": {"serum albumin": "serum_albumin"}}


@pytest.mark.parametrize(("rows", "message"), [
    ({"id": [1, 9], "time": [1.0, 2.0]}, r"names persons the cohort does not have.*id 9"),
    ({"id": [1, 2], "time": [1.0, 60.0]}, r"after the person's follow-up ended.*id 2"),
    ({"id": [1, 2], "time": [1.0, -2.0]}, r"negative values.*id 2"),
    ({"id": [1, 2], "time": [1.0, 2.0], "value": ["1.0", "high"]},
     r"missing or non-numeric values \(e.g. \['high'\]\).*id 2"),
    ({"id": [1, 2], "time": [1.0, 2.0], "unit": ["mg", "g"], "name": ["x", "x"]},
     r"measurement 'x' has several units"),
])
def test_bad_measurement_rows_are_named(rows, message):
    frame = pd.DataFrame({"name": ["bili", "bili"], "value": [1.0, 2.0], **rows})
    with pytest.raises(ReferenceDataError, match=message):
        add_measurements(_small_cohort(), frame, unit_col="unit" if "unit" in rows else None)


def test_a_measurement_before_the_initial_state_is_refused():
    cohort = _small_cohort()
    events = pl.concat([
        cohort.events.head(0).vstack(pl.DataFrame(
            {"person_id": [1], "time": [0.0], "end_time": [None], "code": ["measurement:x"],
             "value": [1.0]}, schema=cohort.events.schema)),
        cohort.events,
    ])
    with pytest.raises(CohortSchemaError, match="first row must be their initial 'state:'"):
        Cohort(cohort.persons, events, cohort.manifest)


# -- the command line ---------------------------------------------------------------------------


def test_import_table_counting_process_with_measurements(tmp_path: Path):
    _cgd_like().to_csv(tmp_path / "cgd.csv", index=False)
    pd.DataFrame({"id": [1, 2, 4], "day": [3.0, 4.0, 20.0], "lab": ["crp"] * 3,
                  "result": [5.0, 7.5, 1.0]}).to_csv(tmp_path / "labs.csv", index=False)
    out = tmp_path / "cohort"
    result = cli("import", "table", str(tmp_path / "cgd.csv"), "--out", str(out), "--id", "id",
                 "--start", "start", "--time", "stop", "--status", "status",
                 "--status-codes", "0=censored,1=infection,2=death", "--site", "center",
                 "--measurements", str(tmp_path / "labs.csv"),
                 "--measurement-columns", "time=day,name=lab,value=result")
    assert result.returncode == 0, result.stderr
    assert "'Univ. of Zurich' -> 'Univ._of_Zurich'" in result.stdout
    assert "'infection' entered up to 2 times" in " ".join(result.stdout.split())
    cohort = Cohort.read(out)
    assert cohort.n_persons == 4
    assert cohort.events.filter(pl.col("code") == "measurement:crp")["value"].to_list() == [
        5.0, 7.5, 1.0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["episodes"] == {"infection": 2}


def test_import_table_bad_input_names_file_column_rows_and_writes_nothing(tmp_path: Path):
    bad = _cgd_like().assign(stop=[10, 20, 30, 5, 5, 7, 12, 40])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "never"
    result = cli("import", "table", str(tmp_path / "bad.csv"), "--out", str(out), "--id", "id",
                 "--start", "start", "--time", "stop", "--status", "status",
                 "--status-codes", "0=censored,1=infection,2=death")
    assert result.returncode == 2
    assert "bad.csv: counting-process table: 'stop' must be after 'start'" in result.stderr
    assert "id 2" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    # Several rows per person without --start: one clear message.
    result = cli("import", "table", str(tmp_path / "bad.csv"), "--out", str(out), "--id", "id",
                 "--time", "stop", "--status", "status")
    assert result.returncode == 2 and "duplicated ids" in result.stderr
    assert "start column" in result.stderr and not out.exists()
    pd.DataFrame({"id": [1], "time": [1.0], "name": ["x"], "value": [1.0]}).to_csv(
        tmp_path / "m.csv", index=False)
    result = cli("import", "table", str(tmp_path / "nothere.csv"), "--out", str(out),
                 "--time", "t", "--status", "e")
    assert result.returncode == 2 and "nothere.csv: no such file" in result.stderr


def test_import_mstate_from_csv(tmp_path: Path):
    pd.DataFrame({
        "id": [1, 1, 1, 1, 2, 2], "from": [1, 1, 2, 2, 1, 1], "to": [2, 3, 2, 3, 2, 3],
        "Tstart": [0, 0, 4, 4, 0, 0], "Tstop": [4, 4, 9, 9, 6, 6],
        "status": [1, 0, 1, 0, 0, 1], "trans": [1, 2, 3, 4, 1, 2],
    }).to_csv(tmp_path / "ms.csv", index=False)
    out = tmp_path / "ms"
    result = cli("import", "mstate", str(tmp_path / "ms.csv"), "--out", str(out),
                 "--state-names", "healthy,flare,dead")
    assert result.returncode == 0, result.stderr
    assert _paths(Cohort.read(out)) == {1: ["healthy", "flare", "flare_2"], 2: ["healthy", "dead"]}


def test_history_columns_cannot_be_covariates():
    frame = pd.DataFrame({"t": [1.0, 2.0], "e": [0, 1], "x": [0.5, 0.7]})
    with pytest.raises(ReferenceDataError, match=r"\['e'\] define the persons' histories"):
        from_survival_table(frame, "t", "e", covariates=["x", "e"])
    with pytest.raises(ReferenceDataError, match=r"\['start'\] define the persons' histories"):
        from_counting_process(_cgd_like(), "id", "start", "stop", "status",
                              covariates=["start"])


def test_os_errors_exit_2_naming_the_path(tmp_path: Path):
    pd.DataFrame({"t": [1.0, 2.0], "e": [0, 1]}).to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "afile").write_text("x")
    result = cli("import", "table", str(tmp_path / "p.csv"), "--out",
                 str(tmp_path / "afile" / "sub"), "--time", "t", "--status", "e")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "afile/sub: Not a directory" in " ".join(result.stderr.split())


def test_unreadable_files_and_text_numbers_are_explained(tmp_path: Path):
    from trajectories.io import read_table

    (tmp_path / "ragged.csv").write_text("id,t,e\n1,5,1\n3,7,1,9\n")
    with pytest.raises(ReferenceDataError, match="ragged.csv: cannot read it.*more fields"):
        read_table(tmp_path / "ragged.csv")
    (tmp_path / "latin.csv").write_bytes(b"id,t,e,site\n1,5,1,H\xf4p\n")
    with pytest.raises(ReferenceDataError, match="latin.csv: cannot read it.*not UTF-8"):
        read_table(tmp_path / "latin.csv")
    with pytest.raises(ReferenceDataError, match="is a directory"):
        read_table(tmp_path)
    (tmp_path / "text.csv").write_text("id,t,e\n1,5,1\n2,x,0\n4,n/a,1\n")
    with pytest.raises(ReferenceDataError,
                       match=r"'t' .* must hold numbers, got type String; text such as "
                             r"\['x', 'n/a'\] in 2 row\(s\): id 2, 4"):
        from_survival_table(read_table(tmp_path / "text.csv"), "t", "e", id_col="id")


def test_accents_are_dropped_and_blank_sites_refused():
    assert valid_names(["Hôpital Cochin", "Zürich", "é"], "site") == {
        "Hôpital Cochin": "Hopital_Cochin", "Zürich": "Zurich", "é": "e"}
    frame = pd.DataFrame({"t": [1.0, 2.0, 3.0], "e": [0, 1, 1], "site": ["A", "  ", "B"]})
    with pytest.raises(ReferenceDataError, match=r"site column 'site' has missing or blank "
                                                 r"values; 1 row\(s\): row 2"):
        from_survival_table(frame, "t", "e", site_col="site")


def test_a_person_column_missing_on_some_rows_is_named():
    frame = _cgd_like().assign(age=[12.0, None, 12.0, 30.0, 30.0, 8.0, 5.0, 5.0])
    with pytest.raises(ReferenceDataError,
                       match=r"'age' is missing on some of a person's rows.*: id 1$"):
        from_counting_process(frame, "id", "start", "stop", "status", covariates=["age"],
                              status_codes={0: "censored", 1: "infection", 2: "death"})
