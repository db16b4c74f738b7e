"""Differentially private fit of the multi-state model: ``MultiStateModel(epsilon=E).fit``.

Public, not protected: the number of persons, the state names, the site names, the covariate
names, each categorical covariate's set of levels and whether each numeric covariate takes
whole numbers only (a data dictionary's content), and the fixed grids below. Everything
computed from persons' values (which moves occur, hazards, effects, shares, ranges, index
dates, censoring, covariate laws and their dependence) is released through a Gaussian
mechanism and counted by one accountant; the model is post-processing of those releases only.

Neighbouring datasets: one person replaced by another (bounded DP; so the number of persons
is public). Sensitivities are those of a replacement: sqrt(2) for a histogram in which each
person is one count, sqrt(2) times the bound of a non-negative contribution, twice the bound
of a signed one.

What a person contributes is bounded first (:mod:`.data`): a path is followed until it
revisits a state or makes ``min(states - 1, 5)`` moves and is cut at a released horizon;
numbers are clipped to released bounds and scaled to [-1, 1]. Then:

- :mod:`.followup`: persons per site and initial state and how paths end; the horizon; per
  site index-date and life-table censoring quantiles from tree histograms;
- :mod:`.covariates`: bounds, per-site marginals (the :mod:`trajectories.fit.synthesis`
  covariate model) and the copula from noisy counts and noisy clipped score products;
- :mod:`.rates`: moves kept above a noise threshold, piecewise-constant baselines from noisy
  events and person-time; :mod:`.effects`: log hazard ratios from the profile likelihood
  expanded to third order in released time-weighted moments of the covariates;
- :mod:`.accounting`: the budget split (``accounting.WEIGHTS``), one RDP ledger through
  opacus, the (epsilon, delta) actually spent, never more than asked.

Not fitted under DP: visits, measurements and drugs (the model has none), and the
parametric censoring option; ``covariate_draw='resample'`` is refused (it copies rows).
The noise comes from numpy's generator in floating point: not hardened against the
floating-point attacks on the Laplace and Gaussian mechanisms (Mironov 2012, "On significance
of the least significant bits for differential privacy", CCS); the discrete Gaussian of
Canonne, Kamath and Steinke 2020 would close that gap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from trajectories.cohort import Cohort, fit_part, state_names
from trajectories.cohort.files import FINGERPRINT_WITHHELD
from trajectories.errors import FitError
from trajectories.fit.covariates import baseline_rows
from trajectories.fit.private.accounting import Accountant, Budget
from trajectories.fit.private.covariates import (
    COPULA_MAX_SD,
    copula_sd,
    fit_covariates,
    public_schema,
)
from trajectories.fit.private.data import MAX_TRANSITIONS, bounded_spells
from trajectories.fit.private.followup import (
    release_followup,
    release_horizon,
    release_structure,
)
from trajectories.fit.private.mechanisms import Mechanisms
from trajectories.fit.private.rates import fit_hazards
from trajectories.fit.processes import Processes

if TYPE_CHECKING:
    from trajectories.fit.model import MultiStateModel

"""The reference fingerprint's stand-in: a hash of the rows would single the data set out."""
INITIAL_FALSE_POSITIVE = 0.01
PUBLIC = ["the number of persons", "state names", "site names", "covariate names",
          "categorical covariates' level sets", "which numeric covariates are whole numbers",
          "the calendar range 1900-2100 and the fixed range grid (octaves and quarter-octaves)"]


def default_delta(n: int) -> float:
    """``min(1e-5, n ** -1.1)``, the sequence model's default: below 1 / n, so that releasing
    one person's record outright is not within the guarantee."""
    return float(min(1e-5, max(n, 1) ** -1.1))


def _groups(schema: list, sites: int, site_effects: bool, horizon: bool = True) -> list[str]:
    groups = ["structure", *(["horizon"] if horizon else []), "index_dates", "censoring",
              "event_totals", "person_time", "events"]
    if any(s.kind == "numeric" for s in schema):
        groups.append("covariate_bounds")
    if schema:
        groups.append("covariate_marginals")
    if schema or (sites > 1 and site_effects):
        groups += ["event_covariates", "covariate_moments"]
    if len(schema) >= 2:
        groups.append("copula")
    return groups


