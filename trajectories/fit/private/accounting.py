"""The privacy accountant of the differentially private fit: one Rényi-DP ledger over every
release, its (epsilon, delta) guarantee from opacus' conversion.

Every release is a Gaussian mechanism: sensitivity ``D`` (L2, one person replaced), noise
``sigma``, so it is ``(alpha, alpha D^2 / (2 sigma^2))``-RDP at every order ``alpha`` (Mironov
2017, "Renyi differential privacy", CSF, Prop. 7), that is ``rho``-zCDP with ``rho = D^2 /
(2 sigma^2)`` (Bun and Steinke 2016, "Concentrated differential privacy", TCC). RDP adds up over
releases, those chosen after looking at earlier ones included, as long as the sum of ``rho`` is
fixed in advance and never exceeded (the Rényi filter of Feldman and Zrnic 2021, "Individual
privacy accounting via a Rényi filter", NeurIPS). The ledger is converted to (epsilon, delta)
with opacus' ``get_privacy_spent`` (Balle et al. 2020, "Hypothesis testing interpretations and
Rényi differential privacy", AISTATS, Thm. 21). The total ``rho`` a target allows is found by
bisection on that same conversion, so the budget is spent exactly and never overspent.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from trajectories.errors import FitError

ORDERS = np.array([1 + x / 10 for x in range(1, 100)] + list(range(11, 64))
                  + [64, 80, 96, 128, 192, 256, 384, 512, 768, 1024], dtype=float)
"""RDP orders of the ledger: opacus' defaults, extended upwards for small epsilon."""
SAFETY = 1.0 - 1e-9
"""The bisection's rho is shrunk by this factor so that rounding never overspends."""


def _rdp_to_epsilon(rdp: np.ndarray, delta: float) -> float:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha" at tiny rho
        epsilon, _ = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(epsilon)


def rho_budget(epsilon: float, delta: float) -> float:
    """The largest zCDP ``rho`` whose RDP curve ``alpha * rho`` converts (opacus) to at most
    ``epsilon`` at ``delta``."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise FitError(f"epsilon must be a positive number, got {epsilon}")
    if not 0 < delta < 1:
        raise FitError(f"delta must be between 0 and 1 (exclusive), got {delta}")
    low, high = 0.0, 1.0
    while _rdp_to_epsilon(high * ORDERS, delta) < epsilon:
        low, high = high, 2 * high
    for _ in range(100):
        middle = (low + high) / 2
        if _rdp_to_epsilon(middle * ORDERS, delta) <= epsilon:
            low = middle
        else:
            high = middle
    return low * SAFETY


@dataclass(frozen=True)
class Release:
    """One Gaussian release: what, its L2 sensitivity, noise sd, share of the budget, size."""

    what: str
    sensitivity: float
    sigma: float
    share: float
    size: int

    @property
    def rho(self) -> float:
        return self.sensitivity**2 / (2 * self.sigma**2)

    def rdp(self) -> np.ndarray:
        """The release's RDP at ``ORDERS`` (opacus' Gaussian mechanism, no subsampling)."""
        from opacus.accountants.analysis.rdp import compute_rdp

        return np.asarray(compute_rdp(q=1.0, noise_multiplier=self.sigma / self.sensitivity,
                                      steps=1, orders=list(ORDERS)), dtype=float)

    def record(self) -> dict:
        return {"what": self.what, "mechanism": "gaussian", "sigma": self.sigma,
                "sensitivity": self.sensitivity, "share": self.share, "values": self.size}


class Accountant:
    """The ledger: hands out noise scales for shares of ``rho`` and refuses to overspend."""

    def __init__(self, epsilon: float, delta: float) -> None:
        self.epsilon, self.delta = float(epsilon), float(delta)
        self.rho = rho_budget(self.epsilon, self.delta)
        self.releases: list[Release] = []

    @property
    def rho_spent(self) -> float:
        return float(sum(r.rho for r in self.releases))

    def sigma(self, sensitivity: float, share: float) -> float:
        """Noise sd of a Gaussian release of ``share`` of the budget: D / sqrt(2 rho share)."""
        return sensitivity / math.sqrt(2 * self.rho * share)

    def charge(self, what: str, sensitivity: float, share: float, size: int) -> float:
        """Record a release and return its noise sd; FitError if it would overspend."""
        if share <= 0 or sensitivity <= 0:
            raise FitError(f"release {what!r}: share and sensitivity must be positive")
        release = Release(what, float(sensitivity), self.sigma(sensitivity, share), share, size)
        if self.rho_spent + release.rho > self.rho * (1 + 1e-9):
            raise FitError(f"release {what!r} would overspend the privacy budget "
                           f"({self.rho_spent + release.rho:.6g} > {self.rho:.6g} zCDP)")
        self.releases.append(release)
        return release.sigma

    def epsilon_spent(self) -> float:
        """(epsilon at delta) of every release so far, from opacus' RDP conversion."""
        if not self.releases:
            return 0.0
        return _rdp_to_epsilon(np.sum([r.rdp() for r in self.releases], axis=0), self.delta)


WEIGHTS = {
    "structure": 0.04, "horizon": 0.03, "index_dates": 0.05, "censoring": 0.09,
    "covariate_bounds": 0.05, "covariate_marginals": 0.07, "copula": 0.04,
    "event_totals": 0.08, "person_time": 0.14, "events": 0.15,
    "event_covariates": 0.08, "covariate_moments": 0.18,
}
"""Relative weights of the release groups; the groups a fit makes share the whole budget in
these proportions. The baseline hazards (events and person-time) take the largest part: they
decide the survival curves; covariate effects come next, follow-up and covariate laws after."""


class Budget:
    """Shares of the budget per release group, fixed from the public schema before any
    release; a group left unused after looking at released values gives its share to another
    (still within the total: the Rényi filter allows it)."""

    def __init__(self, groups: list[str]) -> None:
        total = sum(WEIGHTS[g] for g in groups)
        self.shares = {g: WEIGHTS[g] / total for g in groups}

    def share(self, group: str) -> float:
        return self.shares.get(group, 0.0)

    def reassign(self, groups: list[str], to: str) -> None:
        """Give the shares of ``groups`` (not yet spent) to ``to``."""
        moved = sum(self.shares.pop(g, 0.0) for g in groups)
        self.shares[to] = self.shares.get(to, 0.0) + moved

    def record(self) -> dict[str, float]:
        return {g: round(s, 6) for g, s in self.shares.items()}
