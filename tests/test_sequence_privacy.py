"""The sequence model's privacy: DP-SGD training that spends the calibrated budget (Abadi et
al. 2016), saved files without real ids or rows, a vocabulary of aggregates under the small-cell
rules, and 0/1 flags sampled as categories."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import FULL_SCENARIO
from typer.testing import CliRunner

from trajectories import Cohort, MarkovSimulator, TrajectoriesError
from trajectories.cli import app
from trajectories.disclosure import MIN_CELL, robust_range
from trajectories.errors import PrivateTrainingError
from trajectories.scenario import scenario_from_dict
from trajectories.sequence import SequenceModel
from trajectories.sequence.private import default_delta
from trajectories.sequence.tokenizer import (
    build_vocabulary,
    event_frame,
    release_cohort,
    tokenize,
)
from validation.integrity import check_integrity

SMALL = {"d_model": 16, "n_heads": 2, "feedforward": 32, "n_layers": 1, "max_epochs": 2,
         "batch_tokens": 4096, "seed": 3}
FLAG_SCENARIO = {
    "name": "flag",
    "initial_state": "well",
    "states": [{"name": "well"}, {"name": "ill"}, {"name": "dead", "absorbing": True}],
    "transitions": [
        {"from": "well", "to": "ill", "hazard": {"family": "exponential", "rate": 0.001}},
        {"from": "ill", "to": "dead", "hazard": {"family": "exponential", "rate": 0.002}},
    ],
    "followup": {"max_days": 1000},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_ids(cohort: Cohort, seed: int) -> Cohort:
    """``cohort`` with distinctive 9-digit person ids, so that a leaked id cannot hide among
    small counts."""
    old = cohort.persons["person_id"]
    new = np.random.default_rng(seed).choice(np.arange(700_000_000, 800_000_000), old.len(),
                                             replace=False)
    mapping = dict(zip(old.to_list(), new.tolist(), strict=True))
    persons = cohort.persons.with_columns(pl.col("person_id").replace_strict(mapping))
    events = cohort.events.with_columns(pl.col("person_id").replace_strict(mapping))
    return Cohort(persons, events, cohort.manifest)


@pytest.fixture(scope="module")
def reference() -> Cohort:
    scenario = scenario_from_dict(FULL_SCENARIO, source="<full>")
    return _with_ids(MarkovSimulator(scenario).simulate(400, seed=7), seed=1)


@pytest.fixture(scope="module")
def private(reference: Cohort) -> SequenceModel:
    return SequenceModel({**SMALL, "epsilon": 2.0}).fit(reference)


@pytest.fixture(scope="module")
def ordinary(reference: Cohort) -> SequenceModel:
    return SequenceModel({**SMALL, "max_epochs": 1}).fit(reference)


# -- DP-SGD ----------------------------------------------------------------------------------------


def test_dp_sgd_spends_the_calibrated_budget_and_samples_valid_cohorts(
        private: SequenceModel, reference: Cohort) -> None:
    from opacus.accountants import RDPAccountant

    record = private.training_["privacy"]
    n = reference.n_persons
    assert record["delta"] == default_delta(n) == min(1e-5, n ** -1.1)
    assert 0.5 * 2.0 < record["epsilon"] <= 2.0
    assert record["target_epsilon"] == 2.0 and record["accountant"] == "rdp"
    assert record["epochs"] == 2 and record["max_grad_norm"] == 1.0
    # 64 expected persons a step: 7 steps an epoch of 400 persons (opacus: 1 / len(loader)).
    assert record["sample_rate"] == pytest.approx(1 / math.ceil(n / 64))
    assert record["steps"] == 2 * math.ceil(n / 64)
    # The recorded epsilon is what an independent accountant gives for these parameters.
    accountant = RDPAccountant()
    accountant.history = [(record["noise_multiplier"], record["sample_rate"], record["steps"])]
    assert accountant.get_epsilon(record["delta"]) == pytest.approx(record["epsilon"])
    assert record["noise_multiplier"] > 0.5
    # Fixed epochs on every person; no loss on real persons is kept, nor the data's hash.
    training = private.training_
    assert training["train_persons"] == n and training["validation_persons"] == 0
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    assert all(set(h) == {"epoch", "learning_rate", "epsilon"} for h in training["history"])
    assert training["history"][0]["epsilon"] < training["history"][1]["epsilon"]
    assert training["fingerprint"] is None
    sampled = private.sample(300, seed=2)
    assert sampled.n_persons == 300
    assert [r.name for r in check_integrity(sampled, absorbing_states={"death"})
            if not r.passed] == []
    assert sampled.manifest.privacy["epsilon"] == record["epsilon"]
    assert sampled.manifest.reference_fingerprint is None


@pytest.mark.filterwarnings("ignore:Full backward hook")
@pytest.mark.parametrize("architecture", ["transformer", "gru"])
def test_per_person_losses_and_per_sample_gradients_are_each_persons_own(
        reference: Cohort, architecture: str) -> None:
    import copy

    from opacus import GradSampleModule

    from trajectories.sequence.model import EventSequenceNet, SequenceConfig
    from trajectories.sequence.private import private_network
    from trajectories.sequence.train import Tables, assemble, batch_loss

    released, _ = release_cohort(reference)
    vocab = build_vocabulary(released)
    tokens = tokenize(released, vocab)
    config = SequenceConfig(architecture=architecture, d_model=16, n_heads=2, feedforward=32)
    torch.manual_seed(0)
    net = private_network(EventSequenceNet(config, vocab.size, len(vocab.states),
                                           vocab.n_bins), config)
    twin = copy.deepcopy(net)
    rows = np.array([3, 17, 40, 41, 90])
    cpu = torch.device("cpu")
    batch = assemble(tokens, rows, vocab, cpu, np.random.default_rng(0))
    tables = Tables.of(vocab, cpu)
    per_person = batch_loss(twin, batch, tables, per_person=True)[0]
    assert per_person.shape == (5,)
    total = batch_loss(twin, batch, tables)[0]
    assert per_person.sum().item() == pytest.approx(total.item(), rel=1e-5)
    GradSampleModule(net, loss_reduction="mean")
    (batch_loss(net, batch, tables, per_person=True)[0].sum() / rows.size).backward()
    params = [p for p in net.parameters() if p.requires_grad]
    twin_params = [p for p in twin.parameters() if p.requires_grad]
    for i in range(rows.size):
        own = torch.autograd.grad(per_person[i], twin_params, retain_graph=True,
                                  allow_unused=True)
        for p, g in zip(params, own, strict=True):
            expected = torch.zeros_like(p) if g is None else g
            torch.testing.assert_close(p.grad_sample[i], expected, rtol=1e-4, atol=1e-6)


def test_dp_sgd_is_reproducible_and_silent(private: SequenceModel, reference: Cohort,
                                           capfd) -> None:
    again = SequenceModel({**SMALL, "epsilon": 2.0}).fit(reference)
    assert again.checkpoint_hash() == private.checkpoint_hash()
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    other = SequenceModel({**SMALL, "epsilon": 2.0, "seed": 4}).fit(reference)
    assert other.checkpoint_hash() != private.checkpoint_hash()


def test_gru_trains_privately_as_dpgru_under_the_prv_accountant() -> None:
    # Short histories: opacus' DPGRU steps through time in Python.
    cohort = MarkovSimulator(scenario_from_dict(FLAG_SCENARIO)).simulate(300, seed=2)
    model = SequenceModel({**SMALL, "architecture": "gru", "max_epochs": 1, "epsilon": 4.0,
                           "accountant": "prv", "delta": 1e-6}).fit(cohort)
    record = model.training_["privacy"]
    assert record["accountant"] == "prv" and record["delta"] == 1e-6
    assert 0.5 * 4.0 < record["epsilon"] <= 4.0
    # Trained as opacus' DPGRU, kept as a plain nn.GRU with the same weights.
    assert isinstance(model.net_.backbone.gru, torch.nn.GRU)
    sampled = model.sample(200, seed=0)
    assert [r.name for r in check_integrity(sampled, absorbing_states={"dead"})
            if not r.passed] == []
    assert set(sampled.events["code"].unique()) <= {"state:well", "state:ill", "state:dead"}


def test_unreachable_budgets_and_stray_options_are_refused(reference: Cohort) -> None:
    with pytest.raises(PrivateTrainingError, match="cannot be reached"):
        SequenceModel({**SMALL, "epsilon": 1e-4, "max_epochs": 50}).fit(reference)
    with pytest.raises(TrajectoriesError, match="delta applies only with epsilon"):
        SequenceModel(delta=1e-6)
    with pytest.raises(TrajectoriesError, match="epsilon"):
        SequenceModel(epsilon=-1.0)
    with pytest.raises(TrajectoriesError, match="accountant"):
        SequenceModel(epsilon=1.0, accountant="gdp")


def test_cli_trains_privately_and_describe_shows_the_budget(reference: Cohort,
                                                            tmp_path: Path) -> None:
    reference.write(tmp_path / "ref")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(tmp_path / "ref"), "--out", str(tmp_path / "m"),
                                 "--epochs", "1", "--epsilon", "3", "--max-grad-norm", "0.5"])
    assert result.exit_code == 0, result.output
    assert re.search(r"epsilon 2\.\d+ \(target 3\)", result.output)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["privacy"] == saved["training"]["privacy"]
    assert saved["privacy"]["max_grad_norm"] == 0.5 and saved["config"]["epsilon"] == 3.0
    described = runner.invoke(app, ["describe", "--model", str(tmp_path / "m")])
    assert described.exit_code == 0, described.output
    assert f'"epsilon": {saved["privacy"]["epsilon"]}' in described.output
    refused = runner.invoke(app, ["train", str(tmp_path / "ref"), "--out",
                                  str(tmp_path / "m2"), "--delta", "1e-6"])
    assert isinstance(refused.exception, TrajectoriesError)  # main() prints it, exit 2
    assert "delta applies only with epsilon" in str(refused.exception)


# -- what the saved files hold ---------------------------------------------------------------------


def _row_signatures(cohort: Cohort) -> list[set[str]]:
    """Each person's covariates and follow-up as the strings a JSON file would hold them by."""
    persons = cohort.persons.select("age", "followup_end", "site", "arm")
    return [{repr(float(age)), repr(float(end)), site, arm}
            for age, end, site, arm in persons.iter_rows()]


