"""Hard temporal rules a cohort must obey, each reported with the persons that break it.

:func:`check_integrity` runs the data model's own rules (``trajectories.cohort.find_violations``)
and adds the rules about state paths that the data model leaves to validation: one initial
state, plausible ages, nothing after an absorbing state, an absorbing state for those who died.
Build a faulty cohort with ``Cohort(..., check=False)`` so that every problem is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import polars as pl

from trajectories.cohort import (
    DATA_MODEL_RULES,
    MAX_AGE_YEARS,
    STATE_PREFIX,
    Cohort,
    find_violations,
    grouped_by_person,
    same_person_as_previous,
)
from validation.distributions import DAYS_PER_YEAR
from validation.report import Check, judge
from validation.transitions import ABSORBED_EXITS, infer_absorbing_states

SHOWN_IDS = 5



@dataclass(frozen=True)
class IntegrityResult:
    """One rule checked: whether it held, and how many (and which first) persons break it.

    ``rule`` states precisely what was tested; ``description`` says in a line what must hold.
    """

    name: str
    description: str
    passed: bool
    n_persons: int
    first_person_ids: list[int] = field(default_factory=list)
    rule: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _result(name: str, description: str, rule: str, person_ids: pl.Series) -> IntegrityResult:
    ids = person_ids.drop_nulls().unique(maintain_order=True)
    return IntegrityResult(
        name=name,
        description=description,
        passed=ids.len() == 0,
        n_persons=ids.len(),
        first_person_ids=ids.head(SHOWN_IDS).to_list(),
        rule=rule,
    )


def _data_model_results(cohort: Cohort) -> list[IntegrityResult]:
    found = {v.rule: v for v in find_violations(cohort.persons, cohort.events)}
    empty = pl.Series("person_id", [], dtype=pl.Int64)
    results = []
    for name in list(DATA_MODEL_RULES) + [r for r in found if r not in DATA_MODEL_RULES]:
        violation = found.get(name)
        description = DATA_MODEL_RULES.get(name) or violation.message
        rule = f"data model rule {name!r} (trajectories.cohort.find_violations)"
        if violation is not None:
            rule += f": {violation.message}"
        ids = empty if violation is None else violation.person_ids
        results.append(_result(name, description, rule, ids))
    return results


def check_integrity(
    cohort: Cohort,
    age_range: tuple[float, float] = (0, MAX_AGE_YEARS),
    absorbing_states: Iterable[str] | None = None,
) -> list[IntegrityResult]:
    """Every integrity rule checked on ``cohort``, passed or not, in a fixed order.

    ``absorbing_states`` defaults to :func:`validation.transitions.infer_absorbing_states`;
    pass the scenario's absorbing states where they are known.
    """
    low, high = age_range
    absorbing = (
        infer_absorbing_states(cohort) if absorbing_states is None else set(absorbing_states)
    )
    persons = cohort.persons
    events = grouped_by_person(cohort.events).with_row_index("row")
    states = events.filter(pl.col("code").str.starts_with(STATE_PREFIX)).with_columns(
        pl.col("code").str.strip_prefix(STATE_PREFIX).alias("state")
    )
    same_as_previous = same_person_as_previous()
    absorbed = (
        states.filter(pl.col("state").is_in(list(absorbing)))
        .group_by("person_id")
        .agg(pl.col("row").min().alias("absorbed_row"),
             pl.col("time").sort_by("row").first().alias("absorbed_time"))
    )
    last_state = states.group_by("person_id").agg(
        pl.col("state").sort_by("row").last().alias("last_state"),
        pl.col("time").sort_by("row").last().alias("last_time"),
    )
    ends = persons.select("person_id", "followup_end", "exit").join(
        last_state, on="person_id", how="left"
    )
    with_end = events.join(persons.select("person_id", "followup_end"), on="person_id")
    after_absorbing = events.join(absorbed, on="person_id")
    age = (pl.col("index_date") - pl.col("birth_date")).dt.total_days() / DAYS_PER_YEAR
    absorbing_text = ", ".join(sorted(absorbing)) or "none"

    checks = [
        ("single_initial_state",
         "each person has exactly one state event at time 0",
         "persons with two or more 'state:' events at time 0 (a jump at time 0 counts too)",
         states.filter(pl.col("time") == 0).filter(pl.col("person_id").is_duplicated())),
        ("repeated_state",
         "consecutive state events of a person differ (a move changes state)",
         "a 'state:' event naming the same state as the person's previous 'state:' event",
         states.filter(same_as_previous & (pl.col("state") == pl.col("state").shift(1)))),
        ("age_at_index",
         f"age at index is within [{low}, {high}] years",
         f"(index_date - birth_date) / {DAYS_PER_YEAR} days outside [{low}, {high}]; "
         "null birth_date is not checked",
         persons.filter(age.is_not_null() & ((age < low) | (age > high)))),
        ("end_after_followup",
         "no event lasts beyond the end of follow-up",
         "events.end_time > persons.followup_end",
         with_end.filter(pl.col("end_time") > pl.col("followup_end"))),
        ("after_absorbing",
         "nothing happens after entering an absorbing state (death included)",
         f"an event with time later than the person's first absorbing state event "
         f"(absorbing: {absorbing_text})",
         after_absorbing.filter(pl.col("time") > pl.col("absorbed_time"))),
        ("path_after_absorbing",
         "a state path stops at its first absorbing state",
         f"a 'state:' event after (in row order) the person's first absorbing state event "
         f"(absorbing: {absorbing_text})",
         after_absorbing.filter(pl.col("code").str.starts_with(STATE_PREFIX)
                                & (pl.col("row") > pl.col("absorbed_row")))),
        ("exit_without_absorbing_state",
         "persons whose exit is death or absorbed end in an absorbing state at followup_end",
         f"exit in {list(ABSORBED_EXITS)} but the last 'state:' event is not an absorbing "
         f"state at time followup_end (absorbing: {absorbing_text})",
         ends.filter(pl.col("exit").is_in(ABSORBED_EXITS)
                     & (~pl.col("last_state").is_in(list(absorbing)).fill_null(False)
                        | (pl.col("last_time") != pl.col("followup_end")).fill_null(True)))),
        ("absorbing_without_exit",
         "persons who enter an absorbing state have exit death or absorbed",
         f"a person with an absorbing state event whose exit is not in {list(ABSORBED_EXITS)} "
         f"(absorbing: {absorbing_text})",
         ends.join(absorbed, on="person_id").filter(~pl.col("exit").is_in(ABSORBED_EXITS))),
    ]
    return _data_model_results(cohort) + [
        _result(name, description, rule, bad.get_column("person_id"))
        for name, description, rule, bad in checks
    ]


def failed(results: Iterable[IntegrityResult]) -> list[IntegrityResult]:
    """The results whose rule did not hold."""
    return [r for r in results if not r.passed]


def as_checks(results: Iterable[IntegrityResult]) -> list[Check]:
    """One judged check per rule of the synthetic cohort: its persons at fault must number 0."""
    return [judge("integrity", r.name, "synthetic", float(r.n_persons), 0.0,
                  rule=r.description, details=r.to_dict()) for r in results]


def combine(parts: Iterable[list[IntegrityResult]]) -> list[IntegrityResult]:
    """The results of disjoint parts of one cohort (blocks of whole persons) as one list:
    persons added up, the first persons shown taken in part order."""
    parts = list(parts)
    combined = []
    for results in zip(*parts, strict=True):
        first = results[0]
        ids = [i for r in results for i in r.first_person_ids][:SHOWN_IDS]
        n = sum(r.n_persons for r in results)
        combined.append(IntegrityResult(first.name, first.description, n == 0, n, ids,
                                        first.rule))
    return combined
