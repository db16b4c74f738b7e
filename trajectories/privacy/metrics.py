"""Record-level privacy measures of a synthetic cohort S against its train cohort T (the real
persons the generator was fitted on) and a holdout H (real persons it never saw).

H is the control throughout: whatever S shares with T only as often as with H is what any
sample of the same population would share (Platzer & Reutterer 2021, "Holdout-based fidelity
and privacy assessment of mixed-type synthetic data"). T and H are cut to one size first (the
larger subsampled, seeded), so chance is the same for both; the sampling noise of each measure
is its spread when the train/holdout labels of those real persons are shuffled with S held
fixed (a permutation null: under it, S is no closer to T than to any other draw).

- exact copies: the share of synthetic covariate rows (and complete records) equal to some T
  row, beside the chance share equal to some H row;
- distance to closest record (DCR) with Gower's distance (Gower 1971): numbers scaled by
  their range over T and H (a difference capped at 1), categories 0 if equal else 1, a null
  against a value 1 and against a null 0; the share of S closer to T than to H (ties count
  1/2; 0.5 when S knows T no better than H), median DCRs, and the nearest-neighbour distance
  ratio (NNDR: nearest over second-nearest distance);
- membership inference: members T against non-members H scored by minus their distance to
  the nearest synthetic record; its AUC with DeLong's standard error (DeLong, DeLong &
  Clarke-Pearson 1988, with the midrank algorithm of Sun & Xu 2014).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

SYNTHETIC_CAP = 5_000
"""Synthetic persons the distance measures and attacks read (a seeded sample above that)."""
REFERENCE_CAP = 5_000
"""Train and holdout persons each, at most (the distances are S x (T + H) cells)."""
PERMUTATIONS = 200
"""Train/holdout label shuffles behind each standard error."""
NEIGHBOURS = 16
"""Nearest real records kept per synthetic one, from which the shuffled DCR shares are read."""
CHUNK_CELLS = 1 << 22
"""Distance cells (float32) computed at once."""
NULL_LEVEL = "\x00null"


# -- encoding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """Records as one float matrix: numbers as they are (NaN for null), categories as integer
    codes shared by every encoded frame (null a code of its own); ``scale``: each numeric
    column's range over the real persons (1 where it is 0 and for categories)."""

    values: np.ndarray
    categorical: np.ndarray
    scale: np.ndarray
    columns: list[str]

    @property
    def n(self) -> int:
        return self.values.shape[0]

    def rows(self, index: np.ndarray | slice) -> Encoded:
        return Encoded(self.values[index], self.categorical, self.scale, self.columns)