def _containers(value, found: list[set[str]]) -> list[set[str]]:
    """Every list and dict of a JSON document as the set of its scalar members (as text)."""
    if isinstance(value, dict | list):
        members = value.values() if isinstance(value, dict) else value
        found.append({repr(float(v)) if isinstance(v, int | float) and not isinstance(v, bool)
                      else str(v) for v in members if not isinstance(v, dict | list)})
        for member in members:
            _containers(member, found)
    return found


def leaks(directory: Path, cohort: Cohort) -> list[str]:
    """Real person ids (as text or int64 bytes) or complete real rows found in any file."""
    ids = cohort.persons["person_id"].to_list()
    rows = _row_signatures(cohort)
    ages = cohort.persons["age"].cast(pl.Float32).to_numpy()
    ends = cohort.persons["followup_end"].cast(pl.Float32).to_numpy()
    found = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", errors="ignore")
        numbers = set(re.findall(r"\d{9}", text))
        found += [f"{path.name}: id {i}" for i in ids
                  if str(i) in numbers or struct.pack("<q", i) in data]
        if path.suffix == ".json":
            for members in _containers(json.loads(text), []):
                found += [f"{path.name}: row {sorted(row)}" for row in rows if row <= members]
        elif path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            for name in frame.columns:
                hits = frame[name].cast(pl.String).is_in(pl.Series([str(i) for i in ids]).implode())
                found += [f"{path.name}: id column {name}"] if hits.any() else []
        elif path.suffix == ".pt":
            for name, tensor in torch.load(path, weights_only=True).items():
                values = tensor.detach().float().flatten().numpy()
                both = np.isin(ages, values) & np.isin(ends, values)
                found += [f"{path.name}: {name} holds age and follow-up of a person"
                          ] if both.any() else []
    return found


