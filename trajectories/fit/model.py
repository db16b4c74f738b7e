"""MultiStateModel: a multi-state scenario learnt from a reference cohort.

``MultiStateModel().fit(cohort)`` reads the state paths, fits one proportional-hazards model per
observed transition (family and clock chosen by AIC, or as asked), the sites' hazard ratios, the
covariates' distributions, censoring and the visit, measurement and drug processes, and turns
them into a :class:`~trajectories.scenario.Scenario`. ``simulate`` is exactly
``MarkovSimulator(model.to_scenario()).simulate``, and ``save`` writes the scenario as an
editable TOML file beside the fitted estimates and the reference's baseline rows (which the
scenario resamples, by default).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import math
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from trajectories.cohort import (
    STATE_PREFIX,
    Cohort,
    fit_part,
    prepare_output_directory,
    state_names,
)
from trajectories.disclosure import MIN_CELL, merge_rare_levels
from trajectories.errors import PrivacyWarning
from trajectories.fit import censoring as censoring_fit
from trajectories.fit import empirical, processes
from trajectories.fit.covariates import (
    CovariateSpec,
    baseline_rows,
    baseline_table,
    check_level_names,
    column_label,
    describe,
    design,
)
from trajectories.fit.draws import DRAWS, bootstrap_cohort, draw_scenario
from trajectories.fit.episodes import pooled_tails
from trajectories.fit.families import (
    ALL_FAMILIES,
    PARAMETRIC,
    SEMI_PARAMETRIC,
    AtRisk,
    FitError,
    select_family,
)
from trajectories.fit.scenario_file import jsonable, scenario_toml
from trajectories.fit.synthesis import fit_covariate_model
from trajectories.fit.transition import SITE, FittedTransition
from trajectories.scenario import Scenario, scenario_from_dict
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.blocks import DEFAULT_BLOCK_SIZE

CLOCKS = ("forward", "reset", "auto")
COVARIATE_DRAWS = ("copula", "resample")
POOLED_SITE = "pooled_sites"
"""The site that reference sites of fewer than ``MIN_CELL`` persons are fitted and drawn as."""
CENSORINGS = ("empirical", "parametric")
SITE_EFFECTS = ("fixed", "shrunk", "none")
MIN_EVENTS_FOR_COVARIATES = 10
"""Transitions with fewer events get a constant hazard without covariates."""
MIN_DURATION = 1e-3
"""Days: a stay of zero length is given this length (log h0(0) may be infinite)."""
SCENARIO_FILE, FIT_FILE, ROWS_FILE = "scenario.toml", "fit.json", "baseline.parquet"
RESAMPLE_WARNING = (
    "covariate_draw='resample' copies real persons' covariate rows: into every synthetic "
    "person and into the saved model (baseline.parquet); share neither outside the reference's "
    "governance (the default, 'copula', holds aggregates only)")


class MultiStateModel:
    """Fit a multi-state scenario to a reference cohort.

    ``families``: ``"auto"`` (AIC among exponential, Weibull, Gompertz, log-normal and
    log-logistic), one family name (``piecewise`` and ``cox`` included), a list of candidates,
    or a mapping transition key ``'a->b'`` -> any of those (unlisted transitions: auto).
    ``clock``: ``forward`` (time since index, Markov), ``reset`` (time since entering the
    state, semi-Markov) or ``auto`` (by AIC per transition). ``covariates``: reference columns
    used (default: all, with age from birth dates and sex when complete). ``centers``: values
    at which numeric covariates are centred (default: their means). ``site_effects``: hazard
    ratios per site as fixed effects, ``shrunk`` towards the pooled estimate (empirical Bayes),
    or ``none``. ``covariate_draw``: how new persons get covariates; ``copula`` (the default)
    each covariate from its per-site marginal (level shares, value shares of a number with few
    values, or quantile knots: :mod:`trajectories.fit.synthesis`) joined by a Gaussian copula
    (the scenario's ``[copula]``: the reference's within-site normal-scores correlation), so the
    model holds aggregates only; ``resample`` draws whole reference rows of their site (the
    scenario's ``[baseline]`` table): it copies real persons' covariate rows into every
    synthetic cohort and into the saved model, and warns so. Either way, reference sites of
    fewer than ``MIN_CELL`` (11) persons are fitted as one site ``pooled_sites`` and
    categorical levels held by fewer are merged (:mod:`trajectories.disclosure`).
    ``censoring``: ``empirical`` (the default) gives each site its
    reference's index-date quantiles and the quantiles of its reverse Kaplan-Meier censoring
    distribution (:mod:`trajectories.fit.empirical`: the scenario's ``index_dates`` and
    ``censoring`` tables; sites under 11 persons take the pooled ones); ``parametric`` fits
    administrative censoring uniform over a window before a data cut-off plus a constant loss
    to follow-up (:mod:`trajectories.fit.censoring`: enrolment windows, ``data_cutoff`` and
    ``loss_to_followup_per_year``). ``epsilon`` (and ``delta``, default min(1e-5, n^-1.1)):
    fit with differential privacy instead, from noisy releases only (:mod:`trajectories.fit.
    private`: piecewise hazards, copula covariates, empirical censoring, no processes; the
    guarantee in ``privacy_``). As in scikit-learn, what ``fit`` learns ends in ``_``
    (``transitions_``, ``sites_``, ``censoring_``, ``processes_``, ``notes_`` ...).
    """

    def __init__(
        self,
        families: str | Sequence[str] | Mapping[str, str | Sequence[str]] = "auto",
        clock: str = "auto",
        covariates: Sequence[str] | None = None,
        covariate_draw: str = "copula",
        site_effects: str = "fixed",
        centers: Mapping[str, float] | None = None,
        processes: bool = True,
        name: str | None = None,
        censoring: str = "empirical",
        holdout_fraction: float = 0.0,
        holdout_seed: int = 0,
        epsilon: float | None = None,
        delta: float | None = None,
        horizon_days: float | None = None,
    ) -> None:
        if covariate_draw == "marginal":
            warnings.warn("covariate_draw='marginal' is now 'copula' (marginals that keep each "
                          "covariate's type, joined by the copula)", DeprecationWarning,
                          stacklevel=2)
            covariate_draw = "copula"
        for value, allowed, what in ((clock, CLOCKS, "clock"),
                                     (covariate_draw, COVARIATE_DRAWS, "covariate_draw"),
                                     (site_effects, SITE_EFFECTS, "site_effects"),
                                     (censoring, CENSORINGS, "censoring")):
            if value not in allowed:
                raise FitError(f"{what} must be one of {list(allowed)}, got {value!r}")
        self.families = families
        self.clock = clock
        self.covariates = None if covariates is None else list(covariates)
        self.covariate_draw = covariate_draw
        self.site_effects = site_effects
        self.centers = dict(centers or {})
        self.processes = processes
        self.name = name
        self.censoring = censoring
        if not 0.0 <= holdout_fraction < 1.0:
            raise FitError(f"holdout_fraction must be at least 0 and below 1, got "
                           f"{holdout_fraction!r}")
        self.holdout_fraction = holdout_fraction
        self.holdout_seed = holdout_seed
        if epsilon is not None and not (math.isfinite(epsilon) and epsilon > 0):
            raise FitError(f"epsilon must be a positive number, got {epsilon!r}")
        if delta is not None and (epsilon is None or not 0 < delta < 1):
            raise FitError(f"delta must be between 0 and 1 and goes with epsilon, got {delta!r}")
        self.epsilon, self.delta = epsilon, delta  # differential privacy: fit.private
        if horizon_days is not None and (epsilon is None or not horizon_days > 0):
            raise FitError(f"horizon_days must be a positive number of days and goes with "
                           f"epsilon, got {horizon_days!r}")
        self.horizon_days = horizon_days  # public: spares the private fit's horizon release
        self._scenario: Scenario | None = None
        self._rows_dir: tempfile.TemporaryDirectory | None = None

    _RENAMED = frozenset({"notes", "reference", "baseline_rows", "specs", "effect_specs", "sites",
                          "site_shares", "transitions", "first_index_date", "state_order",
                          "moves", "transient", "states", "initial"})
    """Learned attributes read under their names before the trailing ``_`` (one release)."""

    def __getattr__(self, name: str) -> Any:
        if name in MultiStateModel._RENAMED and name + "_" in self.__dict__:
            warnings.warn(f"MultiStateModel.{name} is now {name}_ (learned state ends in '_')",
                          DeprecationWarning, stacklevel=2)
            return self.__dict__[name + "_"]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- fitting -----------------------------------------------------------------------------------

    def fit(self, cohort: Cohort) -> MultiStateModel:
        """Learn every part of the scenario from ``cohort``; returns self."""
        if self.epsilon is not None:  # from noisy releases only: trajectories.fit.private
            from trajectories.fit.private import fit_private

            fit_private(self, cohort)
            self._scenario, self._rows_dir = None, None
            return self
        if cohort.n_persons == 0:
            raise FitError("reference cohort has no persons")
        entered = cohort.events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
        if entered.height <= cohort.n_persons:  # each person's initial state, nothing more
            initial = sorted(state_names(cohort))
            raise FitError(
                f"no person moves from state {' or '.join(map(repr, initial))}: nothing to fit "
                f"(all {cohort.n_persons} persons stay in their initial state until follow-up "
                "ends); the reference needs at least one observed transition")
        self.notes_: list[str] = []
        fingerprint = cohort.manifest.reference_fingerprint or cohort.fingerprint()
        cohort, split, note = fit_part(cohort, self.holdout_fraction, self.holdout_seed)
        self.notes_ += [note] if note else []
        self.reference_ = {"n_persons": cohort.n_persons, "generator": cohort.manifest.generator,
                          "fingerprint": fingerprint, "split": split}
        rows = baseline_rows(cohort, self.covariates)
        names = [c for c in rows.columns if c not in ("person_id", SITE)]
        rows, cohort = self._small_cells(rows, cohort, names)
        constant = [c for c in names if rows.get_column(c).n_unique() < 2]
        if constant:
            self.notes_.append(f"covariate(s) {constant} are constant in the reference: no effect")
        self.specs_: list[CovariateSpec] = describe(rows, names, self.centers)
        self.effect_specs_ = [s for s in self.specs_ if s.name not in constant]
        site_counts = rows.group_by(SITE).len().sort(["len", SITE], descending=[True, False])
        self.sites_ = site_counts.get_column(SITE).to_list()  # largest first: the reference
        self.site_shares_ = (site_counts.get_column("len") / rows.height).to_list()
        self.covariate_model_ = fit_covariate_model(rows, self.specs_, self.sites_)
        self.notes_ += self.covariate_model_.notes
        if self.covariate_draw == "resample" and self.specs_:
            warnings.warn(RESAMPLE_WARNING, PrivacyWarning, stacklevel=2)
            self.notes_.append(RESAMPLE_WARNING)
        # Rows are kept only to be resampled, and never with the persons' ids.
        self.baseline_rows_ = (rows.drop("person_id") if self.covariate_draw == "resample"
                               else None)

        spells = cohort.state_spells().join(rows, on="person_id", how="left",
                                            maintain_order="left")
        self._states(cohort, spells)
        self.transitions_ = self._fit_transitions(spells)
        if self.site_effects == "shrunk":
            self._shrink_sites()
        if self.censoring == "empirical":
            self.censoring_ = self._empirical_censoring(cohort)
        else:
            self.censoring_ = {
                site: censoring_fit.fit_censoring(
                    frame.get_column("followup_end").to_numpy(),
                    frame.get_column("exit").is_in(censoring_fit.CENSORED_EXITS).to_numpy())
                for site in self.sites_
                for frame in [cohort.persons.filter(pl.col(SITE) == site)]
            }
        self.first_index_date_ = cohort.persons.get_column("index_date").min()
        categorical = [s.name for s in self.specs_ if s.kind == "categorical"]
        self.processes_ = (processes.fit_processes(cohort, spells, self.transient_, categorical)
                          if self.processes else processes.Processes())
        self.notes_ += self.processes_.notes
        self._scenario = None
        self._rows_dir = None
        return self

    def _small_cells(self, rows: pl.DataFrame, cohort: Cohort,
                     names: Sequence[str]) -> tuple[pl.DataFrame, Cohort]:
        """Rows and cohort with sites of fewer than ``MIN_CELL`` persons pooled into
        ``pooled_sites`` (into the largest site when even the pool is that small) and the
        categorical levels held by fewer merged (:func:`merge_rare_levels`), with notes."""
        counts = dict(rows.group_by(SITE).len().iter_rows())
        small = sorted(s for s, n in counts.items() if n < MIN_CELL)
        sites: dict[str, str] = {}
        if small and len(counts) > 1:
            pooled = sum(counts[s] for s in small)
            large = [s for s in counts if s not in small]
            target = POOLED_SITE if pooled >= MIN_CELL or not large else max(
                large, key=lambda s: (counts[s], s))
            sites = {s: target for s in small}
            self.notes_.append(f"site(s) {small} have fewer than {MIN_CELL} persons each: "
                               f"fitted and drawn as site {target!r}")
        levels: dict[str, dict[str, str]] = {}
        for name in names:
            column = rows.get_column(name)
            if column.dtype.is_numeric() or column.dtype == pl.Boolean:
                continue
            found = dict(column.cast(pl.String).value_counts().iter_rows())
            check_level_names(name, sorted(found))
            mapping = merge_rare_levels(found)
            merged = {lv: to for lv, to in mapping.items() if lv != to}
            if merged:
                levels[name] = mapping
                self.notes_.append(f"covariate {name!r}: level(s) {sorted(merged)} held by "
                                   f"fewer than {MIN_CELL} persons merged into "
                                   f"{sorted(set(merged.values()))}")
        if not sites and not levels:
            return rows, cohort
        recode = ([pl.col(SITE).replace(sites)] if sites else []) + [
            pl.col(name).cast(pl.String).replace_strict(mapping)
            for name, mapping in levels.items()]
        rows = rows.with_columns(recode)
        persons = cohort.persons.with_columns(
            [e for e in recode if e.meta.output_name() in cohort.persons.columns])
        return rows, Cohort(persons, cohort.events, cohort.manifest, check=False)

    def _empirical_censoring(self, cohort: Cohort) -> dict[str, empirical.EmpiricalFit]:
        """Per site: index-date quantiles and reverse Kaplan-Meier censoring quantiles (a
        small site takes the pooled ones, with a note)."""
        def arrays(frame: pl.DataFrame):
            return (frame.get_column("index_date").cast(pl.Int64).to_numpy(),
                    frame.get_column("followup_end").to_numpy(),
                    frame.get_column("exit").is_in(censoring_fit.CENSORED_EXITS).to_numpy())

        pooled = empirical.fit_site(*arrays(cohort.persons))
        if cohort.n_persons < MIN_CELL:
            self.notes_.append(f"only {cohort.n_persons} persons: index-date and censoring "
                              "quantiles rest on fewer than "
                              f"{MIN_CELL} persons")
        fits = {}
        for site in self.sites_:
            fits[site] = empirical.fit_site(
                *arrays(cohort.persons.filter(pl.col(SITE) == site)),
                pooled=pooled if len(self.sites_) > 1 else None)
            if fits[site].pooled:
                self.notes_.append(
                    f"site {site!r}: {fits[site].n_persons} persons, {fits[site].n_censored} "
                    f"censored (fewer than {MIN_CELL}): takes the pooled "
                    f"{' and '.join(fits[site].pooled)} of all sites")
        return fits

    def _states(self, cohort: Cohort, spells: pl.DataFrame) -> None:
        moves = (spells.filter(pl.col("next_state").is_not_null())
                 .group_by("state", "next_state").len())
        order = {s: i for i, s in enumerate(
            pl.concat([spells.get_column("state"), spells.get_column("next_state").drop_nulls()])
            .unique(maintain_order=True).to_list())}
        self.state_order_ = list(order)
        self.moves_ = sorted(((r["state"], r["next_state"]) for r in moves.iter_rows(named=True)),
                            key=lambda m: (order[m[0]], order[m[1]]))
        self.transient_ = sorted({s for s, _ in self.moves_}, key=order.get)
        last = spells.filter(pl.col("next_state").is_null())
        self.states_ = []
        for name in self.state_order_:
            ending = last.filter(pl.col("state") == name).get_column("exit")
            absorbing = name not in self.transient_ and ending.is_in(["death", "absorbed"]).any()
            death = bool((ending == "death").sum() >= (ending == "absorbed").sum())
            self.states_.append({"name": name, "absorbing": bool(absorbing),
                                **({"death": death} if absorbing else {})})
        self.states_.sort(key=lambda s: s["absorbing"])  # transient first, in order of appearance
        first = spells.filter(pl.col("first")).get_column("state")
        shares = first.value_counts().sort("state")
        self.initial_ = {r["state"]: r["count"] / first.len() for r in shares.iter_rows(named=True)}

    # -- one transition ----------------------------------------------------------------------------

    def _candidates(self, key: str) -> list[str]:
        spec = self.families
        if isinstance(spec, Mapping):
            spec = spec.get(key, "auto")
        if isinstance(spec, str):
            spec = list(PARAMETRIC) if spec == "auto" else [spec]
        unknown = [f for f in spec if f not in ALL_FAMILIES]
        if unknown or not spec:
            raise FitError(f"transition {key}: unknown family {unknown}; expected 'auto' or "
                           f"some of {list(ALL_FAMILIES)}")
        return list(spec)

    def _design(self, rows: pl.DataFrame, event: np.ndarray, notes: list[str]):
        x, columns = design(rows, self.effect_specs_)
        if self.site_effects != "none" and len(self.sites_) > 1:
            site = rows.get_column(SITE)
            x = np.column_stack([x] + [(site == s).cast(pl.Float64).to_numpy()
                                       for s in self.sites_[1:]])
            columns = columns + [(SITE, s) for s in self.sites_[1:]]
        keep = []
        for j, (name, level) in enumerate(columns):
            column = x[:, j]
            if np.ptp(column) == 0 if column.size else True:
                notes.append(f"{column_label(name, level)} does not vary among those at risk: "
                             "no effect")
                continue
            if level is not None and not column[event].any():
                notes.append(f"no event with {column_label(name, level)}: no effect fitted "
                             "(it shares the reference level's hazard)")
                continue
            keep.append(j)
        return x[:, keep], [columns[j] for j in keep]

    def _fit_transitions(self, spells: pl.DataFrame) -> list[FittedTransition]:
        """One fit per move, except the sparse later episodes of a recurrent state, which
        share one fit on their stacked at-risk rows (:mod:`trajectories.fit.episodes`)."""
        events = {(s, t): n for s, t, n in spells.filter(pl.col("next_state").is_not_null())
                  .group_by("state", "next_state").len().iter_rows()}
        pooled = {move: group for group in pooled_tails(self.moves_, events) for move in group}
        fitted: dict[tuple[str, str], FittedTransition] = {}
        for move in self.moves_:
            if move in fitted:
                continue
            group = pooled.get(move, [move])
            shared = self._fit_transition(spells, group)
            for source, target in group:
                notes = list(shared.notes)
                if len(group) > 1:
                    notes.append(
                        f"fitted together with the later episodes {group[0][0]}->...->"
                        f"{group[-1][1]} ({sum(events[m] for m in group)} events in all, "
                        f"{events[(source, target)]} here): too few for a fit of its own")
                fitted[(source, target)] = dataclasses.replace(
                    shared, source=source, target=target, notes=notes,
                    events=events[(source, target)] if len(group) > 1 else None)
        return [fitted[move] for move in self.moves_]

    def _fit_transition(self, spells: pl.DataFrame,
                        moves: list[tuple[str, str]]) -> FittedTransition:
        """Fit the moves' stacked at-risk rows (one move, or a pooled tail of episodes)."""
        source, target = moves[0]
        key = f"{source}->{target}" if len(moves) == 1 else (
            f"{source}->...->{moves[-1][1]}")
        parts = [spells.filter(pl.col("state") == s).with_columns(
            (pl.col("next_state") == t).fill_null(False).alias("__event__")) for s, t in moves]
        rows = pl.concat(parts)
        start = rows.get_column("start").to_numpy()
        stop = rows.get_column("stop").to_numpy()
        event = rows.get_column("__event__").to_numpy()
        notes: list[str] = []
        candidates = self._candidates(key)
        if int(event.sum()) < MIN_EVENTS_FOR_COVARIATES:
            x, columns = np.zeros((rows.height, 0)), []
            if candidates != [SEMI_PARAMETRIC]:
                candidates = ["exponential"]
            notes.append(f"only {int(event.sum())} events: constant hazard, no covariates")
        else:
            x, columns = self._design(rows, event, notes)
        labels = [column_label(n, lv) for n, lv in columns]
        clocks = ["forward"] if not np.any(start > 0) else (
            ["forward", "reset"] if self.clock == "auto" else [self.clock])
        if candidates == [SEMI_PARAMETRIC] and len(clocks) > 1:
            clocks = ["forward"]
            notes.append("cox: no likelihood to choose the clock by; clock-forward used")
        fits = []
        for clock in clocks:
            if clock == "forward":
                data = AtRisk(start, np.maximum(stop, start + MIN_DURATION), event, x, labels)
            else:
                data = AtRisk(np.zeros_like(start), np.maximum(stop - start, MIN_DURATION),
                              event, x, labels)
            try:
                best, tried = select_family(data, candidates)
            except FitError as error:
                raise FitError(f"transition {key} ({clock} clock): {error}") from None
            fits.append((clock, best, tried))
        if len(fits) == 1:
            clock, best, tried = fits[0]
        else:
            clock, best, tried = min(fits, key=lambda f: f[1].aic)
        all_tried = [(f.family, c, f) for c, _, t in fits for f in t]
        if not best.converged:
            notes.append(f"the {best.family} fit did not converge cleanly; check the estimates")
        if best.family == "exponential":
            clock = "forward" if len(clocks) > 1 else clock
        return FittedTransition(source, target, clock, best, columns, all_tried, notes)

    def _shrink_sites(self) -> None:
        """Empirical Bayes: each site's log HR times tau^2 / (tau^2 + se^2), with tau^2 the
        between-site variance estimated by moments (log HR relative to the largest site)."""
        for transition in self.transitions_:
            index = [j for j, (name, _) in enumerate(transition.columns) if name == SITE]
            if not index:
                continue
            k = transition.fit.theta.size
            beta = transition.fit.beta[index]
            var = np.diag(transition.fit.cov)[[k + j for j in index]]
            tau2 = max(0.0, float(np.mean(beta**2) - np.mean(var)))
            factor = tau2 / (tau2 + var)
            new_beta = transition.fit.beta.copy()
            new_beta[index] = beta * factor
            transition.site_shrinkage = {
                column_label(*transition.columns[j]): {"unshrunk": float(b), "factor": float(f)}
                for j, b, f in zip(index, beta, factor, strict=True)}
            transition.fit = dataclasses.replace(transition.fit, beta=new_beta)
            transition.notes.append(f"site effects shrunk (between-site variance {tau2:.3g})")

    # -- the scenario ------------------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if not hasattr(self, "transitions_"):
            raise FitError("the model is not fitted yet: call fit(reference_cohort) first")

    def _calendar(self) -> tuple[dict, dict, dict[str, dict]]:
        """Calendar, follow-up and per-site censoring entries from the censoring fits."""
        if self.censoring == "empirical":
            return self._empirical_calendar()
        longest = max(math.ceil(c.window_high) for c in self.censoring_.values())
        first = self.first_index_date_ or dt.date(2000, 1, 1)
        cutoff = first + dt.timedelta(days=longest)
        windows = {
            site: (cutoff - dt.timedelta(days=round(c.window_high)),
                   cutoff - dt.timedelta(days=round(min(c.window_low, c.window_high))))
            for site, c in self.censoring_.items()
        }
        calendar = {"enrolment_start": min(w[0] for w in windows.values()),
                    "enrolment_end": max(w[1] for w in windows.values()),
                    "data_cutoff": cutoff}
        loss = {site: c.loss_per_day * 365.25 for site, c in self.censoring_.items()}
        followup = {"max_days": float(longest + 1)}
        per_site: dict[str, dict] = {site: {} for site in self.sites_}
        if len(self.sites_) == 1:
            followup["loss_to_followup_per_year"] = loss[self.sites_[0]]
        else:
            for site in self.sites_:
                per_site[site] = {"enrolment_start": windows[site][0],
                                  "enrolment_end": windows[site][1],
                                  "loss_to_followup_per_year": loss[site]}
        return calendar, followup, per_site

    def _empirical_calendar(self) -> tuple[dict, dict, dict[str, dict]]:
        """One site: ``[calendar] index_dates`` and ``[followup] censoring``; several: each
        site its own (the top-level window and max_days then only summarise them)."""
        fits = self.censoring_
        calendar = {"enrolment_start": min(f.index_dates[0] for f in fits.values()),
                    "enrolment_end": max(f.index_dates[-1] for f in fits.values())}
        followup = {"max_days": max(f.max_days for f in fits.values())}
        per_site: dict[str, dict] = {site: {} for site in self.sites_}
        if len(self.sites_) == 1:
            (fit,) = fits.values()
            calendar["index_dates"] = fit.index_table()
            followup["censoring"] = fit.censoring_table()
        else:
            for site in self.sites_:
                per_site[site] = {"index_dates": fits[site].index_table(),
                                  "censoring": fits[site].censoring_table()}
        return calendar, followup, per_site

    def _rows_file(self) -> Path:
        """The baseline rows as Parquet in a folder that lives as long as the model or any
        scenario it made (an in-memory model's scenario must point to a file)."""
        if self._rows_dir is None:
            self._rows_dir = tempfile.TemporaryDirectory(prefix="trajectories-model-")
            self.baseline_rows_.write_parquet(Path(self._rows_dir.name) / ROWS_FILE)
        return Path(self._rows_dir.name) / ROWS_FILE

    def scenario_dict(self) -> dict[str, Any]:
        """The scenario as a plain dict (what the TOML file holds; ``[baseline] rows`` points to
        the model's own copy of the rows until :meth:`save`)."""
        self._require_fitted()
        covariates, site_covariates, copula = self.covariate_model_.scenario_entries(self.specs_)
        calendar, followup, site_censoring = self._calendar()
        transitions = []
        site_ratios: dict[str, dict[str, float]] = {s: {} for s in self.sites_}
        for tr in self.transitions_:
            transitions.append({"from": tr.source, "to": tr.target, "clock": tr.clock,
                                "hazard": tr.fit.hazard.model_dump(), "effects": tr.effects()})
            for site, (beta, _) in tr.site_log_hazard_ratios().items():
                site_ratios[site][tr.key] = math.exp(beta)
        shares = np.asarray(self.site_shares_)
        shares[-1] = max(0.0, 1.0 - shares[:-1].sum())
        sites = [{"name": s, "share": float(p), "covariates": site_covariates.get(s, {}),
                  "hazard_ratios": site_ratios[s], **site_censoring[s]}
                 for s, p in zip(self.sites_, shares, strict=True)]
        initial: str | dict[str, float] = (next(iter(self.initial_)) if len(self.initial_) == 1
                                           else dict(self.initial_))
        name = self.name or "fitted_" + "".join(
            ch if ch.isalnum() or ch in "_-." else "_" for ch in self.reference_["generator"])
        resample = self.covariate_draw == "resample" and bool(self.specs_)  # else nothing to draw
        baseline = {"baseline": baseline_table(self._rows_file(), self.specs_)} if resample else {}
        copula = None if resample else copula
        return {
            "name": name[:64],
            "description": (f"Fitted by MultiStateModel to {self.reference_['n_persons']} "
                            f"persons (reference {self.reference_['fingerprint'][:12]})"),
            "states": self.states_,
            "initial_state": initial,
            "transitions": transitions,
            "covariates": covariates,
            "calendar": calendar,
            "followup": followup,
            "sites": sites,
            **self.processes_.scenario_entries(),
            **baseline,
            **({"copula": copula} if copula else {}),
        }

    def to_scenario(self) -> Scenario:
        """The fitted scenario, validated (cached until the next fit)."""
        if self._scenario is None:
            scenario = scenario_from_dict(self.scenario_dict(), source="<fitted model>")
            if scenario.baseline is not None:
                scenario.baseline._keep_alive = self._rows_dir  # the rows outlive the model
            self._scenario = scenario
        return self._scenario

    def simulate(self, n: int, seed: int = 0, block_size: int = DEFAULT_BLOCK_SIZE) -> Cohort:
        """``MarkovSimulator(self.to_scenario(), block_size, self.provenance()).simulate(n,
        seed)``."""
        return MarkovSimulator(self.to_scenario(), block_size=block_size,
                               provenance=self.provenance()).simulate(n, seed)

    def draw(self, rng: np.random.Generator, method: str = "asymptotic",
             reference: Cohort | None = None) -> Scenario:
        """The fitted scenario with its parameters drawn from their sampling distribution
        (:mod:`trajectories.fit.draws`): ``asymptotic`` from the estimates' normal law,
        ``bootstrap`` by refitting on a person bootstrap of ``reference`` (the cohort this
        model was fitted to), ``none`` the estimates themselves."""
        self._require_fitted()
        if method not in DRAWS:
            raise FitError(f"draws must be one of {list(DRAWS)}, got {method!r}")
        if method == "none":
            return self.to_scenario()
        if method == "asymptotic":
            drawn = draw_scenario(self.scenario_dict(), jsonable(self.summary()), rng)
            return scenario_from_dict(drawn, source="<drawn model>")
        if self.epsilon is not None:
            raise FitError("bootstrap draws of a differentially private model would refit it "
                           "on the reference once per replicate, each refit spending the "
                           "budget again; use draws='asymptotic' (post-processing: free)")
        if reference is None:
            raise FitError("bootstrap draws refit the model on a person bootstrap of its "
                           "reference: pass reference= (the model keeps no rows)")
        clone = copy.copy(self)
        clone.holdout_fraction = 0.0  # the reference given is what was fitted on
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrivacyWarning)
            return clone.fit(bootstrap_cohort(reference, rng)).to_scenario()

    def provenance(self) -> dict[str, Any]:
        """What every cohort simulated from the model records of its reference (manifest
        keys): fingerprint, persons fitted on, and the holdout split, if any."""
        self._require_fitted()
        return provenance_of(self.reference_)

    # -- reporting and saving ----------------------------------------------------------------------

    def transition(self, key: str) -> FittedTransition:
        """The fitted transition ``'a->b'``."""
        self._require_fitted()
        for tr in self.transitions_:
            if tr.key == key:
                return tr
        raise FitError(f"no transition {key!r}; fitted: {[t.key for t in self.transitions_]}")

    def summary(self) -> dict[str, Any]:
        """Everything estimated, with standard errors and the AIC of every candidate (JSON)."""
        self._require_fitted()
        return {
            "reference": self.reference_,
            "options": {"families": self.families if isinstance(self.families, str)
                        else list(self.families) if not isinstance(self.families, Mapping)
                        else {k: v if isinstance(v, str) else list(v)
                              for k, v in self.families.items()},
                        "clock": self.clock, "covariate_draw": self.covariate_draw,
                        "site_effects": self.site_effects,
                        "censoring": self.censoring,
                        **({"epsilon": self.epsilon, "delta": self.delta}
                           if self.epsilon is not None else {})},
            "initial_state": self.initial_,
            "transitions": [tr.summary() for tr in self.transitions_],
            "covariates": [{"name": s.name, "kind": s.kind, "center": s.center,
                            "levels": list(s.levels)} for s in self.specs_],
            "sites": dict(zip(self.sites_, self.site_shares_, strict=True)),
            "censoring": {s: {"model": self.censoring, **dataclasses.asdict(c)}
                          for s, c in self.censoring_.items()},
            "notes": list(self.notes_),
            **({"privacy": self.privacy_} if self.epsilon is not None else {}),
        }

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write ``scenario.toml`` (editable, simulate it with ``trajectories simulate``) and
        ``fit.json`` (:meth:`summary`): aggregates only. With ``covariate_draw='resample'``
        also ``baseline.parquet`` (the reference's covariate rows without ids, which the
        scenario names by a relative path: the directory can be moved as a whole). A private
        fit's fit.json holds its privacy record (``privacy``: budget, releases, guarantee)."""
        directory = prepare_output_directory(directory, overwrite, owned=(), error=FitError)
        scenario = self.to_scenario()
        if scenario.baseline is not None:
            # The same bytes as the scenario's rows: same sha256, so the same content hash.
            shutil.copyfile(self._rows_file(), directory / ROWS_FILE)
        (directory / SCENARIO_FILE).write_text(scenario_toml(scenario, rows=ROWS_FILE),
                                               encoding="utf-8")
        (directory / FIT_FILE).write_text(
            json.dumps(jsonable(self.summary()), indent=2) + "\n", encoding="utf-8")
        return directory


def provenance_of(reference: Mapping[str, Any]) -> dict[str, Any]:
    """Manifest keys for cohorts of a model fitted to ``reference`` (its ``reference_``, or the
    ``reference`` table of a saved fit.json)."""
    return {"reference_fingerprint": reference.get("fingerprint"),
            "n_reference": reference.get("n_persons"),
            "reference_split": reference.get("split")}


def saved_provenance(directory: str | Path) -> dict[str, Any]:
    """:func:`provenance_of` a saved model directory (empty when its fit.json is missing or
    has no reference table: a hand-written scenario directory)."""
    path = Path(directory) / FIT_FILE
    try:
        reference = json.loads(path.read_text(encoding="utf-8")).get("reference")
    except (OSError, ValueError, AttributeError):
        return {}
    return provenance_of(reference) if isinstance(reference, dict) else {}
