"""Private covariate effects of the transition hazards: log hazard ratios from released
time-weighted moments of the covariates and released covariate sums over events.

Estimator (see :mod:`.rates` for the whole fit): the profile Poisson likelihood of a move,
A.beta - sum_j D_j K_j(beta), with K_j(beta) = log E_j exp(x.beta) over those at risk in
piece j expanded to third order in the at-risk cumulants of x (the cumulant expansion of a
log moment-generating function; e.g. McCullagh 1987, "Tensor methods in statistics", ch. 2),
solved by Newton steps from the second-order solution, the third cumulants shrunk by their
noise first. Per state the fit uses the window of first bins
that minimises the predicted variance (:func:`window_variance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trajectories.fit.private.accounting import Accountant, Budget
from trajectories.fit.private.data import Spells, binned_sums, symmetric
from trajectories.fit.private.mechanisms import Mechanisms

FINE_BINS = 32
"""Bins of [0, horizon] on each state's clock (the grid of every hazard release)."""
MAX_PREDICTED_SD = 0.5
"""Covariates are fitted only when their sd on a log HR per unit of scaled x is predicted
below this (an at-risk variance of ``ASSUMED_VARIANCE`` assumed)."""
ASSUMED_VARIANCE = 0.25
BETA_BOX = 3.0
"""Largest |log HR| per unit of scaled x fitted (the third-order expansion's reach)."""
MOMENT_SHARES = (0.45, 0.35, 0.20)
"""The covariate moments' budget for orders 1, 2, 3: the first sets the score, the second the
information, the third only corrects the expansion."""
EXPONENT_CAP = 20.0


@dataclass(frozen=True)
class Design:
    """Covariates scaled to [-1, 1] (numbers) or one-hot (levels, sites): ``x`` per person,
    the (covariate, level) of each column, the one-hot group of each column (-1: a number),
    ``scale`` (beta per original unit = beta / scale), ``offset`` (the scenario's zero of each
    column on the design's scale: centre - midpoint of a number, -1/levels of a dummy) and
    ``q``, the bound on ||x||^2."""

    x: np.ndarray
    columns: list[tuple[str, str | None]]
    groups: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    q: float


@dataclass
class Move:
    """A kept move: its states, step 1's noisy total, its pieces (fine bins) and the
    reconciled noisy events per piece with their variance."""

    source: int
    target: int
    events: float  # step 1's noisy total
    pieces: list[np.ndarray]  # fine bins of each piece
    counts: np.ndarray | None = None  # reconciled noisy events per piece
    count_var: float = 0.0


def merge(values: np.ndarray, pieces: list[np.ndarray]) -> np.ndarray:
    """Sums of ``values`` (first axis: fine bins) over each piece."""
    return np.stack([values[p].sum(axis=0) for p in pieces])


def subset(spells: Spells, rows: np.ndarray) -> Spells:
    """The spells of ``rows`` (a mask or index)."""
    return Spells(spells.person[rows], spells.state[rows], spells.target[rows],
                  spells.start[rows], spells.stop[rows])


def _psd(matrix: np.ndarray, floor: float) -> np.ndarray:
    """``matrix`` symmetrised with eigenvalues raised to ``floor``."""
    values, vectors = np.linalg.eigh((matrix + np.swapaxes(matrix, -1, -2)) / 2)
    return (vectors * np.maximum(values, floor)[..., None, :]) @ np.swapaxes(vectors, -1, -2)


def noise_sds(accountant: Accountant, budget: Budget, m: int, q: float, horizon: float) -> dict:
    """Noise sds the covariate releases will have (public: from the budget and bounds)."""
    root = horizon / math.sqrt(FINE_BINS)
    share = budget.share("covariate_moments")
    return {"a": accountant.sigma(2 * math.sqrt(m * q), budget.share("event_covariates")),
            "s1": accountant.sigma(2 * math.sqrt(q) * root, share * MOMENT_SHARES[0]),
            "s2": accountant.sigma(2 * q * root, share * MOMENT_SHARES[1]),
            "s3": accountant.sigma(2 * q**1.5 * root, share * MOMENT_SHARES[2])}


def window_variance(rates: list[np.ndarray], time: np.ndarray, sds: dict) -> np.ndarray:
    """Predicted variance of a log HR per unit of scaled x fitted on the first c bins, for
    every c (``rates``: per fine bin, one array per move of the state): sampling
    1 / I plus the score's noise / I^2, with I = ASSUMED_VARIANCE * expected events."""
    total = np.zeros(time.size)
    for rate in rates:
        information = ASSUMED_VARIANCE * np.cumsum(rate * np.clip(time, 0.0, None))
        noise = sds["a"] ** 2 + sds["s1"] ** 2 * np.cumsum(rate**2)
        total += 1 / np.maximum(information, 1e-9) + noise / np.maximum(information, 1e-9) ** 2
    return total / len(rates)


