"""SequenceModel's contract: reproducible training and sampling, save/load, conditions, values
and durations, errors that name what is wrong."""

from __future__ import annotations

import copy
import json

import numpy as np
import polars as pl
import pytest
import torch
from conftest import FULL_SCENARIO

from trajectories import Cohort, MarkovSimulator, TrajectoriesError
from trajectories.scenario import scenario_from_dict
from trajectories.sequence import SequenceConfig, SequenceModel
from trajectories.sequence.train import resolve_device
from validation.integrity import check_integrity

SMALL = {"d_model": 16, "n_heads": 2, "feedforward": 32, "n_layers": 1, "max_epochs": 2,
         "batch_tokens": 4096, "seed": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference() -> Cohort:
    scenario = scenario_from_dict(FULL_SCENARIO, source="<full>")
    return MarkovSimulator(scenario).simulate(400, seed=7)


@pytest.fixture(scope="module")
def model(reference: Cohort) -> SequenceModel:
    return SequenceModel(SMALL).fit(reference)


def _same(a: Cohort, b: Cohort) -> bool:
    return a.persons.equals(b.persons) and a.events.equals(b.events)


def test_same_seed_same_samples_and_other_seeds_differ(model: SequenceModel) -> None:
    first, again = model.sample(300, seed=1), model.sample(300, seed=1)
    assert _same(first, again)
    other = model.sample(300, seed=2)
    assert not other.events.equals(first.events)
    # Blocks of persons have their own seeded streams: smaller blocks give other, equally
    # reproducible, samples.
    blocks = copy.copy(model)
    blocks.config = model.config.model_copy(update={"batch_size": 100})
    assert _same(blocks.sample(300, seed=1), blocks.sample(300, seed=1))
    assert not blocks.sample(300, seed=1).events.equals(first.events)


def test_training_is_reproducible(reference: Cohort, model: SequenceModel) -> None:
    again = SequenceModel(SMALL).fit(reference)
    assert again.checkpoint_hash() == model.checkpoint_hash()
    assert again.training_["history"] == model.training_["history"]
    other = SequenceModel({**SMALL, "seed": 4}).fit(reference)
    assert other.checkpoint_hash() != model.checkpoint_hash()


def test_save_then_load_gives_the_same_samples(model: SequenceModel, tmp_path) -> None:
    folder = model.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "vocabulary.json",
                                                        "weights.pt"]
    state = torch.load(folder / "weights.pt", weights_only=True)
    assert set(state) == set(model.net_.state_dict())
    saved = json.loads((folder / "config.json").read_text())
    assert saved["checkpoint_hash"] == model.checkpoint_hash()
    assert saved["config"]["d_model"] == 16
    loaded = SequenceModel.load(folder)
    assert loaded.checkpoint_hash() == model.checkpoint_hash()
    assert _same(loaded.sample(200, seed=9), model.sample(200, seed=9))
    with pytest.raises(TrajectoriesError, match="not empty"):
        model.save(folder)
    model.save(folder, overwrite=True)


def test_sampled_cohort_keeps_the_data_model(model: SequenceModel, reference: Cohort) -> None:
    sampled = model.sample(400, seed=5)
    assert [r.name for r in check_integrity(sampled, absorbing_states={"death"})
            if not r.passed] == []
    assert sampled.persons.columns == reference.persons.columns
    assert sampled.persons.schema == reference.persons.schema
    assert set(sampled.persons["site"].unique()) <= {"A", "B"}
    assert set(sampled.persons["arm"].unique()) <= {"control", "treatment"}
    age = sampled.persons["age"]
    assert age.min() >= reference.persons["age"].min() and age.max() <= reference.persons[
        "age"].max()
    # birth_date follows age at index, as the simulator writes it.
    days = (sampled.persons["index_date"] - sampled.persons["birth_date"]).dt.total_days()
    assert (days == (age * 365.25).round().cast(pl.Int64)).all()
    events = sampled.events
    ldh = events.filter(pl.col("code") == "measurement:ldh")["value"]
    assert ldh.len() > 0 and ldh.null_count() == 0
    assert (ldh == ldh.round()).all() and ldh.min() >= reference.events.filter(
        pl.col("code") == "measurement:ldh")["value"].min()
    assert events.filter(pl.col("code") != "measurement:ldh")["value"].null_count() == \
        events.filter(pl.col("code") != "measurement:ldh").height
    with_end = events.join(sampled.persons, on="person_id").filter(
        pl.col("end_time").is_not_null())
    assert (with_end["end_time"] <= with_end["followup_end"]).all()
    assert set(with_end["code"].unique()) <= {"visit:outpatient", "visit:inpatient",
                                             "drug:pembrolizumab"}
    assert events.filter(pl.col("code").str.starts_with("state:"))["end_time"].null_count() \
        == events.filter(pl.col("code").str.starts_with("state:")).height
    manifest = sampled.manifest
    assert manifest.concepts == reference.manifest.concepts
    assert manifest.trained_on == {"generator": "MarkovSimulator", "scenario_name": "full",
                                   "persons": 400}


