"""Recurrent events in the fit: episode chains are found, and sparse later episodes share one
fit that keeps the covariate effect on later events."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from trajectories import MarkovSimulator
from trajectories.fit import MultiStateModel
from trajectories.fit.episodes import MIN_EVENTS_ALONE, episode_chains, pooled_tails
from trajectories.scenario import scenario_from_dict

TRUE_EFFECT = -0.7
RATES = [0.0008, 0.006, 0.006, 0.006, 0.006, 0.006]


def _recurrent_scenario() -> dict:
    states = ["at_risk", "infection", *(f"infection_{k}" for k in range(2, 7))]
    return {
        "name": "recurrent",
        "initial_state": "at_risk",
        "states": [{"name": s} for s in states],
        "transitions": [
            {"from": a, "to": b, "clock": "forward",
             "hazard": {"family": "exponential", "rate": rate},
             "effects": {"arm": {"treated": TRUE_EFFECT}}}
            for a, b, rate in zip(states[:-1], states[1:], RATES, strict=True)
        ],
        "covariates": {"arm": {"kind": "categorical",
                               "levels": {"control": 0.5, "treated": 0.5}}},
        "followup": {"max_days": 300},
    }


def test_episode_chains_need_unbroken_numbering():
    moves = [("a", "b"), ("b", "b_2"), ("b_2", "b_3"), ("b_3", "b_4"), ("x", "x_3")]
    assert episode_chains(moves) == {"b": [("b", "b_2"), ("b_2", "b_3"), ("b_3", "b_4")]}
    events = {("a", "b"): 50, ("b", "b_2"): 30, ("b_2", "b_3"): 12, ("b_3", "b_4"): 3,
              ("x", "x_3"): 1}
    assert pooled_tails(moves, events) == [[("b_2", "b_3"), ("b_3", "b_4")]]
    # a single sparse last episode has nothing to be pooled with
    assert pooled_tails(moves[:3], events) == []


def test_sparse_later_episodes_share_a_fit_that_keeps_the_effect():
    cohort = MarkovSimulator(scenario_from_dict(_recurrent_scenario())).simulate(n=1200, seed=5)
    spells = cohort.state_spells().filter(pl.col("next_state").is_not_null())
    counts = dict(spells.group_by("state").len().iter_rows())
    chain = ["at_risk", "infection", *(f"infection_{k}" for k in range(2, 7))]
    chain = [s for s in chain if s in counts]
    sparse = [s for s in chain[1:] if counts[s] < MIN_EVENTS_ALONE]
    assert sparse and len(chain) - chain.index(sparse[0]) >= 2  # a sparse tail, as in real data
    model = MultiStateModel(families="exponential", clock="forward",
                            covariates=["arm"]).fit(cohort)
    first = model.transition("at_risk->infection")
    tail = [t for t in model.transitions_ if t.events is not None]
    assert [t.source for t in tail] == chain[chain.index(sparse[0]):]
    assert len({id(t.fit) for t in tail}) == 1  # one shared fit
    shared = tail[0].fit
    assert shared.n_events == sum(t.events for t in tail)
    assert {t.events for t in tail} == {counts[t.source] for t in tail}
    # The effect on later events is estimated (alone, the sparsest moves would have fewer than
    # 10 events and no covariates) and equals the truth within 3 standard errors.
    for fitted in (first, tail[0]):
        effect = fitted.effects()["arm"]["treated"]
        column = fitted.columns.index(("arm", "treated"))
        se = fitted.fit.std_errors[fitted.fit.theta.size + column]
        assert abs(effect - TRUE_EFFECT) < 3 * se, (fitted.key, effect, se)
    # The pooled control-level rate is close to the true common rate of later episodes.
    rate = math.exp(shared.theta[0])
    assert abs(math.log(rate / RATES[1])) < 3 / math.sqrt(shared.n_events / 2), rate
    summary = {t["transition"]: t for t in model.summary()["transitions"]}
    pooled_key = tail[0].key
    assert summary[pooled_key]["n_events"] == tail[0].events
    assert summary[pooled_key]["n_events_fitted"] == shared.n_events
    assert any("fitted together with the later episodes" in n
               for n in summary[pooled_key]["notes"])
    synthetic = model.simulate(n=4000, seed=2)
    later = synthetic.state_spells().filter(pl.col("state") == "infection_3")
    assert later.height > 0
    assert np.isfinite(later["stop"].to_numpy()).all()
