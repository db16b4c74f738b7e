"""Private transition hazards: a piecewise-constant proportional-hazards model per move, fitted
from noisy events, noisy person-time and noisy time-weighted covariate moments.

The piecewise-exponential model is a Poisson log-linear model of events per (person, piece)
with the time at risk as exposure (Holford 1980, "The analysis of rates and of survivorship
using log-linear models", Biometrics 36:299-305; Laird and Olivier 1981, JASA 76:231-240), so
its score and information are sums over persons of bounded terms:

1. Releases on a fixed grid of ``FINE_BINS`` bins of [0, horizon] on each state's clock:
   events per candidate move (every ordered pair of public states, so that which moves occur
   is not given away), person-time per (state, bin). A move is kept when its noisy count
   clears the noise at a false-positive rate of ``MOVE_FALSE_POSITIVE`` over all candidates.
2. Each kept move gets pieces (between 1 and ``MAX_PIECES``, fewer when its noisy count is
   small against the noise) cut at equal shares of its state's released person-time, and a
   release of its events per piece, reconciled with step 1's total by least squares.
3. Covariate log hazard ratios (and site effects), by maximising the profile likelihood
   A.beta - sum_j D_j K_j(beta), with A the sum of x over the move's events, D_j its events in
   piece j and K_j(beta) = log E_j exp(x.beta) the log mean weight of those at risk in piece
   j, expanded to third order in its cumulants (at-risk mean, covariance, third cumulant of
   x). Released for it: per (state, bin) the time-weighted moments of x of orders 1 to 3 (a
   move's state shares them with every move out of it) and per move A. Third order because
   the second-order expansion is exactly one Newton step from beta = 0, biased at real effect
   sizes (a treatment log HR of -0.7 with 75% of person-time treated comes out -0.81); with
   the third cumulant it comes out -0.69, so no second, data-dependent round of releases
   (whose weights exp(x.beta) would multiply the sensitivities) is needed (the third
   cumulants are shrunk by their noise, and the root is sought near the second-order one).
   The fit uses each state's first bins only, as many as minimise the predicted variance:
   the score's noise grows with the cumulative hazard over the window (a person at risk
   throughout could add that many expected events), the information with its events;
   cutting the window is censoring at a fixed time, so it adds no bias. Code in
   :mod:`.effects`. The variance adds the released noise to the
   information's inverse; each estimate is then shrunk by the non-negative garrote factor
   (1 - se^2 / beta^2)+ (Breiman 1995, Technometrics 37:373-384), the moment estimate of
   signal / (signal + noise) variance, so that effects lost in the noise do not make up
   heterogeneity the data do not show. The covariate releases are skipped (their budget goes
   to the events) when step 1's counts predict an sd above ``MAX_PREDICTED_SD``.
4. Baseline rates per piece: events over the at-risk time weighted by exp(x.beta), the
   expansion's K_j(beta) on all of the piece's moments.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from trajectories import hazards
from trajectories.errors import FitError
from trajectories.fit.families import TransitionFit
from trajectories.fit.private.accounting import Budget
from trajectories.fit.private.data import Spells, binned_sums
from trajectories.fit.private.effects import (
    FINE_BINS,
    MAX_PREDICTED_SD,
    Design,
    Move,
    covariate_effects,
    merge,
    noise_sds,
    window_variance,
)
from trajectories.fit.private.mechanisms import Mechanisms
from trajectories.fit.transition import FittedTransition

MAX_PIECES = 8
MIN_EVENTS_PER_PIECE = 20
PIECE_NOISE = 0.2
"""A piece should hold at least 1 / PIECE_NOISE noise sds of events."""
MOVE_FALSE_POSITIVE = 0.01
"""Chance that some move without events is kept (Bonferroni over the candidates)."""
MIN_EVENTS_FOR_COVARIATES = 10
"""As in the exact fit: a move with fewer (noisy) events gets no covariates."""


def _pieces(events: float, time: np.ndarray, sigma: float) -> list[np.ndarray]:
    """Fine bins of each piece: as many pieces as the count allows, at equal shares of the
    (clipped) released person-time."""
    k = int(np.clip(events // max(MIN_EVENTS_PER_PIECE, sigma / PIECE_NOISE), 1, MAX_PIECES))
    cumulative = np.cumsum(np.clip(time, 0.0, None))
    bins = time.size
    if k == 1 or cumulative[-1] <= 0:
        return [np.arange(bins)]
    cuts = sorted({int(np.searchsorted(cumulative, j / k * cumulative[-1])) + 1
                   for j in range(1, k)} - {0, bins})
    edges = [0, *[c for c in cuts if 0 < c < bins], bins]
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def fit_hazards(
    mechanisms: Mechanisms, budget: Budget, spells: Spells, states: list[str],
    reset: np.ndarray, horizon: float, design: Design, max_transitions: int, notes: list[str],
) -> list[FittedTransition]:
    """Kept moves and their fitted hazards (see the module docstring for the releases)."""
    accountant = mechanisms.accountant
    n_states, bins, width = len(states), FINE_BINS, horizon / FINE_BINS
    m = max_transitions
    moved = spells.target >= 0
    totals = np.zeros((n_states, n_states))
    np.add.at(totals, (spells.state[moved], spells.target[moved]), 1.0)
    pairs = [(s, t) for s in range(n_states) for t in range(n_states) if s != t]
    noisy, sigma_total = mechanisms.gaussian(
        "events per candidate transition", np.array([totals[p] for p in pairs]),
        math.sqrt(2 * m), budget.share("event_totals"))
    (time,) = binned_sums(spells, reset, n_states, horizon, bins)
    time, sigma_time = mechanisms.gaussian(
        "person-time per state and time bin", time, math.sqrt(2) * horizon / math.sqrt(bins),
        budget.share("person_time"))
    threshold = max(float(stats.norm.isf(MOVE_FALSE_POSITIVE / len(pairs))) * sigma_total, 1.0)
    kept = [(p, float(v)) for p, v in zip(pairs, noisy, strict=True)
            if v >= threshold and time[p[0]].sum() > 0]
    if not kept:
        raise FitError(f"no transition's noisy event count reaches the noise threshold "
                       f"({threshold:.3g} events at this epsilon): the fit cannot tell any "
                       "move from noise; use a larger epsilon or a larger cohort")
    weak = sum(1 for v in noisy if 1.0 <= v < threshold)
    if weak:
        notes.append(f"{weak} candidate transition(s) with a noisy event count under the "
                     f"noise threshold ({threshold:.3g}) left out")

    p, q = design.x.shape[1], design.q
    covariate_moves = [(mv, v) for mv, v in kept if v >= MIN_EVENTS_FOR_COVARIATES] if p else []
    if covariate_moves:
        sds = noise_sds(accountant, budget, m, q, horizon)
        rates = {mv: v / max(float(time[mv[0]].sum()), 1.0) for mv, v in covariate_moves}
        predicted = min(math.sqrt(min(window_variance(
            [np.full(bins, rates[mv])], time[mv[0]], sds))) for mv, _ in covariate_moves)
        if predicted > MAX_PREDICTED_SD:
            notes.append(f"covariate effects not fitted: at this epsilon their sd would be "
                         f"about {predicted:.2g} per unit of scaled covariate (at most "
                         f"{MAX_PREDICTED_SD}); their budget went to the event counts")
            covariate_moves = []
    if not covariate_moves:
        budget.reassign(["event_covariates", "covariate_moments"], "events")

    sigma_piece = accountant.sigma(math.sqrt(2 * m), budget.share("events"))
    moves = [Move(s, t, v, _pieces(v, time[s], sigma_piece)) for (s, t), v in kept]
    entry, exit = spells.clock_times(reset)
    fine = np.minimum((exit / width).astype(np.int64), bins - 1)
    true_counts = []
    for move in moves:
        rows = (spells.state == move.source) & (spells.target == move.target)
        per_bin = np.bincount(fine[rows], minlength=bins).astype(float)
        true_counts.append(merge(per_bin, move.pieces))
    released, sigma_piece = mechanisms.gaussian(
        "events per transition and piece", np.concatenate(true_counts), math.sqrt(2 * m),
        budget.share("events"))
    offset = 0
    for move in moves:
        k = len(move.pieces)
        y = released[offset:offset + k]
        offset += k
        v0, v1 = sigma_total**2, sigma_piece**2  # least squares with step 1's total
        move.counts = np.clip(y + v1 / (v0 + k * v1) * (move.events - y.sum()), 0.0, None)
        move.count_var = v1 - v1**2 / (v0 + k * v1)
    # The reconciled total has less noise: a move kept by step 1's noise alone fails here.
    z = float(stats.norm.isf(MOVE_FALSE_POSITIVE / len(pairs)))
    dropped = [mv for mv in moves if mv.counts.sum() < max(z * math.sqrt(
        sigma_total**2 * len(mv.pieces) * sigma_piece**2
        / (sigma_total**2 + len(mv.pieces) * sigma_piece**2)), 1.0)]
    if len(dropped) == len(moves):
        raise FitError("no transition's reconciled noisy event count reaches the noise "
                       "threshold: the fit cannot tell any move from noise; use a larger "
                       "epsilon or a larger cohort")
    if dropped:
        notes.append(f"{len(dropped)} transition(s) dropped: their reconciled noisy event "
                     "count is under the noise threshold")
        moves = [mv for mv in moves if all(mv is not d for d in dropped)]

    effects = (covariate_effects(mechanisms, budget, spells, reset, horizon, design, m,
                                  [mv for mv in moves if (mv.source, mv.target)
                                   in {c for c, _ in covariate_moves}], time, notes)
               if covariate_moves else {})
    fitted = []
    for move in moves:
        pt = np.maximum(merge(time[move.source], move.pieces),
                        3 * sigma_time * np.sqrt([len(pc) for pc in move.pieces]))
        if (move.source, move.target) in effects:
            rates, beta, cov = effects[(move.source, move.target)]
        else:
            rates, beta, cov = move.counts / pt, np.zeros(0), np.zeros((0, 0))
        fitted.append(_transition(move, rates, beta, cov, pt, sigma_time, design, width,
                                  states, reset,
                                  (move.source, move.target) in effects))
    return fitted


def _transition(move: Move, rates: np.ndarray, beta: np.ndarray, cov: np.ndarray,
                time: np.ndarray, sigma_time: float, design: Design, width: float,
                states: list[str], reset: np.ndarray, with_covariates: bool
                ) -> FittedTransition:
    """A FittedTransition with a piecewise TransitionFit in days and original units."""
    columns = design.columns if with_covariates else []
    scale = design.scale if with_covariates else np.zeros(0)
    beta_days = beta / scale if beta.size else beta
    if beta.size:  # rates at the user's centres instead of the range midpoints
        rates = rates * math.exp(float(beta_days @ design.offset))
    rates = np.clip(rates, 0.0, None)
    counts = np.maximum(move.counts, 1.0)
    sizes = np.array([len(pc) for pc in move.pieces], dtype=float)
    theta_var = 1.0 / counts + move.count_var / counts**2 + sigma_time**2 * sizes / time**2
    k = rates.size
    full = np.zeros((k + beta.size, k + beta.size))
    full[:k, :k] = np.diag(theta_var)
    if beta.size:
        full[k:, k:] = cov / np.outer(scale, scale)
    breakpoints = [float(pc[0] * width) for pc in move.pieces[1:]]
    # One piece is the exponential family (the same hazard; a scenario file cannot hold a
    # piecewise hazard without breakpoints).
    fit = TransitionFit(
        family="piecewise" if k > 1 else "exponential",
        hazard=hazards.PiecewiseConstant(breakpoints=breakpoints,
                                         rates=[float(r) for r in rates]) if k > 1
        else hazards.Exponential(rate=float(rates[0])),
        theta=np.log(np.maximum(rates, 1e-300)),
        theta_names=[f"log_rate_{j}" for j in range(k)] if k > 1 else ["log_rate"],
        beta=beta_days, beta_names=[n if lv is None else f"{n}[{lv}]" for n, lv in columns],
        cov=full, loglik=None, n_events=int(round(float(move.counts.sum()))), n_rows=0,
        notes=["fitted from noisy statistics (differential privacy): n_rows not released"],
    )
    clock = "reset" if reset[move.source] else "forward"
    source, target = states[move.source], states[move.target]
    notes = [] if with_covariates or not design.columns else [
        "no covariates (too few noisy events, or their noise too large at this epsilon)"]
    return FittedTransition(source, target, clock, fit, list(columns),
                            [(fit.family, clock, fit)], notes)