def test_saved_models_hold_no_real_id_or_row(private: SequenceModel, ordinary: SequenceModel,
                                             reference: Cohort, tmp_path: Path) -> None:
    for name, model in (("private", private), ("ordinary", ordinary)):
        folder = model.save(tmp_path / name)
        assert leaks(folder, reference) == [], name
    # The scan finds what it looks for: a planted id, a planted row, ids in a Parquet file.
    planted = tmp_path / "planted"
    planted.mkdir()
    person = reference.persons.row(5, named=True)
    (planted / "a.json").write_text(json.dumps({"note": [person["person_id"]]}))
    (planted / "b.json").write_text(json.dumps({"x": {k: person[k] for k in (
        "age", "followup_end", "site", "arm")}}))
    reference.persons.select("person_id").head(2).write_parquet(planted / "c.parquet")
    torch.save({"w": torch.tensor([person["age"], 0.0, person["followup_end"]])},
               planted / "d.pt")
    found = leaks(planted, reference)
    assert any(f.startswith("a.json: id") for f in found)
    assert any(f.startswith("b.json: row") for f in found)
    assert any(f.startswith("c.parquet: id column") for f in found)
    assert any(f.startswith("d.pt: w holds") for f in found)


# -- the vocabulary under the small-cell rules -----------------------------------------------------


