"""One fitted transition: the chosen fit, its clock, the design columns, every candidate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trajectories.fit.covariates import column_label
from trajectories.fit.families import TransitionFit

SITE = "site"
"""The design columns' name for site effects (one column per site but the largest)."""


@dataclass
class FittedTransition:
    """The chosen fit of one transition, its clock, the design columns and every candidate."""

    source: str
    target: str
    clock: str
    fit: TransitionFit
    columns: list[tuple[str, str | None]]  # (covariate or "site", level) per beta
    candidates: list[tuple[str, str, TransitionFit]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: int | None = None  # this move's events when its fit is shared with other moves
    site_shrinkage: dict[str, dict[str, float]] = field(default_factory=dict)
    """Design label 'site[X]' -> its log HR before empirical-Bayes shrinkage and the factor."""

    @property
    def key(self) -> str:
        return f"{self.source}->{self.target}"

    def effects(self) -> dict[str, float | dict[str, float]]:
        """Scenario ``effects``: log HR per unit of a number, per level of a category."""
        out: dict[str, Any] = {}
        for (name, level), beta in zip(self.columns, self.fit.beta, strict=True):
            if name == SITE:
                continue
            if level is None:
                out[name] = float(beta)
            else:
                out.setdefault(name, {})[level] = float(beta)
        return out

    def site_log_hazard_ratios(self) -> dict[str, tuple[float, float]]:
        se = self.fit.std_errors[self.fit.theta.size:]
        return {level: (float(b), float(s))
                for (name, level), b, s in zip(self.columns, self.fit.beta, se, strict=True)
                if name == SITE}

    def summary(self) -> dict:
        return {
            "transition": self.key,
            "clock": self.clock,
            **self.fit.summary(),
            "columns": [column_label(n, lv) for n, lv in self.columns],
            "candidates": [
                {"family": f, "clock": c, "aic": fit.aic, "loglik": fit.loglik,
                 "converged": fit.converged,
                 **({"excluded": fit.excluded} if fit.excluded else {})}
                for f, c, fit in self.candidates
            ],
            "notes": [*self.fit.notes, *self.notes],
            **({"site_shrinkage": self.site_shrinkage} if self.site_shrinkage else {}),
            **({"n_events": self.events, "n_events_fitted": self.fit.summary()["n_events"]}
               if self.events is not None else {}),
        }
