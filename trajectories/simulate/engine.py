"""The vectorised multi-state jump loop.

All persons still in a transient state move together: each draws one exponential per competing
transition, inverts that transition's cumulative hazard from the time already on its clock
(time since index for clock-forward, zero for clock-reset), keeps the earliest, and jumps unless
censoring comes first. The Python loop runs over jumps and states, never over persons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trajectories.errors import TrajectoriesError
from trajectories.simulate.plan import Plan

MAX_JUMPS_PER_PERSON = 10_000


@dataclass
class Paths:
    """State paths of a block: jumps in time order per person, and how each path ended."""

    jump_person: np.ndarray  # local person index of each jump
    jump_time: np.ndarray
    jump_state: np.ndarray  # state entered
    final_state: np.ndarray  # per person
    end_time: np.ndarray  # per person: absorption or censoring time


def _earliest_exit(plan: Plan, state: int, persons, time, multipliers, rng):
    """Earliest competing exit time and target for ``persons`` who entered ``state`` at ``time``."""
    entry = time[persons]
    best_time = np.full(persons.size, np.inf)
    best_target = np.full(persons.size, -1, dtype=np.int64)
    for transition in plan.outgoing[state]:
        increment = rng.standard_exponential(persons.size) / multipliers[persons, transition.index]
        hazard = transition.spec.hazard
        if transition.clock_reset:
            candidate = entry + hazard.exit_clock(np.zeros_like(entry), increment)
        else:
            candidate = hazard.exit_clock(entry, increment)
        earlier = candidate < best_time
        best_time = np.where(earlier, candidate, best_time)
        best_target = np.where(earlier, transition.target, best_target)
    return best_time, best_target


def run_paths(
    plan: Plan,
    initial_state: np.ndarray,
    censor_time: np.ndarray,
    multipliers: np.ndarray,
    rng: np.random.Generator,
) -> Paths:
    """Simulate every person's path from ``initial_state`` at time 0 until absorbed or censored."""
    state = initial_state.astype(np.int64).copy()
    time = np.zeros(state.size)
    movable = [s for s, out in enumerate(plan.outgoing) if out]
    active = np.flatnonzero(~plan.absorbing[state])
    jumps_person, jumps_time, jumps_state = [], [], []
    for _ in range(MAX_JUMPS_PER_PERSON):
        current = state[active]
        next_time = np.full(active.size, np.inf)
        next_state = np.full(active.size, -1, dtype=np.int64)
        for s in movable:
            selected = np.flatnonzero(current == s)
            if selected.size:
                next_time[selected], next_state[selected] = _earliest_exit(
                    plan, s, active[selected], time, multipliers, rng
                )
        moves = next_time < censor_time[active]
        movers = active[moves]
        time[movers] = next_time[moves]
        state[movers] = next_state[moves]
        jumps_person.append(movers)
        jumps_time.append(next_time[moves])
        jumps_state.append(next_state[moves])
        active = movers[~plan.absorbing[state[movers]]]
        if active.size == 0:
            break
    else:
        raise TrajectoriesError(
            f"scenario {plan.scenario.name!r}: some persons made more than "
            f"{MAX_JUMPS_PER_PERSON} transitions; check cycles with very high hazards"
        )
    absorbed = plan.absorbing[state]
    return Paths(
        jump_person=np.concatenate(jumps_person) if jumps_person else np.zeros(0, np.int64),
        jump_time=np.concatenate(jumps_time) if jumps_time else np.zeros(0),
        jump_state=np.concatenate(jumps_state) if jumps_state else np.zeros(0, np.int64),
        final_state=state,
        end_time=np.where(absorbed, time, censor_time),
    )