def _third(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index triples i <= j <= k of the unique entries of a symmetric p x p x p tensor."""
    triples = [(i, j, k) for i in range(p) for j in range(i, p) for k in range(j, p)]
    return tuple(np.array(t, dtype=np.int64).reshape(-1) for t in zip(*triples, strict=True)) \
        if triples else (np.zeros(0, np.int64),) * 3


def _symmetric3(unique: np.ndarray, p: int) -> np.ndarray:
    """Full (..., p, p, p) tensors from their unique entries (..., p (p+1) (p+2) / 6)."""
    i, j, k = _third(p)
    out = np.zeros((*unique.shape[:-1], p, p, p))
    for a, b, c in {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)}:
        index = (i, j, k)
        out[..., index[a], index[b], index[c]] = unique
    return out


@dataclass
class _Cumulants:
    """Per piece: the at-risk (time-weighted) mean, covariance and third cumulant of x."""

    mean: np.ndarray
    covariance: np.ndarray
    third: np.ndarray

    @classmethod
    def of(cls, s0: np.ndarray, s1: np.ndarray, s2: np.ndarray, s3: np.ndarray,
           p: int) -> _Cumulants:
        s0 = s0[:, None]
        m1 = s1 / s0
        m2 = symmetric(s2, p) / s0[..., None]
        m3 = _symmetric3(s3, p) / s0[..., None, None]
        covariance = _psd(m2 - np.einsum("ja,jb->jab", m1, m1), 0.0)
        third = (m3 - np.einsum("ja,jbc->jabc", m1, m2) - np.einsum("jb,jac->jabc", m1, m2)
                 - np.einsum("jc,jab->jabc", m1, m2)
                 + 2 * np.einsum("ja,jb,jc->jabc", m1, m1, m1))
        return cls(m1, covariance, third)

    def log_mean(self, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """K_j(beta) = log E exp(x.beta) to third order, its gradient and Hessian."""
        k3b = np.einsum("jabc,c->jab", self.third, beta)
        value = (self.mean @ beta + 0.5 * np.einsum("a,jab,b->j", beta, self.covariance, beta)
                 + np.einsum("a,jab,b->j", beta, k3b, beta) / 6)
        gradient = self.mean + self.covariance @ beta + 0.5 * np.einsum("jab,b->ja", k3b, beta)
        return value, gradient, self.covariance + k3b


def _denoised(cumulants: _Cumulants, events: np.ndarray, time: np.ndarray, sizes: np.ndarray,
              sd_3: float) -> _Cumulants:
    """The third cumulants shrunk, entry by entry, by the garrote factor of the entry's
    events-weighted sum over pieces (what the score uses): a third cumulant lost in the
    noise would otherwise bend the expansion anywhere."""
    total = np.einsum("j,jabc->abc", events, cumulants.third)
    variance = sd_3**2 * float((events**2 * sizes / np.maximum(time, 1.0) ** 2).sum())
    factor = np.clip(1.0 - variance / np.maximum(total**2, 1e-300), 0.0, 1.0)
    return _Cumulants(cumulants.mean, cumulants.covariance, cumulants.third * factor)


def _solve(events: np.ndarray, covariate_sum: np.ndarray, cumulants: _Cumulants,
           floor: float) -> tuple[np.ndarray, np.ndarray]:
    """The root of the profile score A - sum_j D_j grad K_j(beta) nearest the second-order
    solution (one Newton step from 0), by Newton steps kept within half that solution (plus
    0.1) of it: the third-order term corrects the second-order solution, it may not carry
    it off. Returns beta and the (floored) information there."""
    def information_at(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, gradient, hessian = cumulants.log_mean(beta)
        return (covariate_sum - events @ gradient,
                _psd(np.einsum("j,jab->ab", events, hessian), floor))

    score, information = information_at(np.zeros(covariate_sum.size))
    quadratic = np.clip(np.linalg.solve(information, score), -BETA_BOX, BETA_BOX)
    radius = 0.5 * np.abs(quadratic) + 0.1
    low = np.maximum(quadratic - radius, -BETA_BOX)
    high = np.minimum(quadratic + radius, BETA_BOX)
    beta = quadratic
    for _ in range(30):
        score, information = information_at(beta)
        step = np.clip(beta + np.linalg.solve(information, score), low, high) - beta
        beta = beta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta, information_at(beta)[1]


def covariate_effects(
    mechanisms: Mechanisms, budget: Budget, spells: Spells, reset: np.ndarray, horizon: float,
    design: Design, m: int, moves: list[Move], time: np.ndarray, notes: list[str],
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rates per piece, beta (scaled x) and its covariance per move, from one release of the
    time-weighted moments of x (orders 1 to 3) per (state, bin) and the sums of x over each
    move's events in its state's window (see the module docstring)."""
    x, q, p = design.x, design.q, design.x.shape[1]
    bins, width = FINE_BINS, horizon / FINE_BINS
    root = horizon / math.sqrt(bins)
    n_states = int(time.shape[0])
    sds = noise_sds(mechanisms.accountant, budget, m, q, horizon)
    sources = sorted({mv.source for mv in moves})
    window = {}
    for s in sources:
        rates = [_merge_back(mv.counts / np.maximum(merge(time[s], mv.pieces), 1.0), mv.pieces,
                             bins) for mv in moves if mv.source == s]
        window[s] = int(np.argmin(window_variance(rates, time[s], sds))) + 1
    entry, exit = spells.clock_times(reset)
    fine = np.minimum((exit / width).astype(np.int64), bins - 1)
    events_x = []
    for mv in moves:
        rows = (spells.state == mv.source) & (spells.target == mv.target) & (
            fine < window[mv.source])
        events_x.append(x[spells.person[rows]].sum(axis=0))
    events_x, sd_a = mechanisms.gaussian("covariate sums over each transition's events in "
                                         "its window", np.stack(events_x), 2 * math.sqrt(m * q),
                                         budget.share("event_covariates"))
    at_risk = subset(spells, np.isin(spells.state, sources))
    _, s1, s2, s3 = binned_sums(at_risk, reset, n_states, horizon, bins, x=x, moments=3)
    share = budget.share("covariate_moments")
    released = []
    for order, (values, sensitivity) in enumerate(((s1, 2 * math.sqrt(q) * root),
                                                   (s2, 2 * q * root),
                                                   (s3, 2 * q**1.5 * root))):
        released.append(mechanisms.gaussian(
            f"time x covariate moments of order {order + 1} per state and bin",
            values[sources], sensitivity, share * MOMENT_SHARES[order]))
    (s1, sd_1), (s2, sd_2), (s3, sd_3) = released
    where = {s: i for i, s in enumerate(sources)}
    out = {}
    for mv in moves:
        j, cut = where[mv.source], window[mv.source]
        inside = [pc[pc < cut] for pc in mv.pieces]
        used = [i for i, pc in enumerate(inside) if pc.size]
        pieces = [inside[i] for i in used]
        t0 = np.maximum(merge(time[mv.source], pieces), 1.0)
        share_inside = t0 / np.maximum(merge(time[mv.source], [mv.pieces[i] for i in used]),
                                       1.0)
        counts = mv.counts[used] * np.clip(share_inside, 0.0, 1.0)
        sizes = np.array([pc.size for pc in pieces], dtype=float)
        cumulants = _denoised(_Cumulants.of(t0, merge(s1[j], pieces), merge(s2[j], pieces),
                                            merge(s3[j], pieces), p), counts, t0, sizes, sd_3)
        rate = counts / t0
        sd_information = sd_2 * math.sqrt(float(rate**2 @ sizes))
        floor = max(sd_information, 1e-9)
        beta, information = _solve(counts, events_x[len(out)], cumulants, floor)
        inverse = np.linalg.inv(information)
        noise = (sd_a**2 + sd_1**2 * float(rate**2 @ sizes)
                 + sd_information**2 * float(beta @ beta))
        cov = inverse + noise * inverse @ inverse
        cov = (cov + cov.T) / 2
        beta = beta * np.clip(1.0 - np.diag(cov) / np.maximum(beta**2, 1e-300), 0.0, 1.0)
        every = np.maximum(merge(time[mv.source], mv.pieces), 1.0)
        full = _denoised(_Cumulants.of(every, merge(s1[j], mv.pieces), merge(s2[j], mv.pieces),
                                       merge(s3[j], mv.pieces), p), mv.counts, every,
                         np.array([pc.size for pc in mv.pieces], dtype=float), sd_3)
        baseline = mv.counts / (every * np.exp(np.clip(full.log_mean(beta)[0], -EXPONENT_CAP,
                                                       EXPONENT_CAP)))
        out[(mv.source, mv.target)] = (baseline, beta, cov)
    short = sorted({window[s] for s in sources if window[s] < bins})
    if short:
        notes.append("covariate effects fitted on the first "
                     f"{', '.join(f'{c * width:.0f}' for c in short)} days of each state's "
                     "clock (fewer days at risk, less noise)")
    return out


def _merge_back(values: np.ndarray, pieces: list[np.ndarray], bins: int) -> np.ndarray:
    """Per fine bin the value of its piece."""
    out = np.zeros(bins)
    for value, piece in zip(values, pieces, strict=True):
        out[piece] = value
    return out
