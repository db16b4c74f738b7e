"""validation.endpoints: endpoint definitions, loading, and per-person endpoint times."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from trajectories.cohort import Cohort, Manifest
from trajectories.errors import TrajectoriesError
from validation.endpoints import (
    Endpoint,
    EndpointError,
    default_endpoints,
    endpoint_times,
    load_endpoints,
)


def _cohort(histories: dict[int, list[tuple[float, str]]], followup: dict[int, float]) -> Cohort:
    """A small cohort from per-person state histories [(time, state), ...]."""
    ids = sorted(histories)
    persons = pl.DataFrame(
        {
            "person_id": ids,
            "site": ["A" if i % 2 else "B" for i in ids],
            "index_date": [dt.date(2020, 1, 1)] * len(ids),
            "birth_date": [dt.date(1960, 1, 1)] * len(ids),
            "sex": ["F" if i % 3 else "M" for i in ids],
            "followup_end": [followup[i] for i in ids],
            "exit": [
                "death" if histories[i][-1][1] == "death" else "administrative_censoring"
                for i in ids
            ],
            "arm": ["treatment" if i % 2 else "control" for i in ids],
        },
        schema_overrides={"person_id": pl.Int64},
    )
    rows = [(i, t, f"state:{s}") for i in ids for t, s in histories[i]]
    events = pl.DataFrame(
        {
            "person_id": [r[0] for r in rows],
            "time": [float(r[1]) for r in rows],
            "end_time": [None] * len(rows),
            "code": [r[2] for r in rows],
            "value": [None] * len(rows),
        },
        schema={"person_id": pl.Int64, "time": pl.Float64, "end_time": pl.Float64,
                "code": pl.String, "value": pl.Float64},
    )
    return Cohort(persons, events, Manifest.new("test", len(ids)))


HISTORIES = {
    1: [(0, "stable"), (10, "progressed"), (25, "death")],
    2: [(0, "stable"), (40, "death")],
    3: [(0, "stable")],
    4: [(0, "stable"), (5, "progressed")],
    5: [(0, "stable"), (3, "response"), (8, "stable"), (12, "progressed"), (20, "death")],
}
FOLLOWUP = {1: 25.0, 2: 40.0, 3: 100.0, 4: 60.0, 5: 20.0}


def _times(endpoint: Endpoint) -> dict[int, tuple[float, int]]:
    frame = endpoint_times(_cohort(HISTORIES, FOLLOWUP), endpoint)
    return {r["person_id"]: (r["time"], r["event"]) for r in frame.iter_rows(named=True)}


def test_overall_and_event_free_survival_by_hand() -> None:
    overall = Endpoint(name="os", events=["death"])
    assert _times(overall) == {1: (25, 1), 2: (40, 1), 3: (100, 0), 4: (60, 0), 5: (20, 1)}
    efs = Endpoint(name="efs", events=["progressed", "death"])
    assert _times(efs) == {1: (10, 1), 2: (40, 1), 3: (100, 0), 4: (5, 1), 5: (12, 1)}


def test_competing_events_take_status_two_only_when_first() -> None:
    progression = Endpoint(name="p", events=["progressed"], competing=["death"])
    assert _times(progression) == {1: (10, 1), 2: (40, 2), 3: (100, 0), 4: (5, 1), 5: (12, 1)}
    death_before_progression = Endpoint(name="d", events=["death"], competing=["progressed"])
    assert _times(death_before_progression) == {
        1: (10, 2), 2: (40, 1), 3: (100, 0), 4: (5, 2), 5: (12, 2)}


def test_origin_state_restarts_the_clock_and_drops_persons_never_there() -> None:
    after_progression = Endpoint(name="post", events=["death"], origin="progressed")
    assert _times(after_progression) == {1: (15, 1), 4: (55, 0), 5: (8, 1)}
    # only entries after the origin count: person 5 re-enters 'stable' after 'response'
    back_to_stable = Endpoint(name="relapse", events=["stable"], competing=["death"],
                              origin="response")
    assert _times(back_to_stable) == {5: (5, 1)}
    with pytest.raises(EndpointError, match="endpoint 'x': no person ever enters the origin"):
        _times(Endpoint(name="x", events=["death"], origin="remission"))


def test_output_columns_types_and_covariates() -> None:
    frame = endpoint_times(_cohort(HISTORIES, FOLLOWUP), Endpoint(name="os", events=["death"]))
    assert frame.columns == ["person_id", "site", "time", "event", "sex", "arm"]
    assert frame.schema["event"] == pl.Int8 and frame.schema["time"] == pl.Float64
    assert frame["arm"].to_list() == ["treatment", "control", "treatment", "control",
                                      "treatment"]
    assert frame["site"].to_list() == ["A", "B", "A", "B", "A"]


def _pandas_endpoint(cohort: Cohort, events: list[str], competing: list[str],
                     origin: str) -> pd.DataFrame:
    """The same computation written independently in pandas, for comparison."""
    ev = cohort.events.to_pandas()
    ev = ev[ev["code"].str.startswith("state:")].copy()
    ev["state"] = ev["code"].str.removeprefix("state:")
    ev["order"] = ev.groupby("person_id").cumcount()
    persons = cohort.persons.to_pandas().set_index("person_id")
    if origin == "index":
        start = pd.DataFrame({"o_order": 0, "o_time": 0.0}, index=persons.index)
    else:
        first = ev[ev["state"] == origin].groupby("person_id").first()
        start = first[["order", "time"]].rename(columns={"order": "o_order", "time": "o_time"})
    ev = ev.join(start, on="person_id", how="inner")
    ev = ev[ev["order"] > ev["o_order"]]
    first_event = ev[ev["state"].isin(events)].groupby("person_id")["time"].min()
    first_comp = ev[ev["state"].isin(competing)].groupby("person_id")["time"].min()
    out = start.join(persons[["followup_end"]])
    out["event"], out["comp"] = first_event, first_comp
    is_event = out["event"].notna() & ~(out["comp"] < out["event"])
    is_comp = out["comp"].notna() & ~is_event
    out["time"] = np.where(is_event, out["event"],
                           np.where(is_comp, out["comp"], out["followup_end"])) - out["o_time"]
    out["event"] = np.where(is_event, 1, np.where(is_comp, 2, 0))
    return out[["time", "event"]].sort_index()


@pytest.mark.parametrize(
    ("events", "competing", "origin"),
    [
        (["death"], [], "index"),
        (["progressed", "death"], [], "index"),
        (["progressed"], ["death"], "index"),
        (["death"], [], "progressed"),
    ],
)
def test_endpoint_times_match_a_pandas_computation(full_scenario, simulate, events, competing,
                                                   origin) -> None:
    cohort = simulate(full_scenario, 3000, seed=9)
    endpoint = Endpoint(name="e", events=events, competing=competing, origin=origin)
    got = endpoint_times(cohort, endpoint).sort("person_id")
    expected = _pandas_endpoint(cohort, events, competing, origin)
    assert got["person_id"].to_list() == expected.index.tolist()
    np.testing.assert_array_equal(got["time"].to_numpy(), expected["time"].to_numpy())
    np.testing.assert_array_equal(got["event"].to_numpy(), expected["event"].to_numpy())
    assert set(np.unique(expected["event"])) == ({0, 1, 2} if competing else {0, 1})
    assert (got["time"] >= 0).all()


# -- definitions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"events": []}, "endpoint 'pfs': events must name at least one state"),
        ({"events": ["death", "death"]}, r"endpoint 'pfs': events lists \['death'\]"),
        ({"events": ["death"], "competing": ["death"]}, "cannot be both an event and a comp"),
        ({"events": ["death"], "origin": "death"}, "origin 'death' cannot also end"),
    ],
)
def test_invalid_endpoints_name_the_endpoint(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        Endpoint(name="pfs", **fields)


def test_load_endpoints_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_text(
        'name = "s"\n'
        "[[endpoints]]\n"
        'name = "os"\nevents = ["death"]\n'
        "[[endpoints]]\n"
        'name = "pfs_cr"\ndescription = "progression"\nevents = ["progressed"]\n'
        'competing = ["death"]\norigin = "stable"\n',
        encoding="utf-8",
    )
    loaded = load_endpoints(path)
    assert loaded == [
        Endpoint(name="os", events=["death"]),
        Endpoint(name="pfs_cr", description="progression", events=["progressed"],
                 competing=["death"], origin="stable"),
    ]
    (tmp_path / "none.toml").write_text('name = "s"\n', encoding="utf-8")
    assert load_endpoints(tmp_path / "none.toml") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[endpoints]]\nname = "os"\n', r"endpoints\[0\] \(os\)\.events: Field required"),
        ('[[endpoints]]\nname = "os"\nevents = ["death"]\n[[endpoints]]\nname = "pfs"\n'
         'events = ["death"]\nevnts = 1\n', r"endpoints\[1\] \(pfs\)\.evnts: Extra inputs"),
        ('[[endpoints]]\nname = "pfs"\nevents = []\n',
         r"endpoints\[0\] \(pfs\): endpoint 'pfs': events must name at least one state"),
        ('[[endpoints]]\nname = "1x"\nevents = ["death"]\n', r"endpoints\[0\] \(1x\)\.name"),
        ('endpoints = 3\n', "must be an array of tables"),
        ('[[endpoints]]\nname = "os"\nevents = ["death"]\n[[endpoints]]\nname = "os"\n'
         'events = ["death"]\n', r"endpoint name\(s\) \['os'\] declared more than once"),
        ("[[endpoints]\n", "not valid TOML"),
    ],
)
def test_load_endpoints_errors_name_file_and_field(tmp_path: Path, text, message) -> None:
    path = tmp_path / "ends.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EndpointError, match=message) as caught:
        load_endpoints(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, TrajectoriesError)


def test_load_endpoints_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EndpointError, match="cannot read endpoints file .*missing.toml"):
        load_endpoints(tmp_path / "missing.toml")


def test_default_endpoints() -> None:
    os_only = default_endpoints(["alive", "dead"], ["dead"])
    assert [(e.name, e.events) for e in os_only] == [("overall_survival", ["dead"])]
    both = default_endpoints(["stable", "progressed", "death", "other_death"],
                             ["death", "other_death"])
    assert [(e.name, e.events, e.competing, e.origin) for e in both] == [
        ("overall_survival", ["death", "other_death"], [], "index"),
        ("event_free_survival", ["progressed", "death", "other_death"], [], "index"),
    ]
    assert "event-free survival" in both[1].description
    several = default_endpoints(["a", "b", "c", "death"], ["death"], initial=["a", "b"])
    assert several[1].events == ["a", "b", "c", "death"]  # any state after the first: a move
    with pytest.raises(EndpointError, match="death states"):
        default_endpoints(["a", "b"], ["dead"])
