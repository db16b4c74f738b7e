"""Calibrate a scenario to published figures (medians, landmark survival, hazard ratios,
transition probabilities) by adjusting hazard levels and covariate effects.

Each parameter is a log multiplier: a *level* parameter multiplies the hazards of the transitions
into an endpoint's event states; an *effect* parameter adds to the log hazard ratio of a
covariate level on those transitions. Every evaluation simulates the same persons from the same
seed (common random numbers), so the estimates move smoothly with the parameters; the
residuals (estimate - published value) / published standard error, plus a small ridge pulling
the parameters towards the original scenario, are minimised by trust-region least squares
(scipy's trf: Branch, Coleman & Li 1999).
Visits, measurements and drugs play no part and are left out while calibrating.

It lives with the checks because it simulates and then measures against published figures
(:mod:`validation.published_checks`), which no generator may import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy import optimize

from trajectories import hazards
from trajectories.cohort import Cohort
from trajectories.errors import CalibrationError
from trajectories.scenario import Scenario, scenario_from_dict
from trajectories.simulate import MarkovSimulator
from validation import survival, transitions
from validation.endpoints import Endpoint, default_endpoints, endpoint_times
from validation.published import (
    HazardRatioFigure,
    LandmarkFigure,
    MedianFigure,
    PublishedFigures,
    TransitionFigure,
)
from validation.published_checks import compare_published

__all__ = [
    "CalibrationError", "Calibration", "Parameter", "TargetResult", "apply", "calibrate",
    "cox_one", "default_parameters", "describe", "estimates", "scaled_hazard",
]

Z95 = 1.959963984540054
STEP = 0.05
"""Finite-difference step for the parameters (log multipliers)."""


@dataclass(frozen=True)
class Parameter:
    """A log multiplier of the hazards (``level``) or an added log HR of ``covariate`` at
    ``level`` (``effect``; level None for a numeric covariate) on ``transitions``."""

    kind: str  # "level" | "effect"
    transitions: tuple[str, ...]
    covariate: str | None = None
    level: str | None = None
    label: str = ""


@dataclass(frozen=True)
class TargetResult:
    """A published figure, the calibrated estimate, and whether it lies in the interval."""

    label: str
    value: float
    lower: float
    upper: float
    estimate: float
    reached: bool
    reason: str = ""


@dataclass
class Calibration:
    """The calibrated scenario, the parameter values, and each target's outcome."""

    scenario: Scenario
    parameters: list[Parameter]
    values: np.ndarray
    targets: list[TargetResult]
    evaluations: int
    notes: list[str] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return all(t.reached for t in self.targets)

    def unreached(self) -> list[TargetResult]:
        return [t for t in self.targets if not t.reached]


# -- parameters ------------------------------------------------------------------------------------


def _endpoints(scenario: Scenario, published: PublishedFigures) -> dict[str, Endpoint]:
    if published.endpoints:
        return {e.name: e for e in published.endpoints}
    deaths = [s.name for s in scenario.states if s.is_death]
    return {e.name: e for e in default_endpoints(scenario.state_names, deaths)}


def _into(scenario: Scenario, endpoint: Endpoint) -> tuple[str, ...]:
    keys = tuple(t.key for t in scenario.transitions
                 if t.to_state in endpoint.events and t.from_state not in endpoint.events)
    if not keys:
        raise CalibrationError(f"endpoint {endpoint.name!r}: no transition enters its event "
                               f"states {endpoint.events}")
    return keys


