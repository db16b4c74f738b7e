"""Mechanisms of the private fit: Gaussian noise on bounded sums, and noisy histograms on
data-independent grids made consistent, from which ranges and quantiles are read.

- :meth:`Mechanisms.gaussian`: the Gaussian mechanism (Dwork and Roth 2014, "The algorithmic
  foundations of differential privacy", App. A) with the sd the accountant assigns.
- :func:`simplex_projection`: noisy counts of cells whose total is known made non-negative and
  summing to it, by Euclidean projection onto the simplex (Duchi et al. 2008, "Efficient
  projections onto the l1-ball", ICML): empty cells' noise is cut away by one common
  threshold instead of piling up as positive mass, and the total stays exact (the consistency
  step of Hay et al. 2010, "Boosting the accuracy of differentially private histograms through
  consistency", VLDB).
- :func:`release_ranges`: bounds of a quantity with no public range, from a noisy histogram
  on a fixed grid of octaves (either sign): the run of cells around the largest count whose
  neighbours clear the noise, then narrowed to quarter-octaves by a second release. A run,
  not quantiles of the projected counts: the few empty cells whose noise clears the
  projection's threshold hold about a tenth of the mass at epsilon 1 (measured on Rossi's
  432 persons) and would set the range anywhere on the grid; nor the cells significant at a
  Bonferroni 1%: with several covariates one far cell's noise is significant often enough
  (measured: wexp of Rossi put at -2^17). Not the exponential mechanism either (Smith 2011,
  "Privacy-preserving statistical estimation with optimal convergence rates", STOC): on tied
  data it fails badly; on the Rossi cohort (318 of 432 follow-ups tied at 364 days) its 99%
  quantile has a median of about 19,000 days at epsilon 1, because the intervals between
  ties have no width and so no probability.
- :func:`tree_histogram`: a noisy histogram refined only where mass is (each level a release;
  a cell's significant children keep their counts and are split further, the others share
  what is left evenly when that clears the noise, else the significant take it; a cell with
  no significant child stays whole), the adaptive grids of Qardaji, Yang and Li 2013
  ("Differentially private grids for geospatial data", ICDE): fine resolution at an atom (an
  index date shared by everyone) without the noise of a fine grid everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trajectories.cohort import MAX_AGE_YEARS
from trajectories.fit.private.accounting import Accountant

SIGNIFICANCE = 0.01
"""Family-wise chance that a tree histogram takes some empty child cell for a full one."""
RANGE_Z = 2.0
"""Noise sds a range-grid cell next to the range must clear to extend it."""
QUARTER_RESOLUTION = 0.01
"""Ranges are narrowed to quarter-octaves only when that release's noise sd is at most this
share of the persons (else the octaves take its budget)."""
LOG_LOW, LOG_HIGH = -12.0, 22.0
"""log2 of the smallest and largest magnitudes on the range grid (about 2.4e-4 and 4.2e6);
values beyond fall in the end bins."""


class Mechanisms:
    """The Gaussian mechanism over one accountant; ``noise=False`` (tests only) releases the
    exact values but charges the budget all the same; ``trace`` (tests only), a list, gets
    (what, exact value, released value) of every release."""

    def __init__(self, accountant: Accountant, rng: np.random.Generator,
                 noise: bool = True, trace: list | None = None) -> None:
        self.accountant, self.rng, self.noise, self.trace = accountant, rng, noise, trace

    def gaussian(self, what: str, value: np.ndarray, sensitivity: float,
                 share: float) -> tuple[np.ndarray, float]:
        """``value`` plus N(0, sigma^2) noise (sigma from the accountant); returns both."""
        value = np.asarray(value, dtype=float)
        sigma = self.accountant.charge(what, sensitivity, share, int(value.size))
        released = (value + sigma * self.rng.standard_normal(value.shape) if self.noise
                    else value.copy())
        if self.trace is not None:
            self.trace.append((what, value.copy(), released.copy()))
        return released, sigma


def simplex_projection(values: np.ndarray, total: float) -> np.ndarray:
    """The nearest (Euclidean) non-negative vector summing to ``total`` (Duchi et al. 2008)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or total <= 0:
        return np.zeros_like(values)
    ordered = np.sort(values)[::-1]
    excess = np.cumsum(ordered) - total
    index = np.arange(1, values.size + 1)
    last = np.flatnonzero(ordered - excess / index > 0)[-1]
    return np.maximum(values - excess[last] / (last + 1), 0.0)