def test_conditions_fix_site_arm_and_age(model: SequenceModel) -> None:
    sampled = model.sample(200, seed=4, conditions={"site": "B", "arm": "treatment",
                                                    "age": 70.0})
    # Values as the command line passes them (text) are read as numbers.
    assert (model.sample(20, seed=4, conditions={"age": "70"}).persons["age"] == 70.0).all()
    assert (sampled.persons["site"] == "B").all()
    assert (sampled.persons["arm"] == "treatment").all()
    assert (sampled.persons["age"] == 70.0).all()
    assert sampled.manifest.conditions == {"site": "B", "arm": "treatment", "age": 70.0}
    # Drugs given only in the treatment arm can appear; none are impossible moves.
    assert [r.name for r in check_integrity(sampled, absorbing_states={"death"})
            if not r.passed] == []


def test_bad_conditions_name_the_variable(model: SequenceModel) -> None:
    with pytest.raises(TrajectoriesError, match="unknown variable 'colour'"):
        model.sample(10, conditions={"colour": "red"})
    with pytest.raises(TrajectoriesError, match=r"site = 'Z'.*\['A', 'B'\]"):
        model.sample(10, conditions={"site": "Z"})
    with pytest.raises(TrajectoriesError, match="age = 500"):
        model.sample(10, conditions={"age": 500})
    with pytest.raises(TrajectoriesError, match="age = 'old' is not a number"):
        model.sample(10, conditions={"age": "old"})
    with pytest.raises(TrajectoriesError, match="n must be a positive integer"):
        model.sample(0)
    with pytest.raises(TrajectoriesError, match="seed must be"):
        model.sample(10, seed=-1)


def test_config_and_device_errors() -> None:
    with pytest.raises(TrajectoriesError, match="d_model"):
        SequenceModel(d_model=30, n_heads=4)
    with pytest.raises(TrajectoriesError, match="colour"):
        SequenceModel(colour="red")
    with pytest.raises(TrajectoriesError, match="learning_rate"):
        SequenceModel(learning_rate=-1)
    with pytest.raises(TrajectoriesError, match="tpu"):
        resolve_device("tpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert SequenceConfig().architecture == "transformer"
    with pytest.raises(TrajectoriesError, match="not trained"):
        SequenceModel().sample(5)


def test_load_errors_name_the_file(tmp_path, model: SequenceModel) -> None:
    with pytest.raises(TrajectoriesError, match="weights.pt missing"):
        SequenceModel.load(tmp_path)
    folder = model.save(tmp_path / "broken")
    (folder / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrajectoriesError, match="weights.pt: cannot load"):
        SequenceModel.load(folder)


def test_gru_backbone_samples_valid_cohorts(reference: Cohort) -> None:
    gru = SequenceModel({**SMALL, "architecture": "gru", "max_epochs": 1}).fit(reference)
    sampled = gru.sample(150, seed=0)
    assert sampled.n_persons == 150
    assert [r.name for r in check_integrity(sampled, absorbing_states={"death"})
            if not r.passed] == []
    assert _same(gru.sample(150, seed=0), sampled)


def test_small_cohorts_are_refused(reference: Cohort) -> None:
    persons = reference.persons.head(5)
    events = reference.events.filter(pl.col("person_id").is_in(persons["person_id"].implode()))
    with pytest.raises(TrajectoriesError, match="at least 10"):
        SequenceModel(SMALL).fit(Cohort(persons, events, reference.manifest))


def test_the_library_prints_nothing(model: SequenceModel, reference: Cohort, capfd) -> None:
    SequenceModel({**SMALL, "max_epochs": 1}).fit(reference).sample(20, seed=0)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert np.isfinite(model.next_code_log_likelihood(reference))