def default_parameters(scenario: Scenario, published: PublishedFigures) -> list[Parameter]:
    """A level parameter per endpoint with median or landmark figures and an effect parameter
    per hazard-ratio figure, acting on the transitions into the endpoint's event states.

    A transition is moved by one parameter of each kind only: the first endpoint (in figure
    order) that enters it claims it, so that in an illness-death model progression-free
    survival takes the transitions out of the initial state and overall survival the death
    after progression, and the parameters stay identifiable.
    """
    endpoints = _endpoints(scenario, published)
    out: list[Parameter] = []
    claimed: dict[tuple, set[str]] = {}
    for figure in published.figures:
        endpoint_name = getattr(figure, "endpoint", None)
        if endpoint_name is None:
            continue
        if endpoint_name not in endpoints:
            raise CalibrationError(f"figure {figure.label or figure.kind!r}: unknown endpoint "
                                   f"{endpoint_name!r}; expected one of {sorted(endpoints)}")
        if isinstance(figure, HazardRatioFigure):
            kind = ("effect", figure.covariate, figure.level)
            label = (f"log HR {figure.covariate}{f'[{figure.level}]' if figure.level else ''} "
                     f"on {endpoint_name}")
        else:
            kind, label = ("level", None, None), f"log hazard level of {endpoint_name}"
        taken = claimed.setdefault(kind, set())
        keys = tuple(k for k in _into(scenario, endpoints[endpoint_name]) if k not in taken)
        if keys:
            taken.update(keys)
            out.append(Parameter(kind[0], keys, kind[1], kind[2], label))
    return out


def scaled_hazard(hazard: hazards._Family, factor: float) -> hazards._Family | None:
    """The same family with cumulative hazard ``factor * H``, when the family allows it."""
    if isinstance(hazard, hazards.Exponential | hazards.Gompertz):
        return hazard.model_copy(update={"rate": hazard.rate * factor})
    if isinstance(hazard, hazards.Weibull):
        return hazard.model_copy(update={"scale": hazard.scale * factor ** (-1 / hazard.shape)})
    if isinstance(hazard, hazards.PiecewiseConstant):
        return hazard.model_copy(update={"rates": [r * factor for r in hazard.rates]})
    return None


def apply(scenario: Scenario, parameters: Sequence[Parameter], values: np.ndarray) -> Scenario:
    """``scenario`` with the parameters applied (levels in the family where it is closed under
    a hazard multiplier, else through every site's hazard ratio)."""
    data = scenario.model_dump(mode="python", by_alias=True)
    level = {t["from"] + "->" + t["to"]: 0.0 for t in data["transitions"]}
    for parameter, value in zip(parameters, values, strict=True):
        for transition in data["transitions"]:
            key = transition["from"] + "->" + transition["to"]
            if key not in parameter.transitions:
                continue
            if parameter.kind == "level":
                level[key] += float(value)
                continue
            effects = transition.setdefault("effects", {})
            if parameter.level is None:
                effects[parameter.covariate] = effects.get(parameter.covariate, 0.0) + value
            else:
                table = dict(effects.get(parameter.covariate, {}))
                table[parameter.level] = table.get(parameter.level, 0.0) + float(value)
                effects[parameter.covariate] = table
    for transition, spec in zip(data["transitions"], scenario.transitions, strict=True):
        key = spec.key
        if level[key] == 0.0:
            continue
        factor = math.exp(level[key])
        scaled = scaled_hazard(spec.hazard, factor)
        if scaled is not None:
            transition["hazard"] = scaled.model_dump()
        else:
            for site in data["sites"]:
                ratios = site.setdefault("hazard_ratios", {})
                ratios[key] = ratios.get(key, 1.0) * factor
    return scenario_from_dict(data, source=f"<calibrated {scenario.name}>")


# -- estimates -------------------------------------------------------------------------------------


