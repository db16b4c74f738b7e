"""Default endpoints of a reference without a death state: time out of the initial state and
the cumulative incidence of each next state. Their values equal lifelines on the same data, in
memory, block by block and through `trajectories validate`, which says why it chose them."""

from __future__ import annotations

import html
import json
import warnings

import numpy as np
import polars as pl
import pytest
from conftest import build_scenario
from lifelines import AalenJohansenFitter, KaplanMeierFitter
from typer.testing import CliRunner

from trajectories.cli import app
from trajectories.cohort import read_partitioned
from trajectories.io import from_mstate, from_survival_table
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.sharded import simulate_sharded
from validation import compare, survival
from validation.endpoints import (
    EndpointError,
    default_endpoints,
    endpoint_times,
    first_move_endpoints,
    next_states,
)

TOL = 1e-9
STATES = {1: "at_risk", 2: "infection", 3: "cured"}
NOTE = ("no death state in the reference: default endpoints are time out of 'at_risk' and the "
        "cumulative incidence of 'infection' and 'cured', each against the others")
NAMES = ["time_out_of_at_risk", "cumulative_incidence_infection", "cumulative_incidence_cured"]


def _mstate(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """msprep rows of at_risk -> infection | cured, infection -> cured (cured not death), and
    each person's first move: [id, time, code] (code 2 infection, 3 cured, 0 censored)."""
    rng = np.random.default_rng(seed)
    first, censor = rng.exponential(400.0, n), rng.uniform(100.0, 1500.0, n)
    infected, cure = rng.random(n) < 0.6, first + rng.exponential(300.0, n)
    rows, truth = [], []
    for i in range(n):
        if first[i] >= censor[i]:
            rows += [(i + 1, 1, 2, 0.0, censor[i], 0), (i + 1, 1, 3, 0.0, censor[i], 0)]
            truth.append((i + 1, censor[i], 0))
            continue
        rows += [(i + 1, 1, 2, 0.0, first[i], int(infected[i])),
                 (i + 1, 1, 3, 0.0, first[i], int(not infected[i]))]
        truth.append((i + 1, first[i], 2 if infected[i] else 3))
        if infected[i]:
            rows.append((i + 1, 2, 3, first[i], min(cure[i], censor[i]), int(cure[i] < censor[i])))
    frame = pl.DataFrame(rows, schema=["id", "from", "to", "Tstart", "Tstop", "status"],
                         orient="row")
    return frame, pl.DataFrame(truth, schema=["person_id", "time", "code"], orient="row")


def _reference(n: int, seed: int):
    frame, truth = _mstate(n, seed)
    return from_mstate(frame, state_names=STATES, death_states=[]), truth


def _at(index: np.ndarray, values: np.ndarray, t: float) -> float:
    """A right-continuous step function given at ``index`` evaluated at ``t``."""
    return float(values[np.searchsorted(index, t, side="right") - 1])


def _lifelines_km(time, event) -> KaplanMeierFitter:
    return KaplanMeierFitter().fit(np.asarray(time), np.asarray(event))


def _lifelines_aj(time, code, cause: int) -> AalenJohansenFitter:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a jitter warning would mean tied times were changed
        return AalenJohansenFitter().fit(np.asarray(time), np.asarray(code),
                                         event_of_interest=cause)


def keyed(report) -> dict:
    return {(c.group, c.name, c.subject, c.site): c for c in report.checks}


# -- definitions ----------------------------------------------------------------------------------


def test_first_move_endpoint_definitions() -> None:
    states = ["at_risk", "infection", "cured"]
    endpoints = default_endpoints(states, [], initial="at_risk",
                                  next_states=["cured", "infection"])
    assert [(e.name, e.events, e.competing, e.origin) for e in endpoints] == [
        ("time_out_of_at_risk", ["infection", "cured"], [], "index"),
        ("cumulative_incidence_infection", ["infection"], ["cured"], "index"),
        ("cumulative_incidence_cured", ["cured"], ["infection"], "index"),
    ]
    # One next state: its cumulative incidence would be 1 - the time out, so it is left out.
    assert [(e.name, e.events) for e in first_move_endpoints(
        ["alive", "relapse"], ["alive"], ["relapse"])] == [("time_out_of_alive", ["relapse"])]
    assert first_move_endpoints(["alive", "relapse"], ["alive"], []) == []  # never left
    # Several initial states: the first move out of whichever, into any state.
    several = first_move_endpoints(["a", "b", "c"], ["a", "b"], ["b", "c"])
    assert [(e.name, e.events, e.competing) for e in several] == [
        ("time_out_of_initial_state", ["a", "b", "c"], []),
        ("cumulative_incidence_b", ["b"], ["a", "c"]),
        ("cumulative_incidence_c", ["c"], ["a", "b"]),
    ]
    # A state name that cannot be part of an endpoint name is numbered instead.
    odd = first_move_endpoints(["x", "first line", "y"], ["x"], ["first line", "y"])
    assert [e.name for e in odd] == ["time_out_of_x", "cumulative_incidence_1",
                                     "cumulative_incidence_y"]
    with pytest.raises(EndpointError, match=r"unknown: \['z'\]"):
        first_move_endpoints(["a", "b"], ["a"], ["z"])


def test_with_death_states_the_defaults_stay_overall_and_event_free_survival() -> None:
    states, deaths = ["stable", "progressed", "death"], ["death"]
    assert default_endpoints(states, deaths, initial=["stable"], next_states=["progressed"]) == (
        default_endpoints(states, deaths, initial=["stable"]))
    with pytest.raises(EndpointError, match="death states"):
        default_endpoints(states, [])  # no next states given: nothing to build


# -- values -------------------------------------------------------------------------------------


def test_time_out_and_cumulative_incidences_equal_lifelines() -> None:
    reference, truth = _reference(800, seed=1)
    synthetic, synthetic_truth = _reference(1000, seed=2)
    assert set(next_states(reference)) == {"infection", "cured"}
    report = compare(synthetic, reference, figures=False)
    assert report.context["endpoints"] == ", ".join(NAMES)
    assert report.notes == [NOTE]
    assert report.to_dict()["notes"] == [NOTE]
    checks = keyed(report)
    landmarks = 0
    for side, cohort, known in (("reference", reference, truth),
                                ("synthetic", synthetic, synthetic_truth)):
        known = known.sort("person_id")
        time, code = known["time"].to_numpy(), known["code"].to_numpy()
        km = _lifelines_km(time, code > 0)
        aj = {2: _lifelines_aj(time, code, 2), 3: _lifelines_aj(time, code, 3)}
        # Per person: the first move's time and where it went, as the table says.
        out = endpoint_times(cohort, next(e for e in _defaults(reference) if not e.competing))
        out = out.sort("person_id")
        np.testing.assert_allclose(out["time"].to_numpy(), time, rtol=0, atol=TOL)
        assert (out["event"].to_numpy() == (code > 0)).all()
        curve = survival.kaplan_meier(out["time"], out["event"])
        _close(curve["time"], km.survival_function_.index.to_numpy())
        _close(curve["survival"], km.survival_function_.iloc[:, 0].to_numpy())
        for cause, endpoint in zip((2, 3), _defaults(reference)[1:], strict=True):
            rows = endpoint_times(cohort, endpoint).sort("person_id")
            expected = np.where(code == cause, 1, np.where(code > 0, 2, 0))
            assert (rows["event"].to_numpy() == expected).all()
            cif = survival.aalen_johansen(rows["time"], rows["event"], cause=1)
            index = aj[cause].cumulative_density_.index.to_numpy()
            _close(cif["time"], index)
            _close(cif["cumulative_incidence"], aj[cause].cumulative_density_.iloc[:, 0])
        # The report's landmark figures are those values.
        for key, check in checks.items():
            group, name, subject, _ = key
            if group != "survival" or not name.startswith(("survival at ",
                                                           "cumulative incidence at ")):
                continue
            t = float(name.split(" at ")[1].removesuffix(" d"))
            if subject == "time_out_of_at_risk":
                expected_value = float(km.survival_function_at_times(t).iloc[0])
            else:
                fitted = aj[2 if subject.endswith("infection") else 3].cumulative_density_
                expected_value = _at(fitted.index.to_numpy(), fitted.iloc[:, 0].to_numpy(), t)
            assert abs(check.details[side]["value"] - expected_value) < TOL, key
            landmarks += 1
    assert landmarks >= 2 * 3  # both sides, each endpoint, at least one landmark


def _defaults(reference):
    return default_endpoints(["at_risk", "infection", "cured"], [], initial="at_risk",
                             next_states=next_states(reference))


def _close(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=0,
                               atol=TOL)


def test_a_survival_table_without_death_gets_the_time_out_only() -> None:
    rng = np.random.default_rng(3)

    def table(n: int) -> pl.DataFrame:
        return pl.DataFrame({"days": rng.exponential(500.0, n), "flag": rng.random(n) < 0.7,
                             "age": rng.normal(60, 8, n)}).with_columns(pl.col("flag").cast(int))

    frames = {"reference": table(600), "synthetic": table(700)}
    cohorts = {k: from_survival_table(f, "days", "flag", event_state="relapse",
                                      event_is_death=False) for k, f in frames.items()}
    report = compare(cohorts["synthetic"], cohorts["reference"], figures=False)
    assert report.notes == ["no death state in the reference: default endpoint is time out of "
                            "'alive' (its only next state is 'relapse')"]
    assert report.context["endpoints"] == "time_out_of_alive"
    checks = keyed(report)
    assert ("survival", "log-rank", "time_out_of_alive", None) in checks
    assert ("hazard ratios", "log HR age", "time_out_of_alive", None) in checks
    for side, frame in frames.items():
        km = _lifelines_km(frame["days"], frame["flag"])
        check = checks[("survival", "survival at 365.25 d", "time_out_of_alive", None)]
        assert abs(check.details[side]["value"]
                   - float(km.survival_function_at_times(365.25).iloc[0])) < TOL
        median = checks[("survival", "median (days)", "time_out_of_alive", None)]
        assert abs(median.details[side]["median"] - km.median_survival_time_) < TOL


def test_an_initial_state_never_left_gets_no_endpoint_and_says_so() -> None:
    frame = pl.DataFrame({"days": [100.0, 250.0, 400.0, 90.0] * 20, "flag": [0] * 80})
    reference = from_survival_table(frame, "days", "flag", event_state="relapse",
                                    event_is_death=False)
    report = compare(reference, reference, figures=False)
    assert report.notes == ["no death state in the reference, and no person leaves 'alive': no "
                            "default endpoint; declare endpoints to get survival checks"]
    assert {c.group for c in report.checks} == {"integrity", "transitions", "distributions",
                                                "follow-up", "privacy"}
    assert report.passed


def test_several_initial_states_time_out_of_whichever_equals_lifelines() -> None:
    scenario = build_scenario(
        [{"from": "a", "to": "b", "hazard": {"family": "exponential", "rate": 0.002}},
         {"from": "a", "to": "c", "hazard": {"family": "exponential", "rate": 0.001}},
         {"from": "b", "to": "c", "hazard": {"family": "exponential", "rate": 0.003}}],
        states=[{"name": "a"}, {"name": "b"},
                {"name": "c", "absorbing": True, "death": False}],
        initial_state={"a": 0.6, "b": 0.4},
        followup={"max_days": 1000.0, "loss_to_followup_per_year": 0.1})
    reference = MarkovSimulator(scenario).simulate(1200, seed=3)
    synthetic = MarkovSimulator(scenario).simulate(1500, seed=4)
    report = compare(synthetic, reference, figures=False)
    assert report.notes == ["no death state in the reference: default endpoints are time out of "
                            "the initial state ('a' or 'b') and the cumulative incidence of 'b' "
                            "and 'c', each against the others"]
    assert report.context["endpoints"] == ("time_out_of_initial_state, cumulative_incidence_b, "
                                           "cumulative_incidence_c")
    # Independently: each person's first spell, its end, and where it led.
    first = reference.state_spells().filter(pl.col("first")).sort("person_id")
    time = first["stop"].to_numpy()
    code = first["next_state"].replace_strict({"b": 1, "c": 2}, default=0).to_numpy()
    km, aj_b = _lifelines_km(time, code > 0), _lifelines_aj(time, code, 1)
    checks = keyed(report)
    t = 365.25
    out = checks[("survival", f"survival at {t} d", "time_out_of_initial_state", None)]
    assert abs(out.details["reference"]["value"]
               - float(km.survival_function_at_times(t).iloc[0])) < TOL
    into_b = checks[("survival", f"cumulative incidence at {t} d", "cumulative_incidence_b",
                     None)]
    fitted = aj_b.cumulative_density_
    assert abs(into_b.details["reference"]["value"]
               - _at(fitted.index.to_numpy(), fitted.iloc[:, 0].to_numpy(), t)) < TOL


# -- block by block and from the command line ---------------------------------------------------


def _no_death_scenario():
    return build_scenario(
        [{"from": "at_risk", "to": "infection", "hazard": {"family": "exponential",
                                                           "rate": 0.002}},
         {"from": "at_risk", "to": "cured", "hazard": {"family": "exponential", "rate": 0.001}},
         {"from": "infection", "to": "cured", "hazard": {"family": "exponential",
                                                         "rate": 0.01}}],
        states=[{"name": "at_risk"}, {"name": "infection"},
                {"name": "cured", "absorbing": True, "death": False}],
        initial_state="at_risk", followup={"max_days": 1000.0, "loss_to_followup_per_year": 0.1})


def test_partitioned_compare_equals_the_in_memory_compare_without_death(tmp_path) -> None:
    scenario = _no_death_scenario()
    directory = simulate_sharded(MarkovSimulator(scenario, block_size=300), tmp_path / "c",
                                 n=1_500, seed=7)
    reference = MarkovSimulator(scenario).simulate(1_000, seed=8)
    dataset = read_partitioned(directory)
    in_memory = compare(dataset.collect(), reference, figures=False)
    by_blocks = compare(dataset, reference, figures=False)
    assert in_memory.notes == by_blocks.notes == [NOTE]
    a, b = keyed(in_memory), keyed(by_blocks)
    assert set(a) == set(b)
    assert {k[2] for k in a if k[0] == "survival"} == set(NAMES)
    for key in a:
        assert (a[key].metric, a[key].threshold, a[key].verdict, a[key].details) == (
            b[key].metric, b[key].threshold, b[key].verdict, b[key].details), key


def test_validate_cli_prints_the_default_endpoints_note(tmp_path) -> None:
    reference, _ = _reference(500, seed=5)
    synthetic, _ = _reference(600, seed=6)
    reference.write(tmp_path / "ref")
    synthetic.write(tmp_path / "syn")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "syn"), "--reference",
                                      str(tmp_path / "ref"), "--report",
                                      str(tmp_path / "report")])
    assert result.exit_code in (0, 1), result.output
    assert f"note: {NOTE}" in result.output
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["notes"] == [NOTE]
    subjects = {(c["group"], c["subject"]) for c in data["checks"]}
    for name in NAMES:
        assert ("survival", name) in subjects
    assert ("survival", "time_out_of_at_risk") in {
        (c["group"], c["subject"]) for c in data["checks"] if c["name"] == "log-rank"}
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Notes</h2>" in page and html.escape(NOTE) in page
