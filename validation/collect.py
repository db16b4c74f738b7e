"""The collector of one comparison: checks judged at once, tests waiting for the report's
shared per-test level, and figures.

Every pending test is judged at ``alpha / m`` for the ``m`` tests of the report (Bonferroni
1936): a p-value against that level, a bootstrap distance against its critical value at that
level, a magnitude against a practical margin plus ``z(alpha / m)`` standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from scipy import stats

from validation.report import Check, judge


@dataclass(frozen=True)
class Margin:
    """A magnitude allowed a practical ``margin`` plus z(level) standard errors of noise."""

    metric: float
    margin: float
    standard_error: float


@dataclass(frozen=True)
class BootstrapDistance:
    """An observed distance and its critical value at a level: ``threshold_at(level,
    n_boot)`` runs the bootstrap once the level is known."""

    observed: float
    threshold_at: Callable[[float, int], float]


@dataclass(frozen=True)
class Pending:
    """A test waiting for the report's per-test level: judged by its ``margin``, else its
    ``distance``, else its ``p_value``."""

    group: str
    name: str
    subject: str
    site: str | None
    p_value: float | None = None
    distance: BootstrapDistance | None = None
    margin: Margin | None = None
    details: dict = field(default_factory=dict)


@dataclass
class Collector:
    """What the check builders of one comparison add to, in report order."""

    checks: list[Check] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def resolve(self, alpha: float) -> float:
        """Judge the pending tests at alpha / m; returns that per-test level."""
        level = alpha / max(len(self.pending), 1)
        z = float(stats.norm.isf(level / 2))
        for test in self.pending:
            if test.margin is not None:
                margin, se = test.margin.margin, test.margin.standard_error
                self.checks.append(judge(
                    test.group, test.name, test.subject, test.margin.metric, margin + z * se,
                    site=test.site,
                    rule=f"<= margin {margin:g} + {z:.2f} x standard error {se:.3g}",
                    details={**test.details, "margin": margin, "standard_error": se}))
            elif test.distance is not None:
                n_boot = max(400, math.ceil(4 / level))
                limit = test.distance.threshold_at(level, n_boot)
                self.checks.append(judge(
                    test.group, test.name, test.subject, test.distance.observed, limit,
                    site=test.site,
                    rule=f"sup |S_syn - S_ref| <= bootstrap critical value at level {level:.2g}",
                    details={**test.details, "n_boot": n_boot},
                ))
            else:
                self.checks.append(judge(
                    test.group, test.name, test.subject, test.p_value, level,
                    higher_is_worse=False, site=test.site,
                    rule=f"p-value >= {level:.2g} (alpha {alpha} / {len(self.pending)} tests)",
                    details=test.details,
                ))
        return level
