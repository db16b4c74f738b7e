"""The analyses a cohort's persons are put through, each with its estimate and variance on the
scale where they are combined: a Cox log hazard ratio, the Kaplan-Meier survival at a landmark
on the log(-log) scale, the restricted mean survival time in days.

Each analysis works on endpoint rows (one row per person: time, event, covariates; see
:func:`validation.endpoints.endpoint_times`). :meth:`estimate` uses the validation estimators
(lifelines' Cox with Efron ties, the polars Kaplan-Meier with Greenwood's variance, RMST with
its Greenwood-type variance); :meth:`influence` gives per-person influence terms
(:mod:`trajectories.inference.influence`) for the augmented estimators.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from trajectories.cohort import Cohort, death_states, initial_states, state_names
from trajectories.errors import InferenceError, SurvivalDataError
from trajectories.inference.influence import cox_fit, km_log_survival, km_rmst
from validation.cox import COX_MAX_ROWS, cox_hazard_ratios, design_matrix
from validation.endpoints import (
    EXTRA_PERSON_COLUMNS,
    Endpoint,
    default_endpoints,
    next_states,
)
from validation.survival import kaplan_meier, rmst, survival_at
from validation.transitions import infer_absorbing_states


@dataclass(frozen=True)
class Estimate:
    """One cohort's estimate on the working scale, its variance, and the share of its rows the
    estimator used (below 1 where Cox models subsample, see ``validation.cox.COX_MAX_ROWS``)."""

    theta: float
    variance: float
    fraction: float = 1.0


# -- endpoints ------------------------------------------------------------------------------------


def cohort_endpoints(cohort: Cohort) -> list[Endpoint]:
    """The default endpoints of ``cohort``, chosen as ``validation.compare`` chooses them for a
    reference: overall and event-free survival, or without death states time out of the
    initial state and the cumulative incidence of each next state."""
    absorbing = infer_absorbing_states(cohort)
    states = state_names(cohort)
    deaths, initial = death_states(cohort), initial_states(cohort)
    return default_endpoints(
        [s for s in states if s not in absorbing] + sorted(absorbing), deaths, initial=initial,
        next_states=None if deaths else next_states(cohort))


def known_covariates(cohort: Cohort) -> list[str]:
    """Columns of the endpoint rows an analysis may use as a covariate."""
    extra = [c for c in EXTRA_PERSON_COLUMNS if c in cohort.persons.columns]
    return ["site", *extra, *cohort.covariates]


# -- the analyses ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Analysis(ABC):
    """Base: which endpoint (None: the first default one without competing events)."""

    endpoint: str | None = None

    kind = "analysis"
    scale = "estimate"
    competing_allowed = False

    @abstractmethod
    def label(self, endpoint: str) -> str:
        """What is estimated, on ``endpoint``, for tables and JSON."""

    def bind(self, frame: pl.DataFrame, known: Sequence[str], where: str) -> Analysis:
        """This analysis with whatever the data decide (levels) fixed; checks the request."""
        return self

    def columns(self) -> list[str]:
        return ["time", "event"]

    @abstractmethod
    def estimate(self, frame: pl.DataFrame, where: str = "cohort") -> Estimate:
        """The estimate on the working scale and its variance, from endpoint rows."""

    @abstractmethod
    def influence(self, frame: pl.DataFrame, where: str = "cohort") -> tuple[float, np.ndarray]:
        """The estimate and each row's influence on it (they sum to the estimation error)."""

    def shown(self, theta: float) -> float:
        """The working-scale value on the scale reported to users."""
        return theta

    def shown_interval(self, lower: float, upper: float) -> tuple[float, float]:
        return self.shown(lower), self.shown(upper)