def encode(frames: Sequence[pl.DataFrame], columns: Sequence[str],
           reference: Sequence[pl.DataFrame]) -> list[Encoded]:
    """``frames`` on ``columns`` with shared category codes and ranges from ``reference``
    (the real persons)."""
    columns = list(columns)
    sizes = [f.height for f in frames]
    matrix = np.empty((sum(sizes), len(columns)), dtype=np.float64)
    categorical = np.zeros(len(columns), dtype=bool)
    scale = np.ones(len(columns), dtype=np.float64)
    for j, name in enumerate(columns):
        stacked = pl.concat([f.get_column(name) for f in frames])
        if stacked.dtype == pl.String:
            categorical[j] = True
            _, codes = np.unique(stacked.fill_null(NULL_LEVEL).to_numpy(), return_inverse=True)
            matrix[:, j] = codes
        else:
            matrix[:, j] = stacked.cast(pl.Float64).to_numpy()
            real = pl.concat([f.get_column(name) for f in reference]).cast(pl.Float64)
            low, high = real.min(), real.max()
            if low is not None and high is not None and high > low:
                scale[j] = float(high) - float(low)
    bounds = np.cumsum([0, *sizes])
    return [Encoded(matrix[a:b], categorical, scale, columns)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# -- Gower's distance -----------------------------------------------------------------------------


def _column_distance(a: np.ndarray, b: np.ndarray, categorical: bool, scale: float,
                     out: np.ndarray | None = None) -> np.ndarray:
    """One column's Gower terms between every value of ``a`` and of ``b`` (float32)."""
    x, y = a.astype(np.float32)[:, None], b.astype(np.float32)[None, :]
    if categorical:
        return (np.not_equal(x, y, out=out) if out is not None
                else np.not_equal(x, y).astype(np.float32))
    result = np.subtract(x, y, out=out)
    np.abs(result, out=result)
    result *= np.float32(1.0 / scale)
    np.minimum(result, np.float32(1.0), out=result)
    x_null, y_null = np.isnan(x), np.isnan(y)
    if x_null.any() or y_null.any():
        np.nan_to_num(result, copy=False, nan=1.0)
        result[x_null & y_null] = 0.0
    return result


def gower(a: Encoded, b: Encoded, columns: Sequence[int] | None = None,
          dtype: type = np.float32) -> np.ndarray:
    """Gower distances (mean of the column terms over ``columns``, default all) between every
    row of ``a`` and of ``b``: an ``a.n`` x ``b.n`` matrix of float32 terms summed in
    ``dtype``."""
    columns = range(len(a.columns)) if columns is None else columns
    total = np.zeros((a.n, b.n), dtype=dtype)
    scratch = np.empty((a.n, b.n), dtype=np.float32)
    for j in columns:
        total += _column_distance(a.values[:, j], b.values[:, j], bool(a.categorical[j]),
                                  float(a.scale[j]), out=scratch)
    return total / dtype(max(len(columns), 1))


def gower_distances(left: pl.DataFrame, right: pl.DataFrame, columns: Sequence[str] | None = None,
                    reference: Sequence[pl.DataFrame] | None = None) -> np.ndarray:
    """Gower's distance between every row of ``left`` and of ``right`` on ``columns`` (default
    all of ``left``); numeric ranges from ``reference`` (default: both frames)."""
    columns = list(left.columns if columns is None else columns)
    a, b = encode([left, right], columns, reference or [left, right])
    return gower(a, b).astype(np.float64)


# -- samples --------------------------------------------------------------------------------------


def capped(frame: pl.DataFrame, cap: int, rng: np.random.Generator) -> pl.DataFrame:
    """``frame``, or ``cap`` of its rows drawn at random (in their order)."""
    if frame.height <= cap:
        return frame
    return frame[np.sort(rng.choice(frame.height, cap, replace=False))]


def equal_sizes(train: pl.DataFrame, holdout: pl.DataFrame, rng: np.random.Generator,
                cap: int = REFERENCE_CAP) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train and holdout cut to one size, ``min(|T|, |H|, cap)``, by seeded subsampling."""
    size = min(train.height, holdout.height, cap)
    return capped(train, size, rng), capped(holdout, size, rng)


def _permuted_labels(size: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """``permutations`` shuffles of ``size`` train labels (True) then ``size`` holdout ones."""
    labels = np.repeat([True, False], size)
    return np.stack([rng.permutation(labels) for _ in range(permutations)])


# -- exact copies ---------------------------------------------------------------------------------


def _row_keys(frames: Sequence[pl.DataFrame], columns: Sequence[str]) -> list[np.ndarray]:
    """An integer per row, equal for equal rows across ``frames`` (nulls equal nulls; rows
    hashed to 64 bits, so a false match is a chance below 1e-9 for a million rows)."""
    stacked = pl.concat([f.select(columns) for f in frames])
    _, keys = np.unique(stacked.hash_rows(seed=0).to_numpy(), return_inverse=True)
    bounds = np.cumsum([0, *[f.height for f in frames]])
    return [keys[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def copy_rate(synthetic: pl.DataFrame, reference: pl.DataFrame, columns: Sequence[str]) -> float:
    """Share of synthetic rows equal on ``columns`` to some reference row."""
    if synthetic.height == 0:
        return float("nan")
    s, r = _row_keys([synthetic, reference], columns)
    return float(np.isin(s, r).mean())


@dataclass(frozen=True)
class CopyTest:
    """Exact copies on some columns: the shares of synthetic rows equal to a train row and to
    a holdout row (chance), their difference and its standard error under shuffled labels."""

    train_rate: float
    holdout_rate: float
    standard_error: float
    n_synthetic: int
    n_reference: int

    @property
    def excess(self) -> float:
        return self.train_rate - self.holdout_rate


def copy_test(synthetic: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame,
              columns: Sequence[str], rng: np.random.Generator,
              permutations: int = PERMUTATIONS) -> CopyTest:
    """Exact-copy rates of ``synthetic`` against ``train`` and ``holdout`` (of one size) on
    ``columns``, with the permutation standard error of their difference."""
    if train.height != holdout.height:
        raise ValueError("train and holdout must be of one size (see equal_sizes)")
    s, t, h = _row_keys([synthetic, train, holdout], columns)
    n_keys = int(max(s.max(initial=-1), t.max(initial=-1), h.max(initial=-1))) + 1
    count = np.bincount(s, minlength=n_keys)

    def rate(keys: np.ndarray) -> float:
        present = np.zeros(n_keys, dtype=bool)
        present[keys] = True
        return int(count[present].sum()) / max(len(s), 1)

    pool = np.concatenate([t, h])
    shuffled = [rate(pool[labels]) - rate(pool[~labels])
                for labels in _permuted_labels(len(t), permutations, rng)]
    return CopyTest(rate(t), rate(h), float(np.std(shuffled, ddof=1)), len(s), len(t))


# -- distances to closest records -----------------------------------------------------------------


@dataclass(frozen=True)
class DistanceTest:
    """Distances between synthetic and real records (Gower's, on the complete record).

    ``share_closer_to_train``: synthetic persons nearer a train record than any holdout one
    (ties 1/2), with its permutation standard error; median distance to the closest train and
    holdout records; median NNDR within train and within holdout; the membership-inference
    AUC (train members against holdout non-members, scored by minus the distance to the
    nearest synthetic record) and its DeLong standard error."""

    share_closer_to_train: float
    share_standard_error: float
    median_dcr_train: float
    median_dcr_holdout: float
    median_nndr_train: float
    median_nndr_holdout: float
    membership_auc: float
    auc_standard_error: float
    n_synthetic: int
    n_reference: int

    def auc_interval(self, z: float = 1.959963984540054) -> tuple[float, float]:
        """The AUC's normal confidence interval (95% by default), within [0, 1]."""
        half = z * self.auc_standard_error
        return max(0.0, self.membership_auc - half), min(1.0, self.membership_auc + half)


def _nndr(two_nearest: np.ndarray) -> np.ndarray:
    """Nearest over second-nearest distance; 1 where both are 0 (two identical records)."""
    first, second = two_nearest[:, 0], two_nearest[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(second > 0, first / np.where(second > 0, second, 1.0), 1.0)


def membership_auc(member_distances: np.ndarray,
                   nonmember_distances: np.ndarray) -> tuple[float, float]:
    """AUC of telling members from non-members by a score of minus their distance to the
    nearest synthetic record (ties count 1/2), and DeLong's standard error of it."""
    positive = -np.asarray(member_distances, dtype=np.float64)
    negative = -np.asarray(nonmember_distances, dtype=np.float64)
    m, n = len(positive), len(negative)
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    overall = stats.rankdata(np.concatenate([positive, negative]))
    above = (overall[:m] - stats.rankdata(positive)) / n   # share of negatives each one beats
    below = 1.0 - (overall[m:] - stats.rankdata(negative)) / m
    auc = float(above.mean())
    variance = (above.var(ddof=1) / m if m > 1 else 0.0) + (below.var(ddof=1) / n if n > 1
                                                             else 0.0)
    return auc, float(np.sqrt(variance))


def distance_test(synthetic: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame,
                  columns: Sequence[str], rng: np.random.Generator,
                  permutations: int = PERMUTATIONS) -> DistanceTest:
    """DCR, NNDR and membership-inference measures of ``synthetic`` against ``train`` and
    ``holdout`` (of one size, at least 2 each) on ``columns``, computed in chunks of synthetic
    rows against all real ones."""
    size = train.height
    if holdout.height != size or size < 2:
        raise ValueError("train and holdout must be of one size of at least 2 (equal_sizes)")
    syn, pool = encode([synthetic, pl.concat([train, holdout])], columns, [train, holdout])
    k = min(NEIGHBOURS, 2 * size)
    near_train, near_holdout = np.empty((syn.n, 2)), np.empty((syn.n, 2))
    top_index, top_distance = np.empty((syn.n, k), dtype=np.int64), np.empty((syn.n, k))
    to_synthetic = np.full(pool.n, np.inf)
    step = max(1, CHUNK_CELLS // pool.n)
    for start in range(0, syn.n, step):
        rows = slice(start, min(start + step, syn.n))
        block = gower(syn.rows(rows), pool)
        near_train[rows] = np.partition(block[:, :size], 1, axis=1)[:, :2]
        near_holdout[rows] = np.partition(block[:, size:], 1, axis=1)[:, :2]
        to_synthetic = np.minimum(to_synthetic, block.min(axis=0))
        nearest = np.argpartition(block, k - 1, axis=1)[:, :k]
        distance = np.take_along_axis(block, nearest, axis=1)
        order = np.argsort(distance, axis=1, kind="stable")
        top_index[rows] = np.take_along_axis(nearest, order, axis=1)
        top_distance[rows] = np.take_along_axis(distance, order, axis=1)
    d_train, d_holdout = near_train.min(axis=1), near_holdout.min(axis=1)
    observed = _closer_share(d_train, d_holdout)
    shuffled = [_shuffled_share(top_index, top_distance, labels)
                for labels in _permuted_labels(size, permutations, rng)]
    auc, auc_se = membership_auc(to_synthetic[:size], to_synthetic[size:])
    return DistanceTest(
        share_closer_to_train=observed, share_standard_error=float(np.std(shuffled, ddof=1)),
        median_dcr_train=float(np.median(d_train)), median_dcr_holdout=float(np.median(d_holdout)),
        median_nndr_train=float(np.median(_nndr(np.sort(near_train, axis=1)))),
        median_nndr_holdout=float(np.median(_nndr(np.sort(near_holdout, axis=1)))),
        membership_auc=auc, auc_standard_error=auc_se, n_synthetic=syn.n, n_reference=size)


def _closer_share(d_train: np.ndarray, d_holdout: np.ndarray) -> float:
    return float(np.mean((d_train < d_holdout) + 0.5 * (d_train == d_holdout)))


def _shuffled_share(top_index: np.ndarray, top_distance: np.ndarray, labels: np.ndarray) -> float:
    """The closer-to-train share had the real persons' train/holdout labels been ``labels``,
    read from each synthetic record's nearest real ones (a side absent from them is farther
    than all of them)."""
    is_train = labels[top_index]
    rows = np.arange(len(top_index))
    d_train = np.where(is_train.any(axis=1), top_distance[rows, is_train.argmax(axis=1)], np.inf)
    d_holdout = np.where((~is_train).any(axis=1),
                         top_distance[rows, (~is_train).argmax(axis=1)], np.inf)
    return _closer_share(d_train, d_holdout)
