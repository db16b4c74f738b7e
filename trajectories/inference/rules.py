"""Combining rules: one estimate and an honest variance from m synthetic replicates.

An estimate computed on k synthetic persons simulated from a model fitted to n real persons
carries the real data's sampling error (order 1/n) on top of its own (order 1/k); the variance
the analysis reports from the synthetic data alone (order 1/k) misses the first part, so at
k = 10n its confidence interval covers the truth about half the time. These rules put it back:

- ``simple`` (no parameter draws) and ``proper`` (parameters drawn from their sampling
  distribution for each replicate): Raab, Nowok & Dibben (2016), "Practical data synthesis for
  large samples", J. Priv. Confid. 7(3), for any k and n, from the within variance alone, so
  they hold for m = 1 too;
- ``partially_synthetic``: Reiter (2003), "Inference for partially synthetic, public use
  microdata sets", Survey Methodology 29, T_p = ubar + b/m with his degrees of freedom; needs
  m >= 2 for the between-replicate variance b;
- ``fully_synthetic``: Raghunathan, Reiter & Rubin (2003), "Multiple imputation for statistical
  disclosure limitation", J. Off. Stat. 19, T_f = (1 + 1/m) b - ubar, offered behind a guard
  only: at small m it is negative about as often as b falls short of ubar, and never chosen
  on its own;
- ``real``: one real cohort, its own variance (the naive interval is then the interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trajectories.errors import InferenceError

RULES = ("real", "simple", "proper", "partially_synthetic", "fully_synthetic")
"""Names of the combining rules (see the module docstring)."""

DRAWS = ("none", "asymptotic", "bootstrap")
"""How a model's parameters were drawn for each replicate (``replicate.draws`` in a manifest)."""

RULE_FOR_DRAWS = {"none": "simple", "asymptotic": "proper", "bootstrap": "proper"}
"""The rule that fits each way of drawing parameters (Raab, Nowok & Dibben 2016)."""

NEEDS_BETWEEN = ("partially_synthetic", "fully_synthetic")
"""Rules that need the between-replicate variance b, hence m >= 2."""


@dataclass(frozen=True)
class CombinedEstimate:
    """A combined estimate on the analysis' working scale (log HR, log(-log S), days).

    ``variance`` is the rule's total variance, ``ci`` its 1 - alpha interval (Student t with
    ``df`` degrees of freedom; ``df`` is inf for a normal interval); ``naive_ci`` treats the m
    replicates' persons as real (variance ubar / m), the interval the rule corrects;
    ``within`` is ubar, the mean of the replicates' own variances, ``between`` b, the
    variance of their estimates (None for m = 1).
    """

    estimate: float
    variance: float
    ci: tuple[float, float]
    df: float
    naive_ci: tuple[float, float]
    m: int
    rule: str
    within: float
    between: float | None
    alpha: float = 0.05

    @property
    def std_error(self) -> float:
        return math.sqrt(self.variance)


def critical_value(alpha: float, df: float = math.inf) -> float:
    """The two-sided 1 - alpha quantile of Student's t with ``df`` degrees of freedom (normal
    when ``df`` is inf)."""
    if not 0 < alpha < 1:
        raise InferenceError(f"alpha must be between 0 and 1, got {alpha}")
    return float(stats.norm.ppf(1 - alpha / 2) if math.isinf(df) else
                 stats.t.ppf(1 - alpha / 2, df))


def interval(estimate: float, variance: float, alpha: float,
             df: float = math.inf) -> tuple[float, float]:
    """estimate -+ t(df) sqrt(variance)."""
    half = critical_value(alpha, df) * math.sqrt(max(variance, 0.0))
    return estimate - half, estimate + half


