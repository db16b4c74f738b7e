"""Singling-out, linkability and attribute-inference attacks on a synthetic cohort, after the
framework of Giomi et al. 2023 ("A Unified Framework for Quantifying Privacy Risk in Synthetic
Data", PoPETs; the method of the anonymeter package, rewritten here on numpy).

Each attack is run three ways: the main attack on the train records T (the persons the
generator saw), the same attack on the holdout H (persons it never saw: what anyone learns
about a member of the population from any sample of it) and a baseline that guesses at random.
The risk is the main attack's success beyond the control's, scaled by what was left to win::

    risk = (success_main - success_control) / (1 - success_control)

with success rates from Wilson's score interval (Wilson 1927) and the error of the risk
propagated from both, the interval clipped to [0, 1] (as anonymeter does). The checks judge
the interval of the same risk written as one minus a ratio of failure rates, on the log scale
(:attr:`AttackResult.judged_interval`), which stays valid when the control leaves few targets
unguessed (a secret nearly fixed by the other columns), where the first-order one does not.

- **singling out** (Cohen & Nissim 2020): predicates that match exactly one synthetic record,
  univariate (a column's extreme ``<= min`` / ``>= max``, a value held once, the only null) or
  multivariate (a random synthetic record's values on ``n_columns`` random columns, numbers
  as ``>=`` above the median and ``<=`` at or below it); success if it matches exactly one
  real record. The baseline draws predicates at random from the synthetic values.
- **linkability**: a real record is split into its covariate row and its outcome summary (two
  sources an attacker might hold); its nearest synthetic record on each part (Gower's
  distance) is the same record.
- **attribute inference**: knowing every other column, the attacker takes the secret from the
  nearest synthetic record; a category must be equal, a number within 5% of the true value.

Differences from anonymeter (cross-checked in ``benchmarks/privacy_crosscheck.py``): T and H
are cut to one size beforehand (no size correction is fitted); a singling-out rate counts the
predicates that could be built, not those asked for (anonymeter's falls with the number it
finds: rate 0.14 where ours is 0.94 for a verbatim copy with few unique values); nearest
neighbours tied in distance are drawn at random (the first of them would let row order and
rounding choose); a null against a null is at distance 0; a number's guess is judged relative
to the true value; everything is vectorised and seeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import sqrt

import numpy as np
import polars as pl
from scipy import stats

from trajectories.privacy.metrics import Encoded, encode, gower

N_ATTACKS = 500
"""Targets (or predicates) per attack, as in anonymeter."""
N_COLUMNS = 3
"""Columns of a multivariate singling-out predicate."""
MAX_ATTEMPTS = 100_000
"""Synthetic records tried for multivariate singling-out predicates (anonymeter: 10^7)."""
TOLERANCE = 0.05
"""A numeric secret is guessed when within this share of its true value."""
CONFIDENCE = 0.95
TIE = 1e-9
"""Gower distances closer than this are ties (float rounding of sums of float32 terms)."""
CELLS = 1 << 22
"""Predicate-by-record cells evaluated at once."""
SCREEN = 256
"""Synthetic records a multivariate candidate is first tried on (two matches there: dropped)."""
ATTEMPT_BATCH = 5_000

EQ, NE, LT, GT, LE, GE, ISNA, NOTNA = range(8)
_CATEGORY_OPS = np.array([EQ, NE])
_NUMBER_OPS = np.array([EQ, NE, LT, GT, LE, GE])
_NULL_OPS = np.array([ISNA, NOTNA])


# -- rates and risks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """A success rate with the half-width of its confidence interval."""

    value: float
    error: float


def wilson(successes: float, trials: int, confidence: float = CONFIDENCE) -> Rate:
    """Wilson's score estimate of a success rate and the half-width of its interval."""
    z = float(stats.norm.ppf(0.5 * (1.0 + confidence)))
    if trials <= 0:
        return Rate(float("nan"), float("nan"))
    centre = (successes + 0.5 * z * z) / (trials + z * z)
    spread = successes * (trials - successes) / trials + 0.25 * z * z
    return Rate(centre, z / (trials + z * z) * sqrt(max(spread, 0.0)))


