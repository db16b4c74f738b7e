"""Checks across the scenario's tables, one function per concern; each returns its problems
as messages naming the entry at fault (``Scenario`` joins them into one error)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from trajectories.scenario.models import (
    COPULA_TOLERANCE,
    CategoricalCovariate,
    Site,
    UniformCovariate,
    check_distribution,
    numeric_bounds,
)

if TYPE_CHECKING:
    from trajectories.scenario.schema import Scenario


def state_problems(scenario: Scenario) -> list[str]:
    """States: unique names, at least one transient; initial states transient, their
    probabilities summing to one."""
    names = [s.name for s in scenario.states]
    problems = [f"states: {n!r} is declared twice" for n in sorted(set(names)) if
                names.count(n) > 1]
    transient = {s.name for s in scenario.states if not s.absorbing}
    if not transient:
        problems.append("states: at least one state must be transient (absorbing = false)")
    initial = (
        {scenario.initial_state: 1.0} if isinstance(scenario.initial_state, str) else
        scenario.initial_state
    )
    for name in initial:
        if name not in transient:
            problems.append(
                f"initial_state: {name!r} is not a transient state; expected one of "
                f"{sorted(transient)}"
            )
    if isinstance(scenario.initial_state, dict):
        try:
            check_distribution(scenario.initial_state, "initial_state probabilities")
        except ValueError as error:
            problems.append(str(error))
    return problems


def transition_problems(scenario: Scenario) -> list[str]:
    """Transitions: known states, none out of an absorbing one, a change of state, each
    declared once, effects on declared covariates."""
    by_name = {s.name: s for s in scenario.states}
    problems, seen = [], set()
    for i, tr in enumerate(scenario.transitions):
        where = f"transitions[{i}] ({tr.key})"
        for end, name in (("from", tr.from_state), ("to", tr.to_state)):
            if name not in by_name:
                problems.append(
                    f"{where}: unknown state {name!r} in '{end}'; expected one of "
                    f"{sorted(by_name)}"
                )
        if tr.from_state in by_name and by_name[tr.from_state].absorbing:
            problems.append(f"{where}: {tr.from_state!r} is absorbing; nothing may leave it")
        if tr.from_state == tr.to_state:
            problems.append(f"{where}: a transition must change state")
        if tr.key in seen:
            problems.append(f"{where}: declared twice")
        seen.add(tr.key)
        problems += effect_problems(scenario, where, tr.effects)
    return problems


def effect_problems(scenario: Scenario, where: str, effects: dict) -> list[str]:
    """One transition's effects: declared covariates; a number for a numeric one, a table of
    non-reference levels for a categorical one."""
    problems = []
    for name, effect in effects.items():
        covariate = scenario.covariates.get(name)
        if covariate is None:
            problems.append(
                f"{where}: effect on unknown covariate {name!r}; expected one of "
                f"{sorted(scenario.covariates)}"
            )
        elif isinstance(covariate, CategoricalCovariate):
            if not isinstance(effect, dict):
                problems.append(
                    f"{where}: effect of categorical {name!r} must be a table level -> "
                    f"log HR, got {effect!r}"
                )
                continue
            for level in effect:
                if level not in covariate.levels or level == covariate.reference_level:
                    problems.append(
                        f"{where}: effect of {name!r} names level {level!r}; expected one "
                        f"of the non-reference levels "
                        f"{[lv for lv in covariate.levels if lv != covariate.reference_level]}"
                    )
        elif isinstance(effect, dict):
            problems.append(f"{where}: effect of numeric {name!r} must be a number")
    return problems


def site_problems(scenario: Scenario) -> list[str]:
    """Sites: unique names, shares summing to one (or sizes, not a mix); per site, the
    transitions it modifies, its enrolment and follow-up, its case-mix."""
    problems = []
    names = [s.name for s in scenario.sites]
    problems += [f"sites: {n!r} is declared twice" for n in sorted(set(names))
                 if names.count(n) > 1]
    with_share = [s.share is not None for s in scenario.sites]
    with_size = [s.size is not None for s in scenario.sites]
    if any(a and b for a, b in zip(with_share, with_size, strict=True)) or not (
        all(with_share) or all(with_size)
    ):
        problems.append("sites: give every site a share, or every site a size, not a mix")
    elif all(with_share):
        try:
            check_distribution({s.name: s.share for s in scenario.sites}, "sites' shares")
        except ValueError as error:
            problems.append(str(error))
    keys = {tr.key for tr in scenario.transitions}
    for site in scenario.sites:
        where = f"sites ({site.name})"
        for key in list(site.hazard_ratios) + list(site.frailty):
            if key not in keys:
                problems.append(
                    f"{where}: unknown transition {key!r}; expected one of {sorted(keys)}"
                )
        problems += site_calendar_problems(scenario, site, where)
        problems += case_mix_problems(scenario, site, where)
        problems += site_covariate_problems(scenario, site, where)
    return problems


def site_covariate_problems(scenario: Scenario, site: Site, where: str) -> list[str]:
    """One site's own marginals: of declared covariates, numeric for a numeric one, the same
    levels for a categorical one, age kept at or above 0, no case_mix for the same one."""
    problems = []
    for name, own in site.covariates.items():
        declared = scenario.covariates.get(name)
        if declared is None:
            problems.append(f"{where}: covariates names unknown covariate {name!r}; declared: "
                            f"{sorted(scenario.covariates)}")
            continue
        if name in site.case_mix:
            problems.append(f"{where}: give covariates.{name} or case_mix.{name}, not both")
        if isinstance(declared, CategoricalCovariate) != isinstance(own, CategoricalCovariate):
            problems.append(f"{where}: covariates.{name} is {own.kind} but the declared "
                            f"{name!r} is {declared.kind}; a site may change the marginal, "
                            "not whether the covariate is a number or a category")
        elif isinstance(own, CategoricalCovariate) and list(own.levels) != list(declared.levels):
            problems.append(f"{where}: covariates.{name} has levels {list(own.levels)}; the "
                            f"declared {name!r} has {list(declared.levels)} (same, same order)")
        elif name == "age" and numeric_bounds(own)[0] < 0:
            problems.append(f"{where}: covariates.age goes below 0")
    return problems


def site_calendar_problems(scenario: Scenario, site: Site, where: str) -> list[str]:
    """One site's enrolment and follow-up: empirical knots or parametric, not both; the window
    in order; the data cut-off not before enrolment (or the last index date) ends."""
    problems = []
    window = site.enrolment_start is not None or site.enrolment_end is not None
    if site.index_dates is not None and window:
        problems.append(f"{where}: give enrolment_start / enrolment_end or index_dates, "
                        "not both")
    parametric = (site.followup_days is not None
                  or site.loss_to_followup_per_year is not None)
    if site.censoring is not None and parametric:
        problems.append(f"{where}: give followup_days / loss_to_followup_per_year or "
                        "censoring, not both")
    start = site.enrolment_start or scenario.calendar.enrolment_start
    end = site.enrolment_end or scenario.calendar.enrolment_end
    if end < start:
        problems.append(f"{where}: enrolment ends ({end}) before it starts ({start})")
    empirical = scenario.site_index_dates(site)
    if empirical is not None:
        end = empirical.quantiles[-1]
    cutoff = scenario.calendar.data_cutoff
    if cutoff is not None and cutoff < end:
        ends = "enrolment ends" if empirical is None else "the last index date"
        problems.append(
            f"{where}: calendar.data_cutoff ({cutoff}) falls before {ends} ({end})"
        )
    return problems


def case_mix_problems(scenario: Scenario, site: Site, where: str) -> list[str]:
    """One site's case-mix: declared covariates, a number for a numeric one, level
    probabilities summing to one for a categorical one, uniform age kept at or above 0."""
    problems = []
    for name, shift in site.case_mix.items():
        covariate = scenario.covariates.get(name)
        if (name == "age" and isinstance(covariate, UniformCovariate)
                and isinstance(shift, float) and covariate.low + shift < 0):
            problems.append(f"{where}: case_mix shifts uniform 'age' below 0 "
                            f"(low {covariate.low} + shift {shift})")
        if covariate is None:
            problems.append(f"{where}: case_mix names unknown covariate {name!r}")
        elif isinstance(covariate, CategoricalCovariate):
            if not isinstance(shift, dict) or set(shift) != set(covariate.levels):
                problems.append(
                    f"{where}: case_mix for {name!r} must give a probability for each "
                    f"level {list(covariate.levels)}"
                )
            else:
                try:
                    check_distribution(shift, f"{where}: case_mix for {name!r}")
                except ValueError as error:
                    problems.append(str(error))
        elif isinstance(shift, dict):
            problems.append(f"{where}: case_mix for numeric {name!r} must be a number")
    return problems


def calendar_problems(scenario: Scenario) -> list[str]:
    """The default enrolment window in order."""
    if scenario.calendar.enrolment_end < scenario.calendar.enrolment_start:
        return ["calendar: enrolment_end is before enrolment_start"]
    return []


def process_problems(scenario: Scenario) -> list[str]:
    """Visits, measurements and drugs: transient states, visit types declared once and known,
    measurement bounds in order, drug conditions on declared categorical levels."""
    transient = {s.name for s in scenario.states if not s.absorbing}
    problems = []

    def unknown(where: str, states) -> None:
        for state in states:
            if state not in transient:
                problems.append(
                    f"{where}: {state!r} is not a transient state; expected one of "
                    f"{sorted(transient)}"
                )

    visit_types = [v.type for v in scenario.visits]
    for v in scenario.visits:
        unknown(f"visits ({v.type})", v.rates_per_year)
    problems += [f"visits: type {t!r} is declared twice" for t in sorted(set(visit_types))
                 if visit_types.count(t) > 1]
    for m in scenario.measurements:
        where = f"measurements ({m.name})"
        unknown(where, list(m.mean) + list(m.trend_per_year))
        for t in m.visit_types or []:
            if t not in visit_types:
                problems.append(f"{where}: unknown visit type {t!r}; expected {visit_types}")
        if not m.min < m.max:
            problems.append(f"{where}: min must be below max")
    for d in scenario.drugs:
        where = f"drugs ({d.name})"
        unknown(where, d.on_entry)
        for name, levels in d.when.items():
            covariate = scenario.covariates.get(name)
            if not isinstance(covariate, CategoricalCovariate):
                problems.append(f"{where}: 'when' needs a categorical covariate, got {name!r}")
            elif set(levels) - set(covariate.levels):
                problems.append(
                    f"{where}: 'when' {name!r} names unknown levels "
                    f"{sorted(set(levels) - set(covariate.levels))}"
                )
    return problems


def concept_problems(scenario: Scenario) -> list[str]:
    """Concept mappings only for event codes the scenario produces."""
    codes = set(scenario.event_codes())
    return [
        f"concepts: {code!r} is not an event this scenario produces; expected one of "
        f"{sorted(codes)}"
        for code in scenario.concepts
        if code not in codes
    ]


def endpoint_problems(scenario: Scenario) -> list[str]:
    """Endpoints name only declared states."""
    problems = []
    for i, endpoint in enumerate(scenario.endpoints):
        named = list(endpoint.get("events", [])) + list(endpoint.get("competing", []))
        origin = endpoint.get("origin", "index")
        named += [] if origin == "index" else [origin]
        for state in named:
            if state not in scenario.state_names:
                problems.append(
                    f"endpoints[{i}] ({endpoint.get('name', '?')}): unknown state "
                    f"{state!r}; expected one of {scenario.state_names}"
                )
    return problems


def copula_problems(scenario: Scenario) -> list[str]:
    """The copula: two or more distinct declared covariates not drawn from baseline rows; a
    square, unit-diagonal, symmetric, positive definite correlation matrix."""
    if scenario.copula is None:
        return []
    names, matrix = scenario.copula.covariates, scenario.copula.correlation
    problems = [f"copula: covariates names {n!r} twice" for n in sorted(set(names))
                if names.count(n) > 1]
    if len(names) < 2:
        problems.append(f"copula: covariates needs at least two covariates, got {names}")
    for name in names:
        if name not in scenario.covariates:
            problems.append(f"copula: covariates names {name!r}, which is not a declared "
                            f"covariate; declared: {sorted(scenario.covariates)}")
        elif name in scenario.baseline_columns():
            problems.append(f"copula: covariates names {name!r}, which [baseline] rows "
                            "replace; leave it out of one of them")
    k = len(names)
    if len(matrix) != k or any(len(row) != k for row in matrix):
        problems.append(f"copula: correlation must be {k} x {k} (a row and a column per "
                        f"entry of covariates), got rows of lengths {[len(r) for r in matrix]}")
        return problems
    r = np.asarray(matrix, dtype=float).reshape(k, k)
    if np.any(np.abs(np.diag(r) - 1.0) > COPULA_TOLERANCE):
        problems.append(f"copula: correlation must have 1 on its diagonal, got "
                        f"{np.diag(r).tolist()}")
    asymmetric = np.argwhere(np.abs(r - r.T) > COPULA_TOLERANCE)
    if asymmetric.size:
        i, j = asymmetric[0]
        problems.append(f"copula: correlation must be symmetric; [{i}][{j}] = {r[i, j]} but "
                        f"[{j}][{i}] = {r[j, i]}")
    if not problems and k:
        try:
            np.linalg.cholesky(r)
        except np.linalg.LinAlgError:
            problems.append(f"copula: correlation must be positive definite; its smallest "
                            f"eigenvalue is {np.linalg.eigvalsh(r)[0]:.3g}")
    return problems
