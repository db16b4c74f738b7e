"""The sequence model's vocabulary and token layout, on a hand-made cohort with known answers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from trajectories import Cohort, Manifest, TrajectoriesError
from trajectories.sequence.tokenizer import (
    Vocabulary,
    absorbing_states,
    build_vocabulary,
    tokenize,
)


def _cohort(extra_events: list[tuple] = ()) -> Cohort:
    persons = pl.DataFrame({
        "person_id": [1, 2, 3],
        "site": ["A", "B", "A"],
        "index_date": [dt.date(2020, 1, 1), dt.date(2020, 6, 1), dt.date(2021, 1, 1)],
        "birth_date": [dt.date(1970, 1, 1), dt.date(1960, 6, 1), dt.date(1951, 1, 1)],
        "sex": ["F", "M", None],
        "followup_end": [7.0, 10.0, 10.0],
        "exit": ["death", "administrative_censoring", "lost_to_follow_up"],
        "age": [50.0, 60.0, 70.0],
        "arm": ["x", "y", "x"],
    })
    rows = [
        (1, 0.0, None, "state:a", None),
        (1, 2.0, 3.0, "visit:v", None),
        (1, 2.0, None, "measurement:m", 1.5),
        (1, 5.0, None, "state:b", None),
        (1, 7.0, None, "state:d", None),
        (1, 7.0, 7.0, "visit:v", None),  # at the instant of death, after it: dropped
        (2, 0.0, None, "state:a", None),
        (2, 4.0, 4.0, "visit:v", None),  # tied with the move to b: states go first
        (2, 4.0, None, "state:b", None),
        (3, 0.0, None, "state:a", None),
        (3, 0.0, 10.0, "drug:z", None),  # cut by the end of follow-up: censored duration
        *extra_events,
    ]
    events = pl.DataFrame(rows, schema={"person_id": pl.Int64, "time": pl.Float64,
                                        "end_time": pl.Float64, "code": pl.String,
                                        "value": pl.Float64}, orient="row")
    return Cohort(persons, events, Manifest.new("test", 3))


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return build_vocabulary(_cohort(), numeric_bins=2, end_bins=4, min_cell=1)


def test_vocabulary_lists_statics_codes_and_end_marks(vocab: Vocabulary) -> None:
    assert [s.name for s in vocab.statics] == ["site", "sex", "age", "arm", "index_date"]
    assert vocab.statics[1].levels == ["F", "M", "<null>"]
    assert vocab.statics[2].edges == [50.0, 60.0, 70.0]
    assert vocab.tokens[:2] == ["<pad>", "<bos>"]
    assert vocab.tokens[2:7] == ["site=A", "site=B", "sex=F", "sex=M", "sex=<null>"]
    assert vocab.codes == ["drug:z", "measurement:m", "state:a", "state:b", "state:d",
                           "visit:v"]
    assert vocab.exits == ["administrative_censoring", "lost_to_follow_up"]
    assert vocab.tokens[vocab.first_end:] == ["end:administrative_censoring",
                                              "end:lost_to_follow_up"]
    assert vocab.birth == "age"
    assert vocab.columns == [["age", "Float64"], ["arm", "String"]]


def test_structure_absorbing_states_and_allowed_moves(vocab: Vocabulary) -> None:
    assert vocab.absorbing == ["state:d"] and vocab.death == ["state:d"]
    assert vocab.initial == ["state:a"]
    assert vocab.allowed == {
        "state:a": ["drug:z", "end:lost_to_follow_up", "measurement:m", "state:b", "visit:v"],
        "state:b": ["end:administrative_censoring", "state:d", "visit:v"],
    }
    table = vocab.mask_table()
    position = vocab.token_of()
    a = 2 + vocab.states.index("state:a")
    assert not table[a, position["state:d"]]  # a -> d never seen: masked
    assert not table[a, position["state:a"]]
    assert table[a, position["end:administrative_censoring"]]  # end marks always allowed
    assert table[1].sum() == 1 and table[1, position["state:a"]]
    assert table[0, 2:vocab.first_code].all() and not table[0, vocab.first_code:].any()


def test_token_layout_gaps_values_and_durations(vocab: Vocabulary) -> None:
    tokens = tokenize(_cohort(), vocab)
    names = np.array(vocab.tokens)[tokens.token]
    assert tokens.offsets.tolist() == [0, 5, 9, 12]
    assert names.tolist() == [
        "state:a", "visit:v", "measurement:m", "state:b", "state:d",
        "state:a", "state:b", "visit:v", "end:administrative_censoring",
        "state:a", "drug:z", "end:lost_to_follow_up",
    ]
    np.testing.assert_allclose(tokens.gap, [0, 2, 0, 3, 2, 0, 4, 0, 6, 0, 0, 10])
    np.testing.assert_allclose(tokens.entry, [0, 0, 0, 5, 7, 0, 4, 4, 4, 0, 0, 0])
    assert np.array(vocab.states)[tokens.state].tolist()[5:9] == ["state:a", "state:b",
                                                                 "state:b", "state:b"]
    np.testing.assert_allclose(tokens.duration[[1, 7, 10]], [1.0, 0.0, 10.0])
    assert np.isnan(tokens.duration[[0, 2, 8]]).all()
    assert tokens.censored.tolist() == [False] * 10 + [True, False]
    assert tokens.has_value.tolist() == [False, False, True] + [False] * 9
    assert (tokens.end_bin >= 0).tolist() == [False] * 8 + [True, False, False, True]
    # Statics in vocabulary order: site, sex, age bin, arm, index-date bin.
    assert np.array(vocab.tokens)[tokens.static[2]].tolist() == [
        "site=A", "sex=<null>", "age#1", "arm=x", "index_date#1"]
    assert tokens.lengths.tolist() == [11, 10, 9]
    part = tokens.subset(np.array([2, 0]))
    assert np.array(vocab.tokens)[part.token].tolist() == names[[9, 10, 11, 0, 1, 2, 3, 4]
                                                                ].tolist()
    assert part.person_ids.tolist() == [3, 1]


def test_vocabulary_round_trips_through_json(vocab: Vocabulary) -> None:
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab
    assert again.to_json() == vocab.to_json()


def test_end_bins_keep_frequent_exact_dates_as_atoms() -> None:
    cohort = _cohort()
    base = build_vocabulary(cohort, min_cell=1)
    times = np.array([730.0] * 40 + list(np.linspace(10, 700, 60)))
    from trajectories.sequence.tokenizer import _end_bins

    atoms, edges = _end_bins(times, 8, min_cell=1)
    assert atoms == [730.0]
    assert edges[0] == 10.0 and edges[-1] == 730.0 and len(edges) == 9
    vocab = Vocabulary(**{**base.__dict__, "end_atoms": atoms, "end_edges": edges})
    bins = vocab.end_bin(np.array([730.0, 10.0, 700.0, 355.0]))
    assert bins[0] == 0 and bins[1] == 1 and bins[2] == 8
    low, high = vocab.end_bounds()
    assert low[0] == high[0] == 730.0
    assert (low[bins[3]] <= 355.0 <= high[bins[3]])


def test_absorbing_states_need_more_ends_than_exits() -> None:
    absorbing, death = absorbing_states(_cohort())
    assert absorbing == ["state:d"] and death == ["state:d"]


def test_unknown_codes_and_levels_are_refused(vocab: Vocabulary) -> None:
    with pytest.raises(TrajectoriesError, match="visit:new"):
        tokenize(_cohort([(3, 1.0, 1.0, "visit:new", None)]), vocab)
    cohort = _cohort()
    other = Cohort(cohort.persons.with_columns(pl.lit("z").alias("arm")), cohort.events,
                   cohort.manifest)
    with pytest.raises(TrajectoriesError, match=r"persons\.arm.*'z'"):
        tokenize(other, vocab)