def residual(main: Rate, control: Rate) -> Rate:
    """``(main - control) / (1 - control)`` with its error propagated to first order."""
    left = 1.0 - control.value
    value = (main.value - control.value) / left
    error = sqrt((main.error / abs(left)) ** 2 + (control.error * (main.value - 1.0) / left ** 2)
                 ** 2)
    return Rate(value, error)


@dataclass(frozen=True)
class AttackResult:
    """Successes of one attack on train (main), on holdout (control) and of random guessing
    (baseline), out of ``n_attacks`` each; ``details`` say how it was run."""

    attack: str
    subject: str
    n_attacks: int
    n_success: int
    n_control: int
    n_baseline: int
    confidence: float = CONFIDENCE
    details: dict = field(default_factory=dict)

    @property
    def main_rate(self) -> Rate:
        return wilson(self.n_success, self.n_attacks, self.confidence)

    @property
    def control_rate(self) -> Rate:
        return wilson(self.n_control, self.n_attacks, self.confidence)

    @property
    def baseline_rate(self) -> Rate:
        return wilson(self.n_baseline, self.n_attacks, self.confidence)

    @property
    def risk(self) -> tuple[float, float, float]:
        """The risk and its interval as anonymeter gives them, each clipped to [0, 1]."""
        rate = residual(self.main_rate, self.control_rate)
        return _clip(rate.value), _clip(rate.value - rate.error), _clip(rate.value + rate.error)

    @property
    def judged_interval(self) -> tuple[float, float]:
        """The risk's interval from the ratio of the failure rates, ``risk = 1 - f_main /
        f_control``, on the log scale (Katz et al. 1978, half a count added to every cell), clipped
        to [0, 1]. It agrees with :attr:`risk`'s interval when both attacks leave many targets
        unguessed and stays valid when few are left, where the first-order interval is far too
        narrow (0 against 4 failures in 500 gives [0.27, 1] there, [0, 0.99] here)."""
        z = float(stats.norm.ppf(0.5 * (1.0 + self.confidence)))
        trials = self.n_attacks + 1.0
        main, control = self.n_attacks - self.n_success + 0.5, self.n_attacks - self.n_control + 0.5
        log_ratio = math.log(main / control)
        spread = z * sqrt(1 / main - 1 / trials + 1 / control - 1 / trials)
        return _clip(1 - math.exp(log_ratio + spread)), _clip(1 - math.exp(log_ratio - spread))

    def summary(self) -> dict:
        """Counts, rates and risk, for a report."""
        risk, low, high = self.risk
        return {"n_attacks": self.n_attacks, "n_success_train": self.n_success,
                "n_success_holdout": self.n_control, "n_success_baseline": self.n_baseline,
                "rate_train": self.main_rate.value, "rate_holdout": self.control_rate.value,
                "rate_baseline": self.baseline_rate.value, "risk": risk,
                "risk_interval_anonymeter": [low, high],
                "risk_interval": list(self.judged_interval) if self.n_attacks else [None, None],
                "confidence": self.confidence,
                "no_better_than_random": self.baseline_rate.value >= self.main_rate.value,
                **self.details}


def _clip(x: float) -> float:
    return min(max(x, 0.0), 1.0)


# -- predicates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predicates:
    """Conjunctions of ``(column, operator, value)`` terms, ``k`` per predicate."""

    columns: np.ndarray
    ops: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return self.columns.shape[0]

    def take(self, index: np.ndarray) -> Predicates:
        return Predicates(self.columns[index], self.ops[index], self.values[index])


_COMPARE = {EQ: np.equal, NE: np.not_equal, LT: np.less, GT: np.greater, LE: np.less_equal,
            GE: np.greater_equal}


