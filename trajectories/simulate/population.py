"""Baseline draws for a block of persons: site, covariates (drawn, optionally joined by a
Gaussian copula, or whole reference rows of the person's site), dates (a uniform enrolment
window or empirical quantile knots), censoring (window and loss, or empirical quantile knots),
hazard multipliers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from trajectories.scenario.schema import (
    CategoricalCovariate,
    Copula,
    DiscreteCovariate,
    NormalCovariate,
    QuantileCovariate,
    UniformCovariate,
)
from trajectories.simulate.plan import Plan

DAYS_PER_YEAR = 365.25
EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal(): numpy day 0


@dataclass
class Population:
    """Baseline of ``m`` persons; arrays are aligned by local person index."""

    site: np.ndarray  # int site index
    numeric: dict[str, np.ndarray]  # numeric covariate -> values
    categorical: dict[str, np.ndarray]  # categorical covariate -> level index
    index_day: np.ndarray  # days since 1970-01-01 (int64)
    birth_day: np.ndarray
    censor_time: np.ndarray  # days since index at which follow-up stops if nothing absorbs
    lost: np.ndarray  # True when censor_time is a loss to follow-up
    reason_unknown: np.ndarray  # True when an empirical censoring time ends follow-up early
    initial_state: np.ndarray
    multipliers: np.ndarray  # (m, transitions) hazard multipliers

    @property
    def size(self) -> int:
        return self.site.size


def _sites(plan: Plan, start: int, stop: int, rng: np.random.Generator) -> np.ndarray:
    sites = plan.scenario.sites
    if sites[0].size is not None:
        bounds = np.cumsum([s.size for s in sites])
        return np.searchsorted(bounds, np.arange(start, stop), side="right")
    cumulative = np.cumsum([s.share for s in sites])
    return np.minimum(np.searchsorted(cumulative, rng.random(stop - start), side="right"),
                      len(sites) - 1)


def _numeric(spec, shift: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The numeric marginal's inverse CDF at ``u``, moved by the case-mix ``shift``."""
    if isinstance(spec, UniformCovariate):
        return spec.low + shift + u * (spec.high - spec.low)
    if isinstance(spec, DiscreteCovariate):
        cumulative = np.cumsum(spec.probabilities)
        pick = np.minimum(np.searchsorted(cumulative, u, side="right"), len(spec.values) - 1)
        return np.asarray(spec.values)[pick] + shift
    if isinstance(spec, QuantileCovariate):
        value = np.interp(u, np.linspace(0.0, 1.0, len(spec.quantiles)), spec.quantiles)
        return (np.round(value) if spec.integer else value) + shift
    assert isinstance(spec, NormalCovariate)
    mean = spec.mean + shift
    low, high = ndtr((spec.min - mean) / spec.sd), ndtr((spec.max - mean) / spec.sd)
    return np.clip(mean + spec.sd * ndtri(low + u * (high - low)), spec.min, spec.max)


def _site_numeric(plan: Plan, name: str, site: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A numeric covariate at ``u``: each person's site marginal (its own, else the declared
    one) with the site's case-mix shift."""
    declared = plan.scenario.covariates[name]
    shift = plan.site_mean_shift(name)[site]
    own = [s.covariates.get(name) for s in plan.scenario.sites]
    if not any(own):
        return _numeric(declared, shift, u)
    values = np.empty(u.size)
    for j, spec in enumerate(own):
        mine = site == j
        values[mine] = _numeric(spec or declared, shift[mine], u[mine])
    return values


