"""Scenario ``[baseline]`` rows: new persons take whole reference rows of their own site, so
covariates keep their joint law per site; the draws are deterministic and block-independent,
the file is validated with errors naming it, and the content hash follows the file's bytes,
not its path."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trajectories import ScenarioError, load_scenario
from trajectories.cohort import read_partitioned
from trajectories.fit import write_scenario
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.blocks import block_rng
from trajectories.simulate.population import draw_population
from trajectories.simulate.sharded import simulate_sharded

N_SIM = 20_000
SITES = {"A": (400, 0.8, 0.3), "B": (300, -0.5, 0.6)}
"""Reference rows per site: count, correlation of x and y, share of grade 'high'."""
EFFECTS = {"x": 0.3, "grade": {"high": 0.7}}


def reference_rows(seed: int = 0) -> pl.DataFrame:
    """Two sites with opposite x-y correlations and different grade mixes; grade depends on x."""
    rng = np.random.default_rng(seed)
    parts = []
    for site, (n, rho, high) in SITES.items():
        x = rng.standard_normal(n)
        y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal(n)
        # high grade more likely for large x: a categorical-numeric dependence to keep
        cut = np.quantile(x + rng.standard_normal(n), 1 - high)
        grade = np.where(x + rng.standard_normal(n) > cut, "high", "low")
        age = (45.0 if site == "A" else 62.0) + 8 * rng.standard_normal(n) + 3 * x
        parts.append(pl.DataFrame({"person_id": np.arange(n) + (0 if site == "A" else 1000),
                                   "site": site, "x": x, "y": y, "grade": grade, "age": age}))
    return pl.concat(parts)


def scenario_dict(rows: str | Path, **baseline) -> dict:
    return {
        "name": "rows",
        "initial_state": "well",
        "states": [{"name": "well"}, {"name": "dead", "absorbing": True}],
        "transitions": [{"from": "well", "to": "dead", "effects": EFFECTS,
                         "hazard": {"family": "exponential", "rate": 1e-3}}],
        "covariates": {
            "x": {"kind": "normal", "mean": 0.0, "sd": 1.0},
            "y": {"kind": "normal", "mean": 0.0, "sd": 1.0},
            "grade": {"kind": "categorical", "levels": {"low": 0.5, "high": 0.5}},
        },
        "sites": [{"name": "A", "share": 0.6}, {"name": "B", "share": 0.4}],
        "baseline": {"rows": str(rows), **baseline},
    }


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "reference.parquet"
    reference_rows().write_parquet(path)
    return path


@pytest.fixture(scope="module")
def synthetic(rows_file) -> pl.DataFrame:
    scenario = scenario_from_dict(scenario_dict(rows_file))
    return MarkovSimulator(scenario, block_size=6_000).simulate(N_SIM, seed=3).persons


def correlation(frame: pl.DataFrame) -> float:
    return float(np.corrcoef(frame["x"].to_numpy(), frame["y"].to_numpy())[0, 1])


# -- the joint law -------------------------------------------------------------------------------


def test_every_person_gets_a_whole_row_of_its_own_site(synthetic):
    reference = reference_rows()
    assert synthetic.join(reference, on=["site", "x", "y", "grade", "age"],
                          how="anti").height == 0
    # every row of a site can be drawn: with about 30 draws per row, almost all are seen
    seen = synthetic.join(reference, on=["site", "x", "y"], how="semi").select(
        "site", "x").unique().height
    assert seen > 0.99 * reference.height


def test_correlation_and_category_mix_per_site_match_the_reference(synthetic, rows_file):
    reference = reference_rows()
    for site in SITES:
        ref = reference.filter(pl.col("site") == site)
        sim = synthetic.filter(pl.col("site") == site)
        n = sim.height
        r = correlation(ref)
        # a sample correlation of n draws from a (near) normal pair has sd (1 - r^2) / sqrt(n)
        assert abs(correlation(sim) - r) < 4 * (1 - r**2) / math.sqrt(n), site
        p = float((ref["grade"] == "high").mean())
        assert abs(float((sim["grade"] == "high").mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
        # the categorical-numeric dependence too: mean x among high grades
        ref_high = ref.filter(pl.col("grade") == "high")["x"]
        sim_high = sim.filter(pl.col("grade") == "high")["x"]
        se = float(ref_high.std()) / math.sqrt(sim_high.len())
        assert abs(float(sim_high.mean()) - float(ref_high.mean())) < 4 * se, site
    # without [baseline] the declared marginals are independent: the test above would fail
    data = scenario_dict(rows_file)
    del data["baseline"]
    marginal = MarkovSimulator(scenario_from_dict(data)).simulate(N_SIM, seed=3).persons
    a = marginal.filter(pl.col("site") == "A")
    assert abs(correlation(a) - correlation(reference.filter(pl.col("site") == "A"))) > 0.5


def test_rows_drive_the_hazards_and_undeclared_draws_keep_their_stream(rows_file):
    with_rows = MarkovSimulator(scenario_from_dict(scenario_dict(rows_file)))
    data = scenario_dict(rows_file)
    del data["baseline"]
    without = MarkovSimulator(scenario_from_dict(data))
    ours = draw_population(with_rows.plan, 0, 5000, block_rng(8, 0))
    theirs = draw_population(without.plan, 0, 5000, block_rng(8, 0))
    # sites and the declared covariates are drawn first, in the same order: sex, not in the
    # file, is the same person by person
    np.testing.assert_array_equal(ours.site, theirs.site)
    np.testing.assert_array_equal(ours.categorical["sex"], theirs.categorical["sex"])
    high = ours.categorical["grade"] == 1  # levels: low, high
    expected = np.exp(EFFECTS["x"] * ours.numeric["x"] + EFFECTS["grade"]["high"] * high)
    np.testing.assert_allclose(ours.multipliers[:, 0], expected, rtol=1e-12)


def test_site_sizes_draw_rows_of_each_persons_site(rows_file):
    data = scenario_dict(rows_file)
    data["sites"] = [{"name": "B", "size": 50}, {"name": "A", "size": 70}]
    persons = MarkovSimulator(scenario_from_dict(data)).simulate(seed=1).persons
    assert persons["site"].to_list() == ["B"] * 50 + ["A"] * 70
    assert persons.join(reference_rows(), on=["site", "x", "y"], how="anti").height == 0


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_cohort_and_blocks_are_independent(rows_file):
    simulator = MarkovSimulator(scenario_from_dict(scenario_dict(rows_file)), block_size=700)
    full = simulator.simulate(3000, seed=5)
    again = MarkovSimulator(load_scenario_like(rows_file), block_size=700).simulate(3000, seed=5)
    assert_frame_equal(full.persons, again.persons)
    assert_frame_equal(full.events, again.events)
    alone = [persons for _, persons, _ in simulator.iter_blocks(3000, 5, blocks=[4, 2, 0, 3, 1])]
    assert_frame_equal(pl.concat(alone).sort("person_id"), full.persons)
    other_seed = simulator.simulate(3000, seed=6).persons
    assert not other_seed["x"].equals(full.persons["x"])


def load_scenario_like(rows_file: Path):
    """The same scenario validated again from its own dump (as workers and calibration do)."""
    scenario = scenario_from_dict(scenario_dict(rows_file))
    return scenario_from_dict(scenario.model_dump(mode="json", by_alias=True))


def test_sharded_workers_read_the_rows_again(rows_file, tmp_path):
    simulator = MarkovSimulator(scenario_from_dict(scenario_dict(rows_file)), block_size=400)
    directory = simulate_sharded(simulator, tmp_path / "sharded", n=1000, seed=2)
    assert_frame_equal(read_partitioned(directory).collect().persons,
                       simulator.simulate(1000, seed=2).persons)


# -- paths and the content hash -----------------------------------------------------------------


def test_hash_follows_the_file_bytes_not_its_path(rows_file, tmp_path):
    here = scenario_from_dict(scenario_dict(rows_file))
    assert here.baseline.sha256 == hashlib.sha256(rows_file.read_bytes()).hexdigest()
    copied = tmp_path / "elsewhere" / "copy.parquet"
    copied.parent.mkdir()
    shutil.copyfile(rows_file, copied)
    there = scenario_from_dict(scenario_dict(copied))
    assert here.baseline.rows != there.baseline.rows
    assert here.content_hash() == there.content_hash()
    changed = reference_rows().with_columns(
        pl.when(pl.col("person_id") == 0).then(pl.col("x") + 1).otherwise(pl.col("x")).alias("x"))
    changed.write_parquet(copied)
    assert scenario_from_dict(scenario_dict(copied)).content_hash() != here.content_hash()
    # the recorded sha256 is accepted when it matches
    pinned = scenario_from_dict(scenario_dict(rows_file, sha256=here.baseline.sha256))
    assert pinned.content_hash() == here.content_hash()


def test_relative_paths_resolve_against_the_file_or_the_current_directory(
        rows_file, tmp_path, monkeypatch):
    folder = tmp_path / "scenario"
    folder.mkdir()
    shutil.copyfile(rows_file, folder / "rows.parquet")
    written = write_scenario(scenario_from_dict(scenario_dict(folder / "rows.parquet")),
                             folder / "scenario.toml")
    assert 'rows = "rows.parquet"' in written.read_text()  # relative: the folder can move
    shutil.move(folder, tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    loaded = load_scenario(Path("moved") / "scenario.toml")
    assert loaded.baseline.rows == str((tmp_path / "moved" / "rows.parquet").resolve())
    from_dict = scenario_from_dict(scenario_dict("moved/rows.parquet"))  # the current directory
    assert from_dict.baseline.rows == loaded.baseline.rows
    assert from_dict.content_hash() == loaded.content_hash()
    (tmp_path / "elsewhere").mkdir()
    outside = write_scenario(loaded, tmp_path / "elsewhere" / "s.toml")  # rows not below it
    assert f'rows = "{loaded.baseline.rows}"' in outside.read_text()
    assert load_scenario(outside).content_hash() == loaded.content_hash()


# -- errors name the file and the field -----------------------------------------------------------


def _write(frame: pl.DataFrame, path: Path) -> Path:
    frame.write_parquet(path)
    return path


CASES = [
    ("missing file", None, lambda d: d["baseline"].update(rows="nowhere.parquet"),
     r"baseline: rows file .*nowhere\.parquet cannot be read: No such file"),
    ("not parquet", "text", None, r"baseline: rows file .*bad\.parquet is not a readable Parquet"),
    ("sha256 changed", None, lambda d: d["baseline"].update(sha256="0" * 64),
     r"has sha256 [0-9a-f]{64}, but the scenario gives sha256 = '0{64}': the file changed"),
    ("column not in file", None, lambda d: d.update(
        baseline={**d["baseline"], "columns": ["x", "z"]},
        covariates={**d["covariates"], "z": {"kind": "normal", "mean": 0, "sd": 1}}),
     r"baseline \(rows .*bad\.parquet\): columns names 'z', which is not a column of the file"),
    ("column not declared", None, lambda d: d["baseline"].update(columns=["x", "person_id"]),
     r"columns names 'person_id', which is not a declared covariate"),
    ("empty columns", None, lambda d: d["baseline"].update(columns=[]),
     r"bad\.parquet\): columns is empty"),
    ("no site column", None, lambda d: d["baseline"].update(site_column="centre"),
     r"site_column 'centre' is not a column of the file"),
    ("text in a numeric covariate", "x as text", None,
     r"bad\.parquet\): covariate 'x' is numeric \(normal\) but the file's column is String"),
    ("unknown levels", "grade levels", None,
     r"column 'grade' has value\(s\) \['medium', 'severe'\] outside the declared levels "
     r"\['low', 'high'\]"),
    ("site without rows", None, lambda d: d["sites"].append({"name": "C", "share": 0.0}),
     r"bad\.parquet\): no rows for site\(s\) \['C'\] in column 'site'"),
    ("nulls", "nulls", None, r"column 'y' has 2 null, NaN or infinite value\(s\)"),
    ("null site", "null site", None, r"column 'site' has 1 null, NaN or infinite value\(s\)"),
    ("negative age", "negative age", None, r"column 'age' has negative values"),
    ("nothing to replace", "no covariates", None,
     r"the file has none of the declared covariates \['age', 'grade', 'sex', 'x', 'y'\]"),
]


@pytest.mark.parametrize(("label", "file_edit", "dict_edit", "message"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_problem_has_its_own_error(label, file_edit, dict_edit, message, tmp_path):
    rows = reference_rows()
    path = tmp_path / "bad.parquet"
    if file_edit == "text":
        path.write_text("person_id,site\n1,A\n")
    elif file_edit == "x as text":
        _write(rows.with_columns(pl.col("x").cast(pl.String)), path)
    elif file_edit == "grade levels":
        _write(rows.with_columns(pl.when(pl.col("person_id") == 3).then(pl.lit("severe"))
                                 .when(pl.col("person_id") == 1004).then(pl.lit("medium"))
                                 .otherwise(pl.col("grade")).alias("grade")), path)
    elif file_edit == "nulls":
        _write(rows.with_columns(pl.when(pl.col("person_id") == 5).then(None)
                                 .when(pl.col("person_id") == 6).then(float("nan"))
                                 .otherwise(pl.col("y")).alias("y")), path)
    elif file_edit == "null site":
        _write(rows.with_columns(pl.when(pl.col("person_id") == 5).then(None)
                                 .otherwise(pl.col("site")).alias("site")), path)
    elif file_edit == "negative age":
        _write(rows.with_columns(pl.when(pl.col("person_id") == 5).then(-1.0)
                                 .otherwise(pl.col("age")).alias("age")), path)
    elif file_edit == "no covariates":
        _write(rows.select("person_id", "site"), path)
    else:
        _write(rows, path)
    data = scenario_dict(path)
    if dict_edit is not None:
        dict_edit(data)
    with pytest.raises(ScenarioError) as caught:
        scenario_from_dict(data, source="study.toml")
    text = str(caught.value)
    assert text.startswith("invalid scenario study.toml:"), text
    assert re.search(message, text), text
    assert text.count("\n") == 1, text  # one problem, one line


def test_errors_from_a_file_name_the_scenario_file(tmp_path):
    _write(reference_rows().with_columns(pl.col("x").cast(pl.String)), tmp_path / "r.parquet")
    (tmp_path / "s.toml").write_text(
        'name = "s"\ninitial_state = "well"\n'
        '[[states]]\nname = "well"\n[[states]]\nname = "dead"\nabsorbing = true\n'
        '[[transitions]]\nfrom = "well"\nto = "dead"\nhazard = {family = "exponential", '
        'rate = 0.001}\n[covariates.x]\nkind = "normal"\nmean = 0.0\nsd = 1.0\n'
        '[[sites]]\nname = "A"\nshare = 0.5\n[[sites]]\nname = "B"\nshare = 0.5\n'
        '[baseline]\nrows = "r.parquet"\ncolumns = ["x"]\n')
    with pytest.raises(ScenarioError, match=r"invalid scenario .*s\.toml:\n.*"
                       r"r\.parquet\): covariate 'x' is numeric"):
        load_scenario(tmp_path / "s.toml")