def _term(values: np.ndarray, ops: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Rows (axis 0) meeting each predicate's term (axis 1): one comparison per operator."""
    kinds = np.unique(ops)
    if len(kinds) == 1:
        op = int(kinds[0])
        if op in (ISNA, NOTNA):
            return np.isnan(values) if op == ISNA else ~np.isnan(values)
        return _COMPARE[op](values, wanted[None])
    hit = np.empty(values.shape, dtype=bool)
    for op in kinds:
        chosen = ops == op
        hit[:, chosen] = _term(values[:, chosen], ops[chosen], wanted[chosen])
    return hit


def matches(data: np.ndarray, predicates: Predicates) -> np.ndarray:
    """How many rows of ``data`` each predicate matches."""
    n, k = data.shape[0], predicates.columns.shape[1] if len(predicates) else 1
    counts = np.zeros(len(predicates), dtype=np.int64)
    step = max(1, CELLS // max(n, 1))
    with np.errstate(invalid="ignore"):
        for start in range(0, len(predicates), step):
            part = slice(start, start + step)
            hit = np.ones((n, len(range(*part.indices(len(predicates))))), dtype=bool)
            for t in range(k):
                hit &= _term(data[:, predicates.columns[part, t]], predicates.ops[part, t],
                             predicates.values[part, t])
            counts[part] = hit.sum(axis=0)
    return counts


def _unique(predicates: Predicates, seen: set[bytes] | None = None) -> np.ndarray:
    """Rows of predicates not seen before (in order); ``seen`` is updated."""
    seen = set() if seen is None else seen
    keep = []
    for i in range(len(predicates)):
        key = (predicates.columns[i].tobytes() + predicates.ops[i].tobytes()
               + np.nan_to_num(predicates.values[i], nan=np.inf).tobytes())
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def univariate_predicates(synthetic: Encoded, n_attacks: int,
                          rng: np.random.Generator) -> Predicates:
    """Up to ``n_attacks`` one-column predicates that single out a synthetic record: extremes
    of numbers, values held once, the only null; tried in a random order."""
    terms: list[tuple[int, int, float]] = []
    for j in range(len(synthetic.columns)):
        column = synthetic.values[:, j]
        null = np.isnan(column)
        if null.sum() == 1:
            terms.append((j, ISNA, np.nan))
        present = column[~null]
        if not synthetic.categorical[j] and present.size:
            terms += [(j, LE, present.min()), (j, GE, present.max())]
        level, count = np.unique(present, return_counts=True)
        terms += [(j, EQ, value) for value in level[count == 1]]
    columns, ops, values = zip(*terms, strict=True) if terms else ((), (), ())
    candidates = Predicates(np.asarray(columns, dtype=np.int64).reshape(-1, 1),
                            np.asarray(ops, dtype=np.int64).reshape(-1, 1),
                            np.asarray(values, dtype=np.float64).reshape(-1, 1))
    candidates = candidates.take(_unique(candidates))
    candidates = candidates.take(rng.permutation(len(candidates)))
    chosen: list[np.ndarray] = []
    found, step = 0, max(4 * n_attacks, 256)
    for start in range(0, len(candidates), step):
        batch = np.arange(start, min(start + step, len(candidates)))
        good = batch[matches(synthetic.values, candidates.take(batch)) == 1]
        chosen.append(good[: n_attacks - found])
        found += len(chosen[-1])
        if found >= n_attacks:
            break
    return candidates.take(np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64))


def _random_columns(n: int, p: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``k`` distinct columns out of ``p``, sorted within each row."""
    return np.sort(np.argsort(rng.random((n, p)), axis=1)[:, :k], axis=1)


def multivariate_predicates(synthetic: Encoded, n_attacks: int, n_columns: int,
                            rng: np.random.Generator,
                            max_attempts: int = MAX_ATTEMPTS) -> tuple[Predicates, int]:
    """Up to ``n_attacks`` distinct ``n_columns``-column predicates, each built from a random
    synthetic record, that single out a synthetic record; and the attempts made. A candidate
    matched by two records of a random subset of SCREEN synthetic ones is dropped unchecked."""
    data, p = synthetic.values, len(synthetic.columns)
    k = min(n_columns, p)
    medians = np.full(p, np.nan)
    for j in np.flatnonzero(~synthetic.categorical):
        present = data[~np.isnan(data[:, j]), j]
        medians[j] = np.median(present) if present.size else np.nan
    screen = data[rng.choice(synthetic.n, min(SCREEN, synthetic.n), replace=False)]
    seen: set[bytes] = set()
    parts: list[Predicates] = []
    found = attempts = 0
    while found < n_attacks and attempts < max_attempts:
        size = min(ATTEMPT_BATCH, max_attempts - attempts)
        attempts += size
        records = rng.integers(0, synthetic.n, size)
        columns = _random_columns(size, p, k, rng)
        values = data[records[:, None], columns]
        with np.errstate(invalid="ignore"):
            above = values > medians[columns]
        ops = np.where(synthetic.categorical[columns], EQ,
                       np.where(np.isnan(values), ISNA, np.where(above, GE, LE)))
        candidates = Predicates(columns, ops, values)
        candidates = candidates.take(np.flatnonzero(matches(screen, candidates) <= 1))
        good = candidates.take(np.flatnonzero(matches(data, candidates) == 1))
        good = good.take(_unique(good, seen)[: n_attacks - found])
        parts.append(good)
        found += len(good)
    return Predicates(*(np.concatenate([getattr(q, name) for q in parts])
                        for name in ("columns", "ops", "values"))), attempts


def random_predicates(synthetic: Encoded, n: int, n_columns: int,
                      rng: np.random.Generator) -> Predicates:
    """The baseline's predicates: random columns, each with a value drawn from the column's
    distinct synthetic values and an operator drawn from those of its type."""
    p = len(synthetic.columns)
    k = min(n_columns, p)
    columns = _random_columns(n, p, k, rng)
    values = np.empty((n, k))
    ops = np.empty((n, k), dtype=np.int64)
    levels = [np.unique(synthetic.values[:, j]) for j in range(p)]  # NaN sorts last, once
    for i in range(n):
        for c in range(k):
            j = columns[i, c]
            value = rng.choice(levels[j])
            pool = (_NULL_OPS if np.isnan(value) else
                    _CATEGORY_OPS if synthetic.categorical[j] else _NUMBER_OPS)
            values[i, c], ops[i, c] = value, rng.choice(pool)
    return Predicates(columns, ops, values)


def singling_out(synthetic: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame,
                 columns: Sequence[str], rng: np.random.Generator, *,
                 mode: str = "multivariate", n_attacks: int = N_ATTACKS,
                 n_columns: int = N_COLUMNS, max_attempts: int = MAX_ATTEMPTS) -> AttackResult:
    """Singling-out risk of ``synthetic`` for ``train`` persons, ``holdout`` the control (one
    size); ``mode`` "univariate" or "multivariate". Duplicate records are dropped first."""
    if mode not in ("univariate", "multivariate"):
        raise ValueError(f"mode must be 'univariate' or 'multivariate', got {mode!r}")
    syn, t, h = encode([f.select(columns).unique(maintain_order=True)
                        for f in (synthetic, train, holdout)], columns, [train, holdout])
    if mode == "univariate":
        queries, attempts, width = univariate_predicates(syn, n_attacks, rng), None, 1
    else:
        queries, attempts = multivariate_predicates(syn, n_attacks, n_columns, rng, max_attempts)
        width = n_columns
    baseline = random_predicates(syn, len(queries), width, rng)
    subject = (mode if mode == "univariate"
               else f"multivariate ({min(width, len(columns))} columns)")
    return AttackResult(
        "singling out", subject, len(queries),
        n_success=int((matches(t.values, queries) == 1).sum()),
        n_control=int((matches(h.values, queries) == 1).sum()),
        n_baseline=int((matches(t.values, baseline) == 1).sum()),
        details={"predicates_requested": n_attacks,
                 **({"attempts": attempts} if attempts is not None else {})})


# -- nearest-neighbour attacks --------------------------------------------------------------------


def _targets(encoded: Encoded, n: int, rng: np.random.Generator) -> Encoded:
    return encoded.rows(np.sort(rng.choice(encoded.n, min(n, encoded.n), replace=False)))


def nearest(distance: np.ndarray, rng: np.random.Generator, k: int = 1) -> np.ndarray:
    """Each row's ``k`` nearest columns, ties (distances equal up to ``TIE``) broken at random:
    taking the first of tied records would let their order, or rounding that depends on the
    hidden column, choose."""
    level = np.rint(np.asarray(distance, dtype=np.float64) / TIE) + 0.5 * rng.random(
        distance.shape)
    if k == 1:
        return level.argmin(axis=1)[:, None]
    return np.argpartition(level, k - 1, axis=1)[:, :k]


def linkability(synthetic: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame,
                columns: tuple[Sequence[str], Sequence[str]], rng: np.random.Generator, *,
                n_attacks: int = N_ATTACKS, n_neighbours: int = 1) -> AttackResult:
    """Linkability risk: a real record's two column sets ``columns`` lead to one synthetic
    record among each one's ``n_neighbours`` nearest (Gower's distance); train main, holdout
    control (one size), random indices the baseline."""
    first, second = list(columns[0]), list(columns[1])
    everything = first + second
    syn, t, h = encode([synthetic, train, holdout], everything, [train, holdout])
    a, b = np.arange(len(first)), np.arange(len(first), len(everything))
    k = min(n_neighbours, syn.n)
    n = min(n_attacks, t.n, h.n)

    def links(targets: Encoded) -> int:
        left, right = (nearest(gower(targets, syn, part, np.float64), rng, k) for part in (a, b))
        return int((left[:, :, None] == right[:, None, :]).any(axis=(1, 2)).sum())

    guesses = [np.stack([rng.choice(syn.n, k, replace=False) for _ in range(n)])
               for _ in range(2)]
    baseline = int((guesses[0][:, :, None] == guesses[1][:, None, :]).any(axis=(1, 2)).sum())
    return AttackResult("linkability", f"{' + '.join(first)} | {' + '.join(second)}", n,
                        n_success=links(_targets(t, n, rng)),
                        n_control=links(_targets(h, n, rng)), n_baseline=baseline,
                        details={"n_neighbours": k})


def _guessed(guess: np.ndarray, truth: np.ndarray, categorical: bool) -> np.ndarray:
    """Whether each guess is right: equal categories; numbers within TOLERANCE of the truth;
    null for null."""
    if categorical:
        return guess == truth
    both_null = np.isnan(guess) & np.isnan(truth)
    with np.errstate(invalid="ignore"):
        return both_null | (np.abs(guess - truth) <= TOLERANCE * np.abs(truth))


def inference(synthetic: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame,
              columns: Sequence[str], secrets: Sequence[str], rng: np.random.Generator, *,
              n_attacks: int = N_ATTACKS) -> list[AttackResult]:
    """Attribute-inference risk for each of ``secrets``: the attacker knows the other
    ``columns`` of a target and takes the secret of the nearest synthetic record; train
    targets main, holdout targets control (one size), a random synthetic record's secret the
    baseline."""
    columns = list(columns)
    syn, t, h = encode([synthetic, train, holdout], columns, [train, holdout])
    n = min(n_attacks, t.n, h.n)
    sides = []
    for encoded in (t, h):
        targets = _targets(encoded, n, rng)
        sides.append((targets, gower(targets, syn, dtype=np.float64) * len(columns)))
    results = []
    for secret in secrets:
        j = columns.index(secret)
        categorical = bool(syn.categorical[j])
        successes = []
        for targets, total in sides:
            others = (total - gower(targets, syn, [j], np.float64)) / max(len(columns) - 1, 1)
            guess = syn.values[nearest(others, rng)[:, 0], j]
            successes.append(int(_guessed(guess, targets.values[:, j], categorical).sum()))
        random_rows = rng.choice(syn.n, n, replace=syn.n < n)
        baseline = int(_guessed(syn.values[random_rows, j], sides[0][0].values[:, j],
                                categorical).sum())
        results.append(AttackResult("attribute inference", secret, n, successes[0],
                                    successes[1], baseline,
                                    details={"kind": "category" if categorical else "number"}))
    return results