def test_vocabulary_ranges_lie_within_robust_range(ordinary: SequenceModel,
                                                    reference: Cohort) -> None:
    vocab = ordinary.vocab_
    persons = reference.persons
    columns = {"age": persons["age"].to_numpy(),
               "index_date": persons["index_date"].cast(pl.Int64).cast(pl.Float64).to_numpy()}
    numeric = [v for v in vocab.statics if v.kind == "numeric"]
    assert {v.name for v in numeric} == set(columns)
    for variable in numeric:
        values = columns[variable.name]
        low, high = robust_range(values)
        assert low <= variable.edges[0] and variable.edges[-1] <= high, variable.name
        assert variable.edges[0] > values.min() and variable.edges[-1] < values.max()
        counts = np.bincount(variable.bin_of(values), minlength=len(variable.edges) - 1)
        assert counts.min() >= MIN_CELL, variable.name
    frame = event_frame(reference, set(vocab.absorbing))
    ends = frame.filter(pl.col("end"))["time"].to_numpy()
    low, high = robust_range(ends)
    assert low <= vocab.end_edges[0] and vocab.end_edges[-1] <= high
    followup = persons["followup_end"].to_numpy()
    assert vocab.time_scale == np.sort(followup)[-MIN_CELL] < followup.max()
    for site, longest in vocab.site_followup.items():
        at_site = np.sort(persons.filter(pl.col("site") == site)["followup_end"].to_numpy())
        assert longest == at_site[-MIN_CELL]
    ldh = vocab.codes.index("measurement:ldh")
    values = frame.filter(pl.col("mark") == "measurement:ldh")
    lows = values.group_by("row").agg(pl.col("value").min())["value"].to_numpy()
    highs = values.group_by("row").agg(pl.col("value").max())["value"].to_numpy()
    assert vocab.value_min[ldh] == robust_range(lows)[0] > lows.min()
    assert vocab.value_max[ldh] == robust_range(highs)[1] < highs.max()
    assert vocab.max_events < frame.group_by("row").len()["len"].max()
    # Sampled values stay inside the released ranges.
    sampled = ordinary.sample(300, seed=3)
    age = sampled.persons["age"]
    assert age.min() >= numeric[0].edges[0] and age.max() <= numeric[0].edges[-1]


def _with_rare_things(reference: Cohort) -> Cohort:
    """``reference`` plus a site of 5 persons, an arm level of 4, a visit code held by 3, a
    state entered by 6 (instead of progressed) and an exit (censored) of 2 histories."""
    persons, events = reference.persons, reference.events
    ids = persons["person_id"].to_list()
    progressed = events.filter(pl.col("code") == "state:progressed")["person_id"].to_list()
    censored = persons.filter((pl.col("exit") == "administrative_censoring")
                              & ~pl.col("person_id").is_in(progressed[:6]))["person_id"]
    persons = persons.with_columns(
        pl.when(pl.col("person_id").is_in(ids[:5])).then(pl.lit("C")).otherwise("site")
        .alias("site"),
        pl.when(pl.col("person_id").is_in(ids[5:9])).then(pl.lit("crossover"))
        .otherwise("arm").alias("arm"),
        pl.when(pl.col("person_id").is_in(censored.head(2).implode()))
        .then(pl.lit("censored")).otherwise("exit").alias("exit"),
    )
    rare_visits = events.filter(pl.col("code") == "state:stable").head(3).with_columns(
        pl.lit("visit:rare").alias("code"))
    events = pl.concat([events.with_columns(
        pl.when(pl.col("person_id").is_in(progressed[:6]) & (pl.col("code") == "state:progressed"))
        .then(pl.lit("state:transplant")).otherwise("code").alias("code")), rare_visits])
    return Cohort(persons, events.sort("person_id", "time", maintain_order=True),
                  reference.manifest, check=False)


