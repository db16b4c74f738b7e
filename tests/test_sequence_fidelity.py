"""The sequence model against a known illness-death scenario: validation verdicts on held-out
data, next-code likelihood against a first-order Markov chain, structure of every person."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from trajectories import Cohort, MarkovSimulator
from trajectories.scenario import scenario_from_dict
from trajectories.sequence import SequenceModel
from trajectories.sequence.tokenizer import event_frame
from validation import compare
from validation.integrity import check_integrity
from validation.transitions import observed_transitions, transition_counts

SCENARIO = {
    "name": "sequence_illness_death",
    "initial_state": "healthy",
    "states": [{"name": "healthy"}, {"name": "ill"}, {"name": "dead", "absorbing": True}],
    "transitions": [
        {"from": "healthy", "to": "ill", "hazard": {"family": "exponential", "rate": 0.0015},
         "effects": {"arm": {"treated": -0.5}}},
        {"from": "healthy", "to": "dead", "hazard": {"family": "exponential", "rate": 0.0005}},
        {"from": "ill", "to": "dead", "clock": "reset",
         "hazard": {"family": "weibull", "shape": 1.3, "scale": 400.0}},
    ],
    "covariates": {"arm": {"kind": "categorical", "levels": {"control": 0.5, "treated": 0.5}}},
    "sites": [{"name": "A", "share": 0.6}, {"name": "B", "share": 0.4, "followup_days": 900}],
    "followup": {"max_days": 1500, "loss_to_followup_per_year": 0.05},
    "visits": [{"type": "outpatient", "rates_per_year": {"healthy": 1, "ill": 4}}],
}
N_TRAIN, N_HELD_OUT, N_SAMPLED = 16_000, 4_000, 4_000  # 20,000 simulated persons
ABSORBING = "state:dead"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _split(cohort: Cohort, ids: pl.Series) -> Cohort:
    persons = cohort.persons.filter(pl.col("person_id").is_in(ids.implode()))
    events = cohort.events.filter(pl.col("person_id").is_in(ids.implode()))
    return Cohort(persons, events, cohort.manifest)


@pytest.fixture(scope="module")
def data() -> dict:
    scenario = scenario_from_dict(SCENARIO)
    cohort = MarkovSimulator(scenario).simulate(N_TRAIN + N_HELD_OUT, seed=11)
    ids = cohort.persons["person_id"]
    train, held_out = _split(cohort, ids.head(N_TRAIN)), _split(cohort, ids.tail(N_HELD_OUT))
    model = SequenceModel(max_epochs=20, patience=3, batch_tokens=1024, seed=0).fit(train)
    sampled = model.sample(N_SAMPLED, seed=5)
    return {"train": train, "held_out": held_out, "model": model, "sampled": sampled}


def test_sampled_cohort_passes_survival_and_transition_checks(data: dict) -> None:
    report = compare(data["sampled"], data["held_out"], seed=0, figures=False)
    judged = [c for c in report.checks if c.group in ("integrity", "survival", "transitions")
              and c.verdict != "info"]
    groups = {c.group for c in judged}
    assert groups == {"integrity", "survival", "transitions"}
    assert sum(c.group == "survival" for c in judged) >= 10
    assert sum(c.group == "transitions" for c in judged) >= 10
    failed = [(c.group, c.name, c.subject, c.site, c.metric, c.threshold)
              for c in judged if c.failed]
    assert failed == []


def _markov_log_likelihood(train: Cohort, held_out: Cohort) -> np.ndarray:
    """Per-target log probability of each next code (end marks included, after each person's
    first event) under a first-order chain fitted on ``train`` (add-half smoothing)."""

    def pairs(cohort: Cohort) -> pl.DataFrame:
        frame = event_frame(cohort, {ABSORBING})
        return frame.with_columns(pl.col("mark").shift(1).alias("previous")).filter(
            ~pl.col("first")).select("previous", "mark")

    fitted = pairs(train)
    marks = fitted["mark"].unique().to_list()
    counts = fitted.group_by("previous", "mark").len()
    totals = fitted.group_by("previous").len().rename({"len": "total"})
    scored = (
        pairs(held_out)
        .join(counts, on=["previous", "mark"], how="left")
        .join(totals, on="previous", how="left")
        .with_columns(pl.col("len").fill_null(0), pl.col("total").fill_null(0))
    )
    probability = (scored["len"] + 0.5) / (scored["total"] + 0.5 * len(marks))
    return np.log(probability.to_numpy())


def test_next_code_log_likelihood_beats_a_first_order_markov_chain(data: dict) -> None:
    markov = _markov_log_likelihood(data["train"], data["held_out"])
    model = data["model"].next_code_log_likelihood(data["held_out"])
    # The model's advantage must exceed 4 standard errors of the chain's mean (the paired
    # difference varies less, so this is conservative).
    standard_error = markov.std() / math.sqrt(markov.size)
    assert model > markov.mean() + 4 * standard_error, (model, markov.mean(), standard_error)


def test_structural_guarantees_hold_for_every_sampled_person(data: dict) -> None:
    sampled, train = data["sampled"], data["train"]
    results = check_integrity(sampled, absorbing_states={"dead"})
    assert [r.name for r in results if not r.passed] == []
    assert sampled.n_persons == N_SAMPLED
    seen = observed_transitions(transition_counts(train))
    moves = observed_transitions(transition_counts(sampled))
    assert moves <= seen and ("healthy", "ill") in moves
    events = sampled.events
    assert (events.group_by("person_id", maintain_order=True)
            .agg(pl.col("time").diff().min()).get_column("time").drop_nulls() >= 0).all()
    first = events.group_by("person_id", maintain_order=True).first()
    assert (first["code"] == "state:healthy").all() and (first["time"] == 0).all()
    last = events.group_by("person_id", maintain_order=True).last().join(
        sampled.persons, on="person_id")
    died = last.filter(pl.col("code") == ABSORBING)
    assert (died["exit"] == "death").all() and (died["time"] == died["followup_end"]).all()
    assert (last.filter(pl.col("code") != ABSORBING)["exit"] != "death").all()
    assert (last["time"] <= last["followup_end"]).all()
    assert set(sampled.persons["site"].unique()) == {"A", "B"}
    # Follow-up never exceeds the longest seen in training at the person's site.
    longest = train.persons.group_by("site").agg(pl.col("followup_end").max().alias("cap"))
    capped = sampled.persons.join(longest, on="site")
    assert (capped["followup_end"] <= capped["cap"]).all()
    assert capped.filter(pl.col("site") == "B")["followup_end"].max() == 900.0


def test_manifest_names_checkpoint_and_training_data(data: dict) -> None:
    manifest = data["sampled"].manifest
    assert manifest.generator == "SequenceModel"
    assert manifest.reference_fingerprint == data["train"].fingerprint()
    assert manifest.checkpoint_hash == data["model"].checkpoint_hash()
    assert manifest.seed == 5 and manifest.n_persons == N_SAMPLED
