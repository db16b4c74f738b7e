"""holdout_split: a reference's train and holdout parts, a fixed function of (seed, person_id)
recomputable from the {"fraction", "seed"} a manifest records."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from trajectories.cohort import Cohort, Manifest, holdout_split
from trajectories.cohort.split import holdout_draws
from trajectories.errors import TrajectoriesError
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator

SCENARIO = {
    "name": "split_test",
    "initial_state": "well",
    "states": [{"name": "well"}, {"name": "dead", "absorbing": True}],
    "transitions": [{"from": "well", "to": "dead",
                     "hazard": {"family": "exponential", "rate": 0.001}}],
    "followup": {"max_days": 1000, "loss_to_followup_per_year": 0.0},
    "visits": [{"type": "outpatient", "rates_per_year": {"well": 4}}],
}


@pytest.fixture(scope="module")
def reference() -> Cohort:
    return MarkovSimulator(scenario_from_dict(SCENARIO)).simulate(2_000, seed=1)


def test_the_parts_partition_persons_and_events(reference):
    train, holdout = holdout_split(reference, 0.3, seed=7)
    ids = [set(p.persons.get_column("person_id").to_list()) for p in (train, holdout)]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(reference.persons.get_column("person_id").to_list())
    for part, own in zip((train, holdout), ids, strict=True):
        assert set(part.events.get_column("person_id").unique().to_list()) == own
        assert part.manifest.n_persons == part.n_persons == len(own)
    assert train.events.height + holdout.events.height == reference.events.height
    assert holdout.manifest.model_extra["split"] == {"part": "holdout", "fraction": 0.3,
                                                     "seed": 7}
    # Each part keeps its persons' rows as they were, in the reference's order.
    again = pl.concat([train.persons, holdout.persons]).sort("person_id")
    assert again.equals(reference.persons.sort("person_id"))


def test_the_split_is_recomputed_from_fraction_and_seed_alone(reference):
    first = holdout_split(reference, 0.25, seed=3)[1].persons.get_column("person_id")
    again = holdout_split(reference, 0.25, seed=3)[1].persons.get_column("person_id")
    other = holdout_split(reference, 0.25, seed=4)[1].persons.get_column("person_id")
    assert first.equals(again) and not first.equals(other)
    # A person's part depends on their own id only: a subset splits as the subset of the split.
    subset = reference.persons.filter(pl.col("person_id") % 3 == 0)
    small = Cohort(subset, reference.events.join(subset.select("person_id"), on="person_id",
                                                 how="semi"), reference.manifest)
    held = holdout_split(small, 0.25, seed=3)[1].persons.get_column("person_id")
    assert held.to_list() == [i for i in first.to_list() if i % 3 == 0]
    # A larger fraction holds out a superset (draws below 0.25 are below 0.5).
    wider = set(holdout_split(reference, 0.5, seed=3)[1].persons.get_column("person_id"))
    assert set(first.to_list()) <= wider


def test_draws_are_uniform_and_the_share_matches_the_fraction():
    ids = np.arange(1, 100_001)
    draws = holdout_draws(ids, seed=11)
    assert draws.min() >= 0.0 and draws.max() < 1.0
    assert stats.kstest(draws, "uniform").pvalue > 1e-3
    share = float((draws < 0.2).mean())
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / ids.size)
    # Consecutive ids, and the same ids under consecutive seeds, are not correlated.
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 4 / math.sqrt(ids.size)
    assert abs(np.corrcoef(draws, holdout_draws(ids, seed=12))[0, 1]) < 4 / math.sqrt(ids.size)
    # Negative ids are ids too.
    assert holdout_draws(np.array([-5, 5]), seed=0)[0] != holdout_draws(np.array([5]), 0)[0]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(reference, fraction):
    with pytest.raises(TrajectoriesError, match="holdout fraction must be between 0 and 1"):
        holdout_split(reference, fraction, seed=0)


def test_the_manifest_records_the_split_and_survives_a_round_trip(reference, tmp_path):
    manifest = Manifest.new("test", reference.n_persons,
                            reference_split={"fraction": 0.2, "seed": 5})
    Cohort(reference.persons, reference.events, manifest).write(tmp_path / "c")
    back = Cohort.read(tmp_path / "c")
    assert back.manifest.reference_split == {"fraction": 0.2, "seed": 5}
    train, holdout = holdout_split(reference, **back.manifest.reference_split)
    assert holdout.persons.equals(holdout_split(reference, 0.2, 5)[1].persons)
    assert Manifest.new("test", 1).reference_split is None
