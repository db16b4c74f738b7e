"""Fixed blocks of persons, each with its own random stream.

The cohort of ``n`` persons is cut into blocks of ``block_size`` consecutive persons; block ``b``
draws from ``SeedSequence(seed, spawn_key=(b,))`` (the b-th child of ``SeedSequence(seed)``).
Results therefore do not depend on which blocks are computed together, in what order, or where.
"""

from __future__ import annotations

import numpy as np

from trajectories.errors import TrajectoriesError

DEFAULT_BLOCK_SIZE = 100_000


def block_count(n: int, block_size: int) -> int:
    """How many blocks ``n`` persons make."""
    return -(-n // block_size)


def block_bounds(block: int, n: int, block_size: int) -> tuple[int, int]:
    """Global person indices [start, stop) of ``block``."""
    start = block * block_size
    if not 0 <= start < n:
        raise TrajectoriesError(
            f"block {block} is outside a cohort of {n} persons "
            f"({block_count(n, block_size)} blocks of {block_size})"
        )
    return start, min(start + block_size, n)


def block_rng(seed: int, block: int) -> np.random.Generator:
    """The random stream of ``block`` for ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
