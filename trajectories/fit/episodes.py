"""Recurrent-event episodes in a fit: later episodes share one hazard when each has few events.

An importer numbers recurrent events as states ``infection``, ``infection_2``, ... (see
:mod:`trajectories.io.table.episodes`). The first moves have events enough for their own hazard
and covariate effects; the later ones (``infection_3 -> infection_4`` with 3 events) do not, and
fitted alone they would get a constant hazard without effects, losing the treatment effect on
later events. Their at-risk rows are stacked into one fit instead, shared by every move of the
tail: the hazard of a further event once ``k0`` or more have occurred (the "common baseline
after k0" of Prentice, Williams & Peterson 1981).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MIN_EVENTS_ALONE = 20
"""An episode move with fewer events than this is fitted together with the later ones."""


def episode_chains(moves: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Per recurrent state, its episode moves in order: ``s -> s_2``, ``s_2 -> s_3``, ...

    Only unbroken chains count (``s_3 -> s_4`` needs ``s_2 -> s_3``); a state named like an
    episode without the moves before it is an ordinary state."""
    present = set(moves)
    chains: dict[str, list[tuple[str, str]]] = {}
    for source, target in moves:
        match = re.fullmatch(r"(.+)_2", target)
        if match and match.group(1) == source:
            chain, k = [(source, target)], 2
            while (f"{source}_{k}", f"{source}_{k + 1}") in present:
                chain.append((f"{source}_{k}", f"{source}_{k + 1}"))
                k += 1
            chains[source] = chain
    return chains


def pooled_tails(moves: Sequence[tuple[str, str]],
                 events: Mapping[tuple[str, str], int]) -> list[list[tuple[str, str]]]:
    """The groups of episode moves fitted together: for each chain, the moves from the first
    one with fewer than :data:`MIN_EVENTS_ALONE` events to its end (two moves at least)."""
    groups = []
    for chain in episode_chains(moves).values():
        first = next((i for i, move in enumerate(chain) if events[move] < MIN_EVENTS_ALONE),
                     None)
        if first is not None and len(chain) - first >= 2:
            groups.append(chain[first:])
    return groups