def fit_private(model: MultiStateModel, cohort: Cohort, rng: np.random.Generator | None = None,
                noise: bool = True, trace: list | None = None) -> None:
    """Fill ``model``'s learned attributes from releases of ``cohort`` under the model's
    (epsilon, delta). ``rng``: the noise's generator (default: fresh OS entropy). Test hooks:
    ``noise`` False releases exact values (and still charges the budget); ``trace`` collects
    (what, exact, released) of every release."""
    n = cohort.n_persons
    if n == 0:
        raise FitError("reference cohort has no persons")
    if model.censoring != "empirical":
        raise FitError("censoring='parametric' is not available with epsilon: the private "
                       "fit releases empirical index-date and censoring quantiles")
    if model.covariate_draw == "resample":
        raise FitError("covariate_draw='resample' copies real persons' rows: not available "
                       "with epsilon (the private fit draws from released marginals)")
    notes: list[str] = []
    cohort, split, note = fit_part(cohort, model.holdout_fraction, model.holdout_seed)
    notes += [note] if note else []
    n = cohort.n_persons
    # persons chosen by a hash of their ids: the number fitted on is public
    public_extra = [] if split is None else [
        "the number of persons fitted on (the holdout split is a function of ids alone)"]
    delta = default_delta(n) if model.delta is None else float(model.delta)
    if delta >= 1.0 / n:
        notes.append(f"delta {delta:g} is not below 1/n = {1 / n:.3g}: a guarantee that allows "
                     "releasing some person's data outright")
    accountant = Accountant(model.epsilon, delta)
    mechanisms = Mechanisms(accountant, rng if rng is not None else np.random.default_rng(),
                            noise, trace)

    states = sorted(state_names(cohort))
    rows = baseline_rows(cohort, model.covariates)
    names = [c for c in rows.columns if c not in ("person_id", "site")]
    schema = public_schema(rows, names)
    public_sites = sorted(rows.get_column("site").unique().to_list())
    site_effects = model.site_effects != "none"
    groups = _groups(schema, len(public_sites), site_effects, model.horizon_days is None)
    if "copula" in groups:
        trial = Budget(groups)
        predicted = copula_sd(n, len(schema), accountant.sigma(1.0, trial.share("copula")))
        if predicted > COPULA_MAX_SD:
            groups.remove("copula")
            notes.append(f"no copula: at this epsilon its correlations' noise sd would be about "
                         f"{predicted:.2g} (at most {COPULA_MAX_SD}); covariates are drawn "
                         "independently")
    budget = Budget(groups)

    position = {s: i for i, s in enumerate(public_sites)}
    site_index = np.array([position[s] for s in rows.get_column("site").to_list()],
                          dtype=np.int64)
    structure = release_structure(mechanisms, budget, cohort, site_index, len(public_sites),
                                  states)
    order = sorted(range(len(public_sites)), key=lambda i: (-structure.site_counts[i],
                                                             public_sites[i]))
    sites = [public_sites[i] for i in order]  # largest (released) first: the reference site
    site_counts = structure.site_counts[order]
    site_index = np.argsort(order)[site_index]
    if model.horizon_days is not None:  # given, public: no release
        horizon = float(model.horizon_days)
        public_extra.append(f"the follow-up horizon ({horizon:g} days, given)")
    else:
        horizon = release_horizon(
            mechanisms, budget, cohort.persons.get_column("followup_end").to_numpy().astype(float))
    specs, covariate_model, design = fit_covariates(
        mechanisms, budget, rows, schema, site_index, sites, site_counts, model.centers,
        site_effects, notes)
    censoring = release_followup(mechanisms, budget, cohort, site_index, sites, site_counts,
                                 horizon, notes)

    sigma_structure = accountant.sigma(2.0, budget.share("structure"))
    z = float(stats.norm.isf(INITIAL_FALSE_POSITIVE / len(states)))
    initial_counts = np.where(structure.initial_counts >= max(1.0, z * sigma_structure),
                              structure.initial_counts, 0.0)
    if initial_counts.sum() <= 0:
        initial_counts = (structure.initial_counts == structure.initial_counts.max()) * 1.0
    initial = [i for i in np.argsort(-initial_counts, kind="stable") if initial_counts[i] > 0]
    reset = np.array([model.clock == "reset" or (model.clock == "auto" and i not in initial)
                      for i in range(len(states))])
    max_transitions = max(1, min(len(states) - 1, MAX_TRANSITIONS))
    spells = bounded_spells(cohort, states, horizon, max_transitions)
    transitions = fit_hazards(mechanisms, budget, spells, states, reset, horizon, design,
                              max_transitions, notes)

    # Only a state that is left can be initial (noise may have let an absorbing one pass).
    sources = {states.index(t.source) for t in transitions}
    initial = [i for i in initial if i in sources]
    if not initial:
        first = max(sources, key=lambda i: (structure.initial_counts[i], -i))
        initial, initial_counts = [first], np.eye(len(states))[first]
    _set_states(model, transitions, states, initial, initial_counts, structure.endings)
    model.notes_ = [f"fitted with differential privacy (epsilon {model.epsilon:g}, delta "
                    f"{delta:.3g}, one person replaced): every estimate is post-processing of "
                    "noisy releases; see privacy in fit.json", *notes]
    if not (model.families in ("auto", "piecewise") or model.families == ["piecewise"]):
        model.notes_.append("families: the private fit uses the piecewise-constant family only")
    model.notes_.append("visits, measurements and drugs are not fitted with differential "
                        "privacy: the model has none")
    model.reference_ = {"n_persons": n, "generator": cohort.manifest.generator,
                        "fingerprint": FINGERPRINT_WITHHELD, "split": split}
    model.specs_ = specs
    model.effect_specs_ = [s for s in specs if any(c[0] == s.name for c in design.columns)]
    model.covariate_model_ = covariate_model
    model.notes_ += covariate_model.notes
    model.baseline_rows_ = None
    model.sites_ = sites
    model.site_shares_ = list(np.maximum(site_counts, 0.5) / np.maximum(site_counts, 0.5).sum())
    model.censoring_ = censoring
    model.first_index_date_ = min(f.index_dates[0] for f in censoring.values())
    model.processes_ = Processes(notes=[])
    model.privacy_ = _record(model, accountant, budget, horizon, max_transitions, design)
    model.privacy_["public"] += public_extra
    if model.site_effects == "shrunk":
        model._shrink_sites()