@dataclass(frozen=True, kw_only=True)
class HazardRatio(Analysis):
    """Cox (1972) hazard ratio of ``covariate`` on the endpoint: per unit of a numeric one; for
    a categorical one, ``level`` against ``reference`` (the first other level in sort order),
    the covariate's other levels in the model beside it. Combined as a log hazard ratio."""

    covariate: str
    level: str | None = None
    reference: str | None = None
    numeric: bool = False

    kind = "hazard_ratio"
    scale = "log hazard ratio"
    competing_allowed = True  # cause-specific: competing events count as censored

    @classmethod
    def parse(cls, text: str, endpoint: str | None = None) -> HazardRatio:
        """``COVARIATE`` or ``COVARIATE=LEVEL``."""
        name, sep, level = text.partition("=")
        if not name or (sep and not level):
            raise InferenceError(f"--hazard-ratio takes COVARIATE or COVARIATE=LEVEL, got "
                                 f"{text!r}")
        return cls(endpoint=endpoint, covariate=name, level=level if sep else None)

    def label(self, endpoint: str) -> str:
        what = (f"{self.covariate} (per unit)" if self.numeric
                else f"{self.covariate}={self.level} vs {self.reference}")
        return f"hazard ratio of {what}, {endpoint}"

    def bind(self, frame: pl.DataFrame, known: Sequence[str], where: str) -> HazardRatio:
        if self.covariate not in known or self.covariate not in frame.columns:
            raise InferenceError(f"{where}: unknown covariate {self.covariate!r}; known "
                                 f"covariates: {', '.join(known)}")
        column = frame.get_column(self.covariate)
        if column.dtype.is_numeric():
            if self.level is not None:
                raise InferenceError(
                    f"{where}: covariate {self.covariate!r} is numeric, its hazard ratio is per "
                    f"unit; give --hazard-ratio {self.covariate} without '={self.level}'")
            return replace(self, numeric=True)
        levels = sorted(column.cast(pl.String).drop_nulls().unique().to_list())
        if len(levels) < 2:
            raise InferenceError(f"{where}: covariate {self.covariate!r} takes one value "
                                 f"({levels}); no hazard ratio")
        level = self.level
        if level is None:
            if len(levels) > 2:
                raise InferenceError(
                    f"{where}: covariate {self.covariate!r} has levels {_quoted(levels)}; say "
                    f"which with {self.covariate}=LEVEL")
            level = levels[1]
        if level not in levels:
            raise InferenceError(f"{where}: unknown level {level!r} of covariate "
                                 f"{self.covariate!r}; known levels: {_quoted(levels)}")
        reference = levels[0] if level != levels[0] else levels[1]
        return replace(self, level=level, reference=reference, numeric=False)

    def columns(self) -> list[str]:
        return ["time", "event", self.covariate]

    def _prepared(self, frame: pl.DataFrame, where: str) -> tuple[pl.DataFrame, str]:
        """The rows with the covariate as text (categorical), and the design column wanted."""
        if self.numeric:
            return frame.select(self.columns()), self.covariate
        prepared = frame.select("time", "event", pl.col(self.covariate).cast(pl.String))
        present = set(prepared.get_column(self.covariate).drop_nulls().unique().to_list())
        missing = [lv for lv in (self.level, self.reference) if lv not in present]
        if missing:
            raise InferenceError(f"{where}: no person with {self.covariate}={missing[0]!r}; "
                                 "its hazard ratio cannot be estimated there")
        return prepared, f"{self.covariate}[{self.level}]"

    def _references(self) -> dict[str, str]:
        return {} if self.numeric else {self.covariate: str(self.reference)}

    def estimate(self, frame: pl.DataFrame, where: str = "cohort") -> Estimate:
        prepared, target = self._prepared(frame, where)
        fitted = _survival(lambda: cox_hazard_ratios(
            prepared, "time", "event", [self.covariate], reference_levels=self._references()),
            where)
        row = fitted.filter(pl.col("covariate") == target).row(0, named=True)
        return Estimate(float(row["log_hr"]), float(row["std_error"]) ** 2,
                        min(1.0, COX_MAX_ROWS / prepared.height))

    def influence(self, frame: pl.DataFrame, where: str = "cohort") -> tuple[float, np.ndarray]:
        prepared, target = self._prepared(frame, where)
        design = _survival(lambda: design_matrix(prepared, [self.covariate],
                                                 self._references()), where)
        column = design.columns.index(target)
        fit = _survival(lambda: cox_fit(prepared.get_column("time").to_numpy(),
                                        prepared.get_column("event").to_numpy(),
                                        design.to_numpy()), where)
        return float(fit.beta[column]), fit.dfbeta[:, column]

    def shown(self, theta: float) -> float:
        return math.exp(theta) if theta < 700 else math.inf