def cox_one(time: np.ndarray, event: np.ndarray, x: np.ndarray) -> float:
    """log HR of one covariate by Newton-Raphson on the Cox partial likelihood (Breslow ties;
    the same as Efron's for untied simulated times)."""
    order = np.argsort(-time, kind="stable")
    t, d, x = time[order], event[order].astype(bool), x[order].astype(float)
    last = np.searchsorted(-t, -t, side="right") - 1  # everyone with time >= t is at risk
    beta = 0.0
    for _ in range(50):
        w = np.exp(beta * x)
        s0, s1, s2 = (np.cumsum(w)[last], np.cumsum(w * x)[last], np.cumsum(w * x * x)[last])
        mean = s1[d] / s0[d]
        score = float(np.sum(x[d] - mean))
        information = float(np.sum(s2[d] / s0[d] - mean**2))
        if information <= 0:
            return math.nan
        step = score / information
        beta += float(np.clip(step, -2, 2))
        if abs(step) < 1e-10:
            break
    return beta


def _estimate(figure, frames: dict[str, pl.DataFrame], endpoints: dict[str, Endpoint],
              chain: pl.DataFrame, unit: float) -> float:
    """The synthetic estimate of one figure (on the figure's scale)."""
    if isinstance(figure, TransitionFigure):
        row = chain.filter((pl.col("from_state") == figure.from_state)
                           & (pl.col("to_state") == figure.to_state))
        return float(row["probability"][0]) if row.height else 0.0
    frame = figure.restrict(frames[figure.endpoint])
    if frame.is_empty():
        return math.nan
    if isinstance(figure, HazardRatioFigure):
        column = frame.get_column(figure.covariate)
        if figure.level is None:
            x = column.cast(pl.Float64).to_numpy()
            keep = np.ones(frame.height, bool)
        else:
            text = column.cast(pl.String)
            reference = figure.reference_level
            keep = (text.is_in([figure.level, reference]) if reference else
                    pl.Series([True] * frame.height)).to_numpy()
            x = (text == figure.level).cast(pl.Float64).to_numpy()
        return math.exp(cox_one(frame["time"].to_numpy()[keep],
                                (frame["event"] == 1).to_numpy()[keep], x[keep]))
    endpoint = endpoints[figure.endpoint]
    if endpoint.competing:
        curve = survival.aalen_johansen(frame["time"], frame["event"], cause=1)
        column = "cumulative_incidence"
    else:
        curve = survival.kaplan_meier(frame["time"], frame["event"] == 1)
        column = "survival"
    # The step curve joined by straight lines: under common random numbers its median and
    # landmark values move continuously with the parameters, where the steps would jump.
    times = curve.get_column("time").to_numpy()
    values = curve.get_column(column).to_numpy()
    if isinstance(figure, MedianFigure):
        below = np.flatnonzero(values <= 0.5)
        if below.size == 0 or below[0] == 0:
            return math.inf if below.size == 0 else float(times[0]) / unit
        i = below[0]
        share = (values[i - 1] - 0.5) / (values[i - 1] - values[i])
        return float(times[i - 1] + share * (times[i] - times[i - 1])) / unit
    assert isinstance(figure, LandmarkFigure)
    return float(np.interp(figure.time * unit, times, values))


def _residual(figure, estimate: float) -> float:
    """(estimate - value) / standard error, on the log scale for medians and hazard ratios."""
    if isinstance(figure, MedianFigure | HazardRatioFigure):
        se = math.log(figure.upper / figure.lower) / (2 * Z95) if figure.lower > 0 else 1.0
        if not (estimate > 0 and math.isfinite(estimate)):
            return 10.0 if estimate == math.inf or estimate != estimate else -10.0
        return math.log(estimate / figure.value) / max(se, 1e-6)
    se = max((figure.upper - figure.lower) / (2 * Z95), 1e-6)
    return (estimate - figure.value) / se if math.isfinite(estimate) else 10.0


def estimates(cohort: Cohort, published: PublishedFigures,
              endpoints: dict[str, Endpoint]) -> list[float]:
    """The synthetic estimate of every figure, in order."""
    frames = {name: endpoint_times(cohort, e) for name, e in endpoints.items()}
    chain = transitions.jump_chain(transitions.transition_counts(cohort))
    return [_estimate(f, frames, endpoints, chain, published.days_per_unit)
            for f in published.figures]