def octave_edges() -> np.ndarray:
    """Edges of the range grid: -2^22 ... -2^-12, 2^-12 ... 2^22 in octaves, the middle cell
    holding zero (values beyond fall in the end cells)."""
    magnitudes = 2.0 ** np.arange(LOG_LOW, LOG_HIGH + 1)
    return np.concatenate([-magnitudes[::-1], magnitudes])


def grid_cells(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The cell of each value on ``edges`` (values beyond fall in the end cells)."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, edges.size - 2)


def _significant(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Cells whose noisy count clears the noise at a 1% family-wise false-positive rate."""
    z = float(stats.norm.isf(SIGNIFICANCE / max(noisy.size, 1)))
    return noisy > max(z * sigma, 1.0)


def integer_edges() -> np.ndarray:
    """The range grid of whole numbers: cells [-2^22, -2^21), ..., [-2, -1), {-1}, {0}, {1},
    [2, 4), ..., [2^21, 2^22) (no empty cells between -1 and 1)."""
    magnitudes = 2.0 ** np.arange(0, LOG_HIGH + 1)
    return np.concatenate([-magnitudes[::-1], [0.0], magnitudes])


def _run(row: np.ndarray, sigma: float) -> tuple[int, int]:
    """From the largest cell outwards while the next cell clears ``RANGE_Z`` noise sds (an
    empty cell's noise stops it, so far-off empty cells never enter, however large their
    noise: a single one significant at 1% would otherwise set the range). A gap in the data
    ends the range there: numbers on both sides of zero with few near it get the side of
    the largest cell (whole numbers have no empty cells between -1 and 1)."""
    low = high = int(row.argmax())
    while low > 0 and row[low - 1] > RANGE_Z * sigma:
        low -= 1
    while high < row.size - 1 and row[high + 1] > RANGE_Z * sigma:
        high += 1
    return low, high


def _quarters(a: float, b: float, integer: bool) -> np.ndarray | None:
    """Edges of the four log-even quarters of the octave [a, b) (None: not split)."""
    if a * b <= 0 or (integer and min(abs(a), abs(b)) < 4):
        return None
    return np.sort(np.geomspace(abs(a), abs(b), 5) * np.sign(a))


def day_edges() -> np.ndarray:
    """A range grid for durations in days: 0, then octaves 1 ... 2^16 (179 years). Knowing
    that follow-up is positive and shorter than that is public; the fewer cells, the less
    likely an empty cell's noise outgrows the data's largest cell."""
    return np.concatenate([[0.0], 2.0 ** np.arange(0, 17)])


def age_edges() -> np.ndarray:
    """A range grid for ages in years: 0, octaves 1 ... 64, then 120 (the data model's oldest
    age at index: ages are public to lie in [0, 120])."""
    return np.concatenate([[0.0], 2.0 ** np.arange(0, 7), [MAX_AGE_YEARS]])


def release_ranges(mechanisms: Mechanisms, what: str, columns: Sequence[np.ndarray],
                   integer: Sequence[bool], share: float, n: int,
                   grids: Sequence[np.ndarray] | None = None) -> list[tuple[float, float]]:
    """Per column of values, a released half-open range [low, high): the run of cells of the
    range grid (octaves; :func:`integer_edges` for whole numbers) given by :func:`_run`, then,
    when the noise allows (sd at most ``QUARTER_RESOLUTION`` n), each end narrowed to its
    outermost quarter-octave clearing ``RANGE_Z`` noise sds, from a second release. Each
    release is one count per column and person: sensitivity sqrt(2 * columns). ``grids``:
    public grids to use instead (e.g. :func:`day_edges`)."""
    if grids is None:
        grids = [integer_edges() if whole else octave_edges() for whole in integer]
    sensitivity = math.sqrt(2 * len(columns))
    refine = mechanisms.accountant.sigma(sensitivity, share / 2) <= QUARTER_RESOLUTION * n
    counts = [np.bincount(grid_cells(v, e), minlength=e.size - 1).astype(float)
              for v, e in zip(columns, grids, strict=True)]
    noisy, sigma = mechanisms.gaussian(f"{what} (octaves)", np.concatenate(counts),
                                       sensitivity, share / 2 if refine else share)
    rows = np.split(noisy, np.cumsum([c.size for c in counts])[:-1])
    ends = [_run(row, sigma) for row in rows]
    out = [[float(e[low]), float(e[high + 1])] for e, (low, high) in zip(grids, ends,
                                                                          strict=True)]
    if not refine:
        return [tuple(o) for o in out]
    parts, where = [], []
    for c, (values, e, (low, high)) in enumerate(zip(columns, grids, ends, strict=True)):
        for side, cell in (("low", low), ("high", high)):
            sub = _quarters(e[cell], e[cell + 1], integer[c]) if 0 < cell < e.size - 2 else None
            if sub is None or (side == "high" and low == high):
                continue
            inside = grid_cells(values, e) == cell
            parts.append(np.bincount(grid_cells(values[inside], sub), minlength=4)
                         .astype(float))
            where.append((c, side, sub))
    if not parts:
        return [tuple(o) for o in out]
    noisy_q, sigma_q = mechanisms.gaussian(f"{what} (quarters of the end octaves)",
                                           np.concatenate(parts), sensitivity, share / 2)
    for (c, side, sub), hit in zip(where, (noisy_q > RANGE_Z * sigma_q).reshape(-1, 4),
                                   strict=True):
        if not hit.any():
            continue
        if side == "low":
            out[c][0] = float(sub[np.flatnonzero(hit)[0]])
        if side == "high" or ends[c][0] == ends[c][1]:
            out[c][1] = float(sub[np.flatnonzero(hit)[-1] + 1])
    return [tuple(o) for o in out]


@dataclass(frozen=True)
class Leaves:
    """A piecewise-uniform distribution: cells [low, high) with their masses, sorted."""

    low: np.ndarray
    high: np.ndarray
    mass: np.ndarray

    @property
    def total(self) -> float:
        return float(self.mass.sum())

    def _points(self) -> tuple[np.ndarray, np.ndarray]:
        """Corners of the distribution function: (low, mass before), (high, mass through)
        of every cell, normalised."""
        cumulative = np.cumsum(self.mass) / self.total
        before = cumulative - self.mass / self.total
        x = np.column_stack([self.low, self.high]).ravel()
        y = np.column_stack([before, cumulative]).ravel()
        return x, y

    def quantiles(self, levels: np.ndarray) -> np.ndarray:
        """The quantile function (linear within each cell) at ``levels`` in [0, 1] of the
        total mass; a distribution without mass gives the middle of its cells."""
        if self.total <= 0:
            return np.full(np.asarray(levels).shape, (self.low[0] + self.high[-1]) / 2)
        positive = np.flatnonzero(self.mass > 0)
        inner = Leaves(*(a[positive[0]:positive[-1] + 1] for a in (self.low, self.high,
                                                                     self.mass)))
        x, y = inner._points()
        flat = np.diff(y) <= 0
        ends = ~(np.concatenate([[False], flat]) & np.concatenate([flat, [False]]))
        return np.interp(levels, y[ends], x[ends])  # a flat stretch keeps both its ends

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """The distribution function at ``x`` (linear within each cell)."""
        if self.total <= 0:
            return np.full(np.asarray(x).shape, 0.5)
        corners, y = self._points()
        return np.interp(x, corners, y)


def mixture(parts: Sequence[Leaves], weights: Sequence[float] | None = None) -> Leaves:
    """The mixture of piecewise-uniform ``parts`` (``weights``: default their masses), on the
    union of their cell edges, total mass the sum of the weights."""
    weights = [p.total for p in parts] if weights is None else list(weights)
    edges = np.unique(np.concatenate([np.concatenate([p.low, p.high]) for p in parts]))
    if edges.size < 2:
        return Leaves(edges[:1], edges[:1], np.zeros(min(edges.size, 1)))
    cdf = sum(w * p.cdf(edges) for p, w in zip(parts, weights, strict=True) if p.total > 0)
    mass = np.diff(cdf) if np.ndim(cdf) else np.zeros(edges.size - 1)
    return Leaves(edges[:-1], edges[1:], np.clip(mass, 0.0, None))


def tree_histogram(
    mechanisms: Mechanisms, what: str, values: np.ndarray, groups: np.ndarray,
    totals: np.ndarray, low: float, high: float, branching: Sequence[int], share: float,
    sparse: bool = False,
) -> list[Leaves]:
    """Per group, the leaves of a noisy histogram of ``values`` on [low, high] refined level by
    level (``branching[l]`` children per split cell; each level one release of ``share /
    len(branching)``, sensitivity sqrt(2): a person replaced moves one count out of a cell and
    one into another). ``totals``: each group's count (public, or released before); every
    set of children is projected onto its parent's count, so masses always add up.
    ``sparse``: the first level spans a wide public domain (a calendar) that the data fill
    only in places; there a cell keeps mass only when its count is significant
    (:func:`_significant`, else the largest cell takes it all), so that the empty cells'
    noise does not scatter persons across the domain."""
    values = np.clip(np.asarray(values, dtype=float), low, high)
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = len(totals)
    width = (high - low) or 1.0
    position = (values - low) / width  # in [0, 1]
    # Nodes: (group, index at the current resolution) -> mass; start from the roots.
    nodes = {(g, 0): float(max(t, 0.0)) for g, t in enumerate(totals)}
    leaves: list[list[tuple[float, float, float]]] = [[] for _ in range(n_groups)]
    resolution = 1
    for depth, children in enumerate(branching):
        split = sorted(nodes)
        if not split:
            break
        resolution *= children
        cell = np.minimum((position * resolution).astype(np.int64), resolution - 1)
        parent = cell // children
        parents = resolution // children
        codes = np.array([g * parents + p for g, p in split], dtype=np.int64)
        code = groups * parents + parent
        node_index = np.minimum(np.searchsorted(codes, code), codes.size - 1)
        inside = codes[node_index] == code
        flat = node_index[inside] * children + cell[inside] % children
        counts = np.bincount(flat, minlength=len(split) * children).astype(float)
        noisy, sigma = mechanisms.gaussian(f"{what} (level {depth + 1})", counts, np.sqrt(2.0),
                                           share / len(branching))
        noisy = noisy.reshape(len(split), children)
        last = depth == len(branching) - 1
        next_nodes = {}
        for i, (g, p) in enumerate(split):
            row, parent = noisy[i], nodes[(g, p)]
            hit = _significant(row, sigma)
            if not hit.any():
                if not (sparse and depth == 0):  # unresolved: the parent is a leaf
                    leaves[g].append((low + width * p / (resolution // children),
                                      low + width * (p + 1) / (resolution // children),
                                      parent))
                    continue
                hit = np.arange(children) == row.argmax()
            significant = np.where(hit, row, 0.0)
            if sparse and depth == 0 or significant.sum() > parent:
                masses = np.zeros(children)
                masses[hit] = simplex_projection(row[hit], parent)
            else:  # the significant keep their counts; the remainder, if it is more than
                # their noise, is shared evenly by the rest, else it goes to them too
                rest = parent - significant.sum()
                if rest > RANGE_Z * sigma * math.sqrt(hit.sum() + 1) or hit.all():
                    masses = np.where(hit, significant, rest / max((~hit).sum(), 1))
                else:
                    masses = np.where(hit, significant * parent / significant.sum(), 0.0)
            for c, mass in enumerate(masses):
                index = p * children + c
                if hit[c] and not last:
                    next_nodes[(g, index)] = float(mass)
                elif mass > 0:
                    leaves[g].append((low + width * index / resolution,
                                      low + width * (index + 1) / resolution, float(mass)))
        nodes = next_nodes
    out = []
    for cells in leaves:
        cells.sort()
        if not cells:
            cells = [(low, high, 0.0)]
        array = np.array(cells, dtype=float)
        out.append(Leaves(array[:, 0], array[:, 1], array[:, 2]))
    return out