def combine(
    estimates: Sequence[float] | np.ndarray,
    variances: Sequence[float] | np.ndarray,
    *,
    rule: str,
    n_reference: int | None = None,
    n_synthetic: float | None = None,
    alpha: float = 0.05,
) -> CombinedEstimate:
    """Combine the m replicates' estimates q_i and variances u_i with ``rule`` (see RULES).

    With qbar and ubar their means, b the sample variance of the q_i, n = ``n_reference`` real
    persons behind the model and k = ``n_synthetic`` persons per replicate:
    simple T = ubar (k/n + 1/m), proper T = ubar (k/n + (1 + k/n)/m) (Raab, Nowok & Dibben
    2016; both normal); partially synthetic T = ubar k/n + b/m with df (m - 1)(1 + 1/r)^2,
    r = (b/m) / (ubar k/n), which is Reiter's (2003) T_p = ubar + b/m at k = n; fully
    synthetic T_f = (1 + 1/m) b - ubar with df (m - 1)(1 - ubar / ((1 + 1/m) b))^2
    (Raghunathan, Reiter & Rubin 2003), refused when it is not positive; it estimates the
    variance only when parameters were drawn (under simple synthesis E[b] is ubar). ``real``:
    m = 1, T = u.
    """
    q = np.asarray(estimates, dtype=np.float64).ravel()
    u = np.asarray(variances, dtype=np.float64).ravel()
    m = q.size
    if rule not in RULES:
        raise InferenceError(f"unknown combining rule {rule!r}; choose one of {list(RULES)}")
    if m == 0 or u.size != m:
        raise InferenceError(f"combine: {m} estimate(s) but {u.size} variance(s); give one "
                             "of each per replicate")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(u)) and np.all(u > 0)):
        raise InferenceError("combine: estimates must be finite and variances finite and > 0, "
                             f"got {q.tolist()} and {u.tolist()}")
    qbar, ubar = float(q.mean()), float(u.mean())
    b = float(q.var(ddof=1)) if m >= 2 else None
    naive = interval(qbar, ubar / m, alpha)
    if rule == "real":
        if m != 1:
            raise InferenceError(f"rule 'real' analyses one real cohort, got m = {m} estimates")
        return CombinedEstimate(qbar, ubar, naive, math.inf, naive, 1, rule, ubar, None, alpha)
    if rule in NEEDS_BETWEEN and b is None:
        raise InferenceError(f"rule {rule!r} needs m >= 2 replicates (it estimates the "
                             "between-replicate variance b); got m = 1")
    ratio = _ratio(n_reference, n_synthetic)
    df = math.inf
    if rule == "simple":
        total = ubar * (ratio + 1 / m)
    elif rule == "proper":
        total = ubar * (ratio + (1 + ratio) / m)
    elif rule == "partially_synthetic":
        assert b is not None
        within = ubar * ratio
        total = within + b / m
        df = math.inf if b == 0 else (m - 1) * (1 + within / (b / m)) ** 2
    else:
        assert b is not None
        total = (1 + 1 / m) * b - ubar
        if not total > 0:
            raise InferenceError(
                f"fully synthetic variance T_f = (1 + 1/m) b - ubar = {total:.3g} is not "
                f"positive (m = {m}, b = {b:.3g}, ubar = {ubar:.3g}): with few replicates b "
                "often falls below ubar (Raghunathan, Reiter & Rubin 2003); use rule 'proper', "
                "which needs no b"
            )
        df = (m - 1) * (1 - ubar / ((1 + 1 / m) * b)) ** 2
    return CombinedEstimate(qbar, total, interval(qbar, total, alpha, df), df, naive, m, rule,
                            ubar, b, alpha)


def _ratio(n_reference: int | None, n_synthetic: float | None) -> float:
    """k / n, checked."""
    if n_reference is None or n_synthetic is None:
        raise InferenceError("synthetic combining rules need n_reference (real persons behind "
                             "the model) and n_synthetic (persons per replicate)")
    if not (n_reference > 0 and n_synthetic > 0):
        raise InferenceError(f"n_reference and n_synthetic must be > 0, got {n_reference} and "
                             f"{n_synthetic}")
    return float(n_synthetic) / float(n_reference)