# -- the search ------------------------------------------------------------------------------------


def _without_processes(scenario: Scenario) -> Scenario:
    return scenario.model_copy(update={"visits": [], "measurements": [], "drugs": []})


def _label(figure) -> str:
    return figure.label or f"{figure.kind} {getattr(figure, 'endpoint', '')}".strip()


def calibrate(
    scenario: Scenario,
    published: PublishedFigures,
    parameters: Sequence[Parameter] | None = None,
    *,
    n: int = 10_000,
    seed: int = 0,
    ridge: float = 0.05,
    max_evaluations: int = 200,
) -> Calibration:
    """Adjust ``parameters`` (default: :func:`default_parameters`) until the figures of
    ``n`` persons simulated with ``seed`` match ``published``; says which targets it missed."""
    endpoints = _endpoints(scenario, published)
    parameters = list(parameters) if parameters is not None else default_parameters(
        scenario, published)
    if not parameters:
        raise CalibrationError("nothing to calibrate: no figure names an endpoint")
    lean = _without_processes(scenario)
    keys = {t.key for t in scenario.transitions}
    for parameter in parameters:
        unknown = [k for k in parameter.transitions if k not in keys]
        if unknown:
            raise CalibrationError(f"parameter {parameter.label!r}: unknown transition(s) "
                                   f"{unknown}; expected some of {sorted(keys)}")
    cache: dict[bytes, np.ndarray] = {}

    def residuals(values: np.ndarray) -> np.ndarray:
        key = np.round(values, 12).tobytes()
        if key not in cache:
            cohort = MarkovSimulator(apply(lean, parameters, values)).simulate(n, seed)
            found = estimates(cohort, published, endpoints)
            cache[key] = np.array([_residual(f, e) for f, e in zip(published.figures, found,
                                                                   strict=True)]
                                  + list(math.sqrt(ridge) * values))
        return cache[key]

    def jacobian(values: np.ndarray) -> np.ndarray:
        """Forward differences with an absolute step of STEP: simulated estimates are smooth
        over such steps but not over scipy's default ones (1e-8), which see only noise."""
        base = residuals(values)
        columns = []
        for j in range(values.size):
            moved = values.copy()
            moved[j] += STEP
            columns.append((residuals(moved) - base) / STEP)
        return np.column_stack(columns)

    result = optimize.least_squares(residuals, np.zeros(len(parameters)), jac=jacobian,
                                    method="trf", max_nfev=max_evaluations)
    calibrated = apply(scenario, parameters, result.x)
    report = compare_published(MarkovSimulator(_without_processes(calibrated)).simulate(n, seed),
                               published, seed=seed, figures=False)
    targets = []
    moved = {k for p in parameters for k in p.transitions}
    for figure, check in zip(published.figures, report.checks, strict=True):
        reason = ""
        if check.failed:
            endpoint = endpoints.get(getattr(figure, "endpoint", None) or "")
            acting = endpoint is not None and set(_into(scenario, endpoint)) & moved
            reason = ("no calibrated parameter acts on it" if not acting else
                      f"best compromise with the other targets and the ridge leaves it at "
                      f"{check.metric:.4g}, outside [{figure.lower:g}, {figure.upper:g}]")
        targets.append(TargetResult(_label(figure), figure.value, figure.lower, figure.upper,
                                    float(check.metric), not check.failed, reason))
    notes = [] if result.success else [f"optimiser stopped: {result.message}"]
    return Calibration(calibrated, parameters, result.x, targets, len(cache), notes)


def describe(calibration: Calibration) -> list[dict[str, Any]]:
    """Parameter table: label, kind, transitions, fitted log multiplier."""
    return [{"label": p.label, "kind": p.kind, "transitions": list(p.transitions),
             "value": float(v)} for p, v in zip(calibration.parameters, calibration.values,
                                                strict=True)]