@dataclass(frozen=True, kw_only=True)
class Landmark(Analysis):
    """Kaplan-Meier (1958) survival at day ``days``, combined on the log(-log) scale with
    Greenwood's variance by the delta method (Kalbfleisch & Prentice 2002, 1.4: the scale
    lifelines' and :mod:`validation.survival`'s intervals use), reported as a survival."""

    days: float

    kind = "landmark"
    scale = "log(-log survival)"

    def __post_init__(self) -> None:
        if not (self.days > 0 and math.isfinite(self.days)):
            raise InferenceError(f"--landmark must be a number of days > 0, got {self.days}")

    def label(self, endpoint: str) -> str:
        return f"survival at day {self.days:g}, {endpoint}"

    def estimate(self, frame: pl.DataFrame, where: str = "cohort") -> Estimate:
        curve = _survival(lambda: kaplan_meier(frame.get_column("time"),
                                               frame.get_column("event")), where)
        value = survival_at(curve, self.days)
        survival = value["value"]
        self._inside(survival, where)
        log_s = math.log(survival)
        return Estimate(math.log(-log_s), (value["std_error"] / survival / log_s) ** 2)

    def influence(self, frame: pl.DataFrame, where: str = "cohort") -> tuple[float, np.ndarray]:
        log_s, terms = _survival(lambda: km_log_survival(
            frame.get_column("time").to_numpy(), frame.get_column("event").to_numpy(),
            self.days), where)
        self._inside(math.exp(log_s), where)
        return math.log(-log_s), terms / log_s

    def _inside(self, survival: float, where: str) -> None:
        if not 0 < survival < 1:
            raise InferenceError(
                f"{where}: Kaplan-Meier survival at day {self.days:g} is {survival:g}; the "
                "log(-log) scale needs 0 < S < 1 (no event, or no survivor, by then): choose "
                "another landmark")

    def shown(self, theta: float) -> float:
        return math.exp(-math.exp(theta))

    def shown_interval(self, lower: float, upper: float) -> tuple[float, float]:
        return self.shown(upper), self.shown(lower)  # S falls as log(-log S) rises


@dataclass(frozen=True, kw_only=True)
class Rmst(Analysis):
    """Restricted mean survival time to day ``days`` (Royston & Parmar 2013), the area under
    the Kaplan-Meier curve, with its Greenwood-type variance (Klein & Moeschberger 4.5)."""

    days: float

    kind = "rmst"
    scale = "days"

    def __post_init__(self) -> None:
        if not (self.days > 0 and math.isfinite(self.days)):
            raise InferenceError(f"--rmst must be a number of days > 0, got {self.days}")

    def label(self, endpoint: str) -> str:
        return f"RMST to day {self.days:g} (days), {endpoint}"

    def estimate(self, frame: pl.DataFrame, where: str = "cohort") -> Estimate:
        curve = _survival(lambda: kaplan_meier(frame.get_column("time"),
                                               frame.get_column("event")), where)
        value, se = rmst(curve, self.days)
        if not se > 0:
            raise InferenceError(f"{where}: RMST to day {self.days:g} has no variance (no "
                                 "event before it); choose a later horizon")
        return Estimate(value, se**2)

    def influence(self, frame: pl.DataFrame, where: str = "cohort") -> tuple[float, np.ndarray]:
        return _survival(lambda: km_rmst(frame.get_column("time").to_numpy(),
                                         frame.get_column("event").to_numpy(), self.days), where)


# -- applying an analysis to a cohort -------------------------------------------------------------


def choose_endpoint(endpoints: Sequence[Endpoint], name: str | None, analysis: Analysis,
                    where: str) -> Endpoint:
    """The endpoint ``name`` (default: the first without competing events), checked usable."""
    names = [e.name for e in endpoints]
    if not endpoints:
        raise InferenceError(f"{where}: no default endpoint (no person leaves the initial "
                             "state)")
    if name is None:
        chosen = next((e for e in endpoints if not e.competing), endpoints[0])
    elif name in names:
        chosen = endpoints[names.index(name)]
    else:
        raise InferenceError(f"{where}: unknown endpoint {name!r}; endpoints: "
                             f"{', '.join(names)}")
    if chosen.competing and not analysis.competing_allowed:
        raise InferenceError(
            f"{where}: endpoint {chosen.name!r} has competing events, which Kaplan-Meier would "
            f"count as censoring; choose one without: "
            f"{', '.join(e.name for e in endpoints if not e.competing) or 'none'}")
    return chosen


def _survival(call, where: str):
    """Run an estimator; its data errors name the cohort."""
    try:
        return call()
    except SurvivalDataError as error:
        raise InferenceError(f"{where}: {error}") from None


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)
