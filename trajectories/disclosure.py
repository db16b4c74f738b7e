"""Small-cell rules of statistical disclosure control, shared by every artefact fitted from a
reference cohort (the multi-state model, the sequence model's vocabulary).

No released figure may rest on fewer than ``MIN_CELL`` persons: the common rule of health
statistics offices (counts of 1-10 suppressed; e.g. CMS's cell-size suppression policy). Ranges
end at the ``MIN_CELL``-th smallest and largest value instead of the extremes, which belong to
one person each, and levels held by fewer persons are merged.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MIN_CELL = 11
"""Fewest persons behind any released count, level, range end or site."""

OTHER_LEVEL = "other"
"""The level that rare categorical levels are merged into."""


def robust_range(values: np.ndarray, min_cell: int = MIN_CELL) -> tuple[float, float]:
    """The ``min_cell``-th smallest and largest of ``values``: a range whose ends are each
    shared by at least ``min_cell`` persons' values or beyond. Fewer than ``2 * min_cell``
    values: the median twice (no end can be released)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    if ordered.size < 2 * min_cell:
        middle = float(np.median(ordered)) if ordered.size else 0.0
        return middle, middle
    return float(ordered[min_cell - 1]), float(ordered[-min_cell])


def merge_rare_levels(counts: Mapping[str, int], min_cell: int = MIN_CELL) -> dict[str, str]:
    """Level -> the level it is released as: levels of at least ``min_cell`` persons keep their
    name; rarer ones are merged into ``other`` when together they reach ``min_cell`` (and
    ``other`` is not already a level), else into the most frequent level."""
    if not counts:
        return {}
    rare = [lv for lv, n in counts.items() if n < min_cell]
    mapping = {lv: lv for lv in counts}
    if not rare:
        return mapping
    common = [lv for lv in counts if lv not in rare]
    pooled = sum(counts[lv] for lv in rare)
    if (pooled >= min_cell and OTHER_LEVEL not in counts) or not common:
        target = OTHER_LEVEL if OTHER_LEVEL not in counts or not common else max(
            common, key=lambda lv: (counts[lv], lv))
    else:
        target = max(common, key=lambda lv: (counts[lv], lv))
    for lv in rare:
        mapping[lv] = target
    return mapping


def suppress_small_counts(counts: np.ndarray, shares: np.ndarray, total: float,
                          min_cell: int = MIN_CELL) -> np.ndarray:
    """``counts`` with every cell below ``min_cell`` replaced by its expected count
    ``shares * total`` under a larger group's shares (a site's cells under the pooled ones)."""
    counts = np.asarray(counts, dtype=float)
    return np.where(counts < min_cell, np.asarray(shares, dtype=float) * total, counts)