def _set_states(model: MultiStateModel, transitions: list, states: list[str],
                initial: list[int], initial_counts: np.ndarray, endings: np.ndarray) -> None:
    """States reachable from the initial ones through kept moves (breadth first, then by
    name), their flags from the released endings, and the moves from reachable states."""
    by_source: dict[str, list] = {}
    for tr in transitions:
        by_source.setdefault(tr.source, []).append(tr)
    order = [states[i] for i in initial]
    queue = list(order)
    while queue:
        source = queue.pop(0)
        for tr in sorted(by_source.get(source, []), key=lambda t: t.target):
            if tr.target not in order:
                order.append(tr.target)
                queue.append(tr.target)
    rank = {s: i for i, s in enumerate(order)}
    kept = sorted((tr for tr in transitions if tr.source in rank),
                  key=lambda t: (rank[t.source], rank[t.target]))
    model.transitions_ = kept
    model.moves_ = [(t.source, t.target) for t in kept]
    model.transient_ = sorted({t.source for t in kept}, key=rank.get)
    model.state_order_ = order
    model.states_ = []
    code = {s: i for i, s in enumerate(states)}
    for name in order:
        death, absorbed, censored = endings[code[name]]
        absorbing = name not in model.transient_ and death + absorbed > censored
        model.states_.append({"name": name, "absorbing": bool(absorbing),
                              **({"death": bool(death >= absorbed)} if absorbing else {})})
    model.states_.sort(key=lambda s: s["absorbing"])
    total = float(sum(initial_counts[i] for i in initial))
    model.initial_ = {states[i]: float(initial_counts[i]) / total for i in initial}


def _record(model: MultiStateModel, accountant: Accountant, budget: Budget, horizon: float,
            max_transitions: int, design: Any) -> dict[str, Any]:
    spent = accountant.epsilon_spent()
    return {
        "epsilon": accountant.epsilon,
        "delta": accountant.delta,
        "epsilon_spent": spent,
        "rho": accountant.rho,
        "rho_spent": accountant.rho_spent,
        "accountant": "rdp (opacus)",
        "neighbouring": "one person replaced by another (bounded DP: the number of persons "
                        "is public)",
        "budget": budget.record(),
        "releases": [r.record() for r in accountant.releases],
        "public": list(PUBLIC),
        "bounds": {"horizon_days": horizon, "max_transitions": max_transitions,
                   "design_columns": [n if lv is None else f"{n}[{lv}]"
                                      for n, lv in design.columns],
                   "covariate_norm_squared": design.q},
    }


__all__ = ["default_delta", "fit_private"]
