"""Event processes laid over the state paths: visits, measurements at visits, drug exposures.

They work on *spells* (a person's stay in one state: start, stop) and are vectorised over
spells: counts come from one Poisson draw per spell and times from one uniform per event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajectories.scenario.schema import CategoricalCovariate
from trajectories.simulate.engine import Paths
from trajectories.simulate.plan import Plan
from trajectories.simulate.population import DAYS_PER_YEAR, Population


@dataclass
class Spells:
    """Every state stay of a block, sorted by person then time."""

    person: np.ndarray
    state: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @classmethod
    def from_paths(cls, paths: Paths, initial_state: np.ndarray) -> Spells:
        m = initial_state.size
        person = np.concatenate([np.arange(m), paths.jump_person])
        start = np.concatenate([np.zeros(m), paths.jump_time])
        state = np.concatenate([initial_state, paths.jump_state])
        # Jumps are recorded step by step, so a stable sort by person keeps each path in order.
        order = np.argsort(person, kind="stable")
        person, start, state = person[order], start[order], state[order]
        last = np.append(person[1:] != person[:-1], True)
        stop = np.where(last, paths.end_time[person], np.append(start[1:], np.inf))
        return cls(person=person, state=state, start=start, stop=stop)


@dataclass
class EventArrays:
    """Events of one kind as parallel arrays; ``code`` indexes the block's code table."""

    person: np.ndarray
    time: np.ndarray
    end_time: np.ndarray  # NaN where none
    code: np.ndarray
    value: np.ndarray  # NaN where none


class CodeTable:
    """Interns event codes to small integers while a block is assembled."""

    def __init__(self) -> None:
        self.codes: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, code: str) -> int:
        if code not in self._index:
            self._index[code] = len(self.codes)
            self.codes.append(code)
        return self._index[code]


def _events(person, time, end_time, code, value) -> EventArrays:
    n = person.size
    full = np.full(n, np.nan)
    return EventArrays(
        person=person,
        time=time,
        end_time=full if end_time is None else end_time,
        code=np.broadcast_to(np.asarray(code, dtype=np.int64), (n,)),
        value=full if value is None else value,
    )


def state_events(plan: Plan, spells: Spells, codes: CodeTable) -> EventArrays:
    state_code = np.array([codes(f"state:{name}") for name in plan.state_names])
    return _events(spells.person, spells.start, None, state_code[spells.state], None)


def visit_events(plan, spells, end_time, codes, rng) -> tuple[list[EventArrays], dict]:
    """One list of events per visit type; also each visit's spell index, for measurements."""
    out, visit_spell = [], {}
    duration = spells.stop - spells.start
    for visit in plan.scenario.visits:
        rate = np.array([visit.rates_per_year.get(s, 0.0) for s in plan.state_names])
        counts = rng.poisson(rate[spells.state] * duration / DAYS_PER_YEAR)
        spell = np.repeat(np.arange(spells.person.size), counts)
        time = spells.start[spell] + rng.random(spell.size) * duration[spell]
        if visit.mean_duration_days > 0:
            stay = rng.exponential(visit.mean_duration_days, spell.size)
            ends = np.minimum(time + stay, end_time[spells.person[spell]])
        else:
            ends = time
        out.append(_events(spells.person[spell], time, ends, codes(f"visit:{visit.type}"), None))
        visit_spell[visit.type] = (spell, time)
    return out, visit_spell


def measurement_events(plan, spells, visit_spell, m, codes, rng) -> list[EventArrays]:
    out = []
    for spec in plan.scenario.measurements:
        person_offset = rng.normal(0.0, spec.person_sd, m) if spec.person_sd > 0 else np.zeros(m)
        types = spec.visit_types or list(visit_spell)
        spell = np.concatenate([visit_spell[t][0] for t in types]) if types else np.zeros(0, int)
        time = np.concatenate([visit_spell[t][1] for t in types]) if types else np.zeros(0)
        mean = np.array([spec.mean.get(s, np.nan) for s in plan.state_names])
        trend = np.array([spec.trend_per_year.get(s, 0.0) for s in plan.state_names])
        state = spells.state[spell]
        keep = ~np.isnan(mean[state])
        spell, time, state = spell[keep], time[keep], state[keep]
        person = spells.person[spell]
        value = (
            mean[state]
            + trend[state] * (time - spells.start[spell]) / DAYS_PER_YEAR
            + person_offset[person]
            + spec.noise_sd * rng.standard_normal(spell.size)
        )
        value = np.clip(value, spec.min, spec.max)
        if spec.decimals is not None:
            value = np.round(value, spec.decimals)
        out.append(_events(person, time, None, codes(f"measurement:{spec.name}"), value))
    return out


def drug_events(plan, spells, population: Population, end_time, codes, rng) -> list[EventArrays]:
    out = []
    position = {name: i for i, name in enumerate(plan.state_names)}
    for drug in plan.scenario.drugs:
        starts = np.isin(spells.state, [position[s] for s in drug.on_entry])
        eligible = starts.copy()
        for name, levels in drug.when.items():
            spec = plan.scenario.covariates[name]
            assert isinstance(spec, CategoricalCovariate)
            allowed = np.isin(np.arange(len(spec.levels)),
                              [list(spec.levels).index(level) for level in levels])
            eligible &= allowed[population.categorical[name][spells.person]]
        eligible &= rng.random(spells.person.size) < drug.probability
        spell = np.flatnonzero(eligible)
        if drug.duration_cv > 0:
            shape = 1.0 / drug.duration_cv**2
            length = rng.gamma(shape, drug.duration_days / shape, spell.size)
        else:
            length = np.full(spell.size, drug.duration_days)
        person, time = spells.person[spell], spells.start[spell]
        ends = np.minimum(time + length, end_time[person])
        out.append(_events(person, time, ends, codes(f"drug:{drug.name}"), None))
    return out