def test_rare_levels_codes_states_and_exits_are_merged_or_dropped(reference: Cohort) -> None:
    cohort = _with_rare_things(reference)
    released, notes = release_cohort(cohort)
    # The 6 histories censored at the rare state and the 2 censored ones make 8 ends of exit
    # censored: still too few, so they read as the most frequent exit of histories not absorbed.
    assert notes == [
        "3 event(s) of 1 code(s) held by fewer than 11 persons dropped",
        "6 history(ies) censored on entering one of 1 state(s) entered by fewer than 11 persons",
        "8 history(ies) ending in one of 1 exit(s) held by fewer than 11 persons read as "
        "administrative_censoring",
    ]
    vocab = build_vocabulary(cohort)
    names = " ".join(vocab.tokens)
    for rare in ("site=C", "crossover", "visit:rare", "transplant", "end:censored"):
        assert rare not in names
    assert vocab.exits == ["administrative_censoring", "lost_to_follow_up"]
    site, arm = vocab.statics[0], next(v for v in vocab.statics if v.name == "arm")
    arms = reference.persons["arm"].value_counts(sort=True)["arm"].to_list()
    assert site.levels == ["A", "B"] and site.other == "A"  # A is the larger site
    assert arm.levels == ["control", "treatment"] and arm.other == arms[0]
    # The censored histories end where the rare state would have begun.
    cut = cohort.events.filter(pl.col("code") == "state:transplant").select("person_id", "time")
    ended = released.persons.join(cut, on="person_id")
    assert ended.height == 6 and (ended["followup_end"] == ended["time"]).all()
    assert (ended["exit"] == "administrative_censoring").all()
    assert released.events.join(cut, on="person_id").filter(
        pl.col("time") >= pl.col("time_right")).height == 0
    tokens = tokenize(released, vocab)
    assert set(np.array(vocab.tokens)[tokens.static[:5, 0]]) == {"site=A"}
    assert set(np.array(vocab.tokens)[tokens.static[5:9, 3]]) == {f"arm={arms[0]}"}
    # Every static token, code and end mark is held by at least MIN_CELL persons.
    held = pl.DataFrame({"token": tokens.static.ravel()}).group_by("token").len()
    assert held["len"].min() >= MIN_CELL
    frame = event_frame(released, set(vocab.absorbing))
    assert frame.group_by("mark").agg(pl.col("row").n_unique())["row"].min() >= MIN_CELL


def test_rare_nulls_are_read_as_a_bin_and_unseen_levels_raise_without_merging(
        reference: Cohort) -> None:
    persons = reference.persons.with_columns(
        pl.when(pl.int_range(pl.len()) < 4).then(None).otherwise(pl.col("age")).alias("age"))
    vocab = build_vocabulary(Cohort(persons, reference.events, reference.manifest))
    age = next(v for v in vocab.statics if v.name == "age")
    assert not age.has_null and age.null_bin is not None
    assert "age=<null>" not in vocab.tokens
    arm = next(v for v in vocab.statics if v.name == "arm")
    assert arm.other is None
    with pytest.raises(TrajectoriesError, match=r"persons\.arm.*'placebo'"):
        arm.encode(pl.Series(["placebo"]))


# -- flags -----------------------------------------------------------------------------------------


def test_a_rare_binary_flag_keeps_its_share(tmp_path: Path) -> None:
    n, ones = 1000, 12
    cohort = MarkovSimulator(scenario_from_dict(FLAG_SCENARIO)).simulate(n, seed=3)
    flag = np.zeros(n)
    flag[np.random.default_rng(5).choice(n, ones, replace=False)] = 1.0
    cohort = Cohort(cohort.persons.with_columns(pl.Series("flag", flag)), cohort.events,
                    cohort.manifest)
    model = SequenceModel({**SMALL, "max_epochs": 10, "batch_tokens": 256, "patience": 10,
                           "seed": 0}).fit(cohort)
    variable = next(v for v in model.vocab_.statics if v.name == "flag")
    assert variable.kind == "categorical" and variable.levels == ["0.0", "1.0"]
    m = 4000
    sampled = model.sample(m, seed=1).persons["flag"]
    assert sampled.dtype == pl.Float64 and set(sampled.unique()) == {0.0, 1.0}
    p, n_train = ones / n, model.training_["train_persons"]
    tolerance = 4 * math.sqrt(p * (1 - p) * (1 / n_train + 1 / m))
    assert abs(sampled.mean() - p) <= tolerance
    # Conditions name a flag's level as a number.
    assert (model.sample(20, seed=0, conditions={"flag": "1"}).persons["flag"] == 1.0).all()