def _copula_uniforms(copula: Copula, m: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Covariate -> uniforms Phi(Z) with Z = N(0, 1)^(m x k) @ L.T: correlated normal scores.

    The (m, k) normals come from one call, row by row (person by person)."""
    z = rng.standard_normal((m, len(copula.covariates))) @ copula.cholesky().T
    # Phi(z) rounds to 1 beyond z ~ 8.3; keep u < 1 as rng.random does.
    u = np.minimum(ndtr(z), np.nextafter(1.0, 0.0))
    return {name: u[:, j] for j, name in enumerate(copula.covariates)}


def _dates(plan: Plan, site: np.ndarray, age: np.ndarray, u: np.ndarray):
    scenario = plan.scenario
    calendar = scenario.calendar
    start = np.array([(s.enrolment_start or calendar.enrolment_start).toordinal()
                      for s in scenario.sites])
    end = np.array([(s.enrolment_end or calendar.enrolment_end).toordinal()
                    for s in scenario.sites])
    span = end - start + 1
    index_day = (start[site] + np.floor(u * span[site]).astype(np.int64)) - EPOCH_ORDINAL
    for j, spec in enumerate(scenario.sites):
        law = scenario.site_index_dates(spec)
        if law is not None:
            # The quantile function, linear between knots, at the same uniform; nearest date.
            mine = site == j
            day = np.interp(u[mine], law.levels(), law.ordinals())
            index_day[mine] = np.floor(day + 0.5).astype(np.int64)
    birth_day = index_day - np.round(age * DAYS_PER_YEAR).astype(np.int64)
    return index_day, birth_day


def _censoring(plan: Plan, site, index_day, rng: np.random.Generator):
    """Potential censoring time per person, whether it is a loss to follow-up, and whether its
    reason is unknown (an empirical time before the site's maximum follow-up).

    Every person draws one standard exponential E, whatever the site's censoring: a window
    site divides it by its loss rate; an empirical site evaluates its quantile function at
    the uniform 1 - exp(-E). A scenario without empirical censoring draws what it always did.
    """
    scenario = plan.scenario
    followup = np.array([s.followup_days or scenario.followup.max_days for s in scenario.sites])
    admin = followup[site].astype(float)
    if scenario.calendar.data_cutoff is not None:
        cutoff_day = scenario.calendar.data_cutoff.toordinal() - EPOCH_ORDINAL
        admin = np.minimum(admin, (cutoff_day - index_day).astype(float))
    loss_rate = np.array([
        scenario.followup.loss_to_followup_per_year
        if s.loss_to_followup_per_year is None else s.loss_to_followup_per_year
        for s in scenario.sites
    ]) / DAYS_PER_YEAR
    draw = rng.standard_exponential(site.size)
    with np.errstate(divide="ignore"):
        loss_time = draw / loss_rate[site]
    lost = loss_time < admin
    censor_time = np.where(lost, loss_time, admin)
    unknown = np.zeros(site.size, dtype=bool)
    for j, spec in enumerate(scenario.sites):
        law = scenario.site_censoring(spec)
        if law is None:
            continue
        mine = site == j
        u = -np.expm1(-draw[mine])  # uniform on [0, 1)
        time = np.where(u > law.levels[-1], law.max_days, np.interp(u, law.levels, law.days))
        cap = np.full(time.size, np.inf)
        if scenario.calendar.data_cutoff is not None:
            cap = (cutoff_day - index_day[mine]).astype(float)
        censor_time[mine] = np.minimum(time, cap)
        lost[mine] = False
        unknown[mine] = (time < law.max_days) & (time < cap)
    return censor_time, lost, unknown


def _multipliers(plan: Plan, pop_site, numeric, categorical, rng: np.random.Generator):
    scenario = plan.scenario
    log_m = np.log(plan.site_hazard_ratios[pop_site])  # (m, K)
    for t in plan.transitions:
        # Summed in name order: a scenario read back from TOML (which moves tables after plain
        # values) gives the same floating-point multipliers, hence the same cohort.
        for name, effect in sorted(t.spec.effects.items()):
            spec = scenario.covariates[name]
            if isinstance(spec, CategoricalCovariate):
                levels = list(spec.levels)
                by_level = np.array([effect.get(level, 0.0) for level in levels])
                log_m[:, t.index] += by_level[categorical[name]]
            else:
                log_m[:, t.index] += effect * (numeric[name] - spec.center)
    variance = plan.site_frailty_variance[pop_site]  # (m, K)
    for k in np.flatnonzero(variance.any(axis=0)):
        theta = variance[:, k]
        has = theta > 0
        frailty = np.ones(pop_site.size)
        frailty[has] = rng.gamma(1.0 / theta[has], theta[has])
        log_m[:, k] += np.log(frailty)
    return np.exp(log_m)


def draw_population(plan: Plan, start: int, stop: int, rng: np.random.Generator) -> Population:
    """Draw the baseline of global persons [start, stop) from the block's stream ``rng``.

    Each declared covariate, in declared order, is its inverse CDF at a uniform ``u`` (its
    site's case-mix applied). Without ``[copula]`` each draws ``u = rng.random(m)`` in turn;
    with one, the first copula covariate (in declared order) draws the (m, k) correlated
    normals in its place and every copula covariate takes its column of ``Phi(Z)``, while the
    others draw as before. A scenario without a copula draws exactly what it always did.
    """
    scenario = plan.scenario
    site = _sites(plan, start, stop, rng)
    m = site.size
    numeric, categorical = {}, {}
    linked = set() if scenario.copula is None else set(scenario.copula.covariates)
    joint: dict[str, np.ndarray] | None = None
    for name, spec in scenario.covariates.items():
        if name in linked:
            if joint is None:
                joint = _copula_uniforms(scenario.copula, m, rng)
            u = joint[name]
        else:
            u = rng.random(m)
        if isinstance(spec, CategoricalCovariate):
            cumulative = plan.site_level_cumulative(name)[site]
            categorical[name] = (u[:, None] >= cumulative[:, :-1]).sum(axis=1)
        else:
            numeric[name] = _site_numeric(plan, name, site, u)
    if plan.baseline is not None:
        # After the declared draws, one uniform per person picks a whole row of its site.
        pick = plan.baseline.pick(site, rng.random(m))
        numeric.update({name: values[pick] for name, values in plan.baseline.numeric.items()})
        categorical.update({name: levels[pick]
                            for name, levels in plan.baseline.categorical.items()})
    index_day, birth_day = _dates(plan, site, numeric["age"], rng.random(m))
    censor_time, lost, reason_unknown = _censoring(plan, site, index_day, rng)
    initial_cumulative = np.cumsum(plan.initial_probabilities)
    initial = np.minimum(
        np.searchsorted(initial_cumulative, rng.random(m), side="right"),
        len(plan.state_names) - 1,
    )
    # States with probability 0 are never drawn: searchsorted(side="right") skips them.
    return Population(
        site=site,
        numeric=numeric,
        categorical=categorical,
        index_day=index_day,
        birth_day=birth_day,
        censor_time=censor_time,
        lost=lost,
        reason_unknown=reason_unknown,
        initial_state=initial,
        multipliers=_multipliers(plan, site, numeric, categorical, rng),
    )
