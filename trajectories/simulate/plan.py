"""A scenario compiled into the integer indices and arrays the vectorised engine works on
(baseline rows included: grouped by site, as arrays)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from trajectories.hazards import Exponential
from trajectories.scenario.schema import (
    CategoricalCovariate,
    Scenario,
    Transition,
)


@dataclass(frozen=True)
class CompiledTransition:
    """One transition with its states as indices."""

    index: int
    source: int
    target: int
    spec: Transition

    @property
    def clock_reset(self) -> bool:
        return self.spec.clock == "reset" and not isinstance(self.spec.hazard, Exponential)


@dataclass(frozen=True)
class BaselineRows:
    """Reference rows grouped by site: site ``j`` owns rows ``start[j] : start[j] + count[j]``
    of each column (numbers as floats, categories as level indices)."""

    start: np.ndarray  # (sites,)
    count: np.ndarray  # (sites,)
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]

    @classmethod
    def compile(cls, scenario: Scenario, site_names: list[str]) -> BaselineRows:
        baseline = scenario.baseline
        assert baseline is not None
        site_index = {name: j for j, name in enumerate(site_names)}
        table = (
            baseline.table()
            .with_columns(pl.col(baseline.site_column).cast(pl.String)
                          .replace_strict(site_index, default=None, return_dtype=pl.Int64)
                          .alias("__site"))
            .filter(pl.col("__site").is_not_null())
            .sort("__site", maintain_order=True)  # stable: file order within a site
        )
        count = np.bincount(table.get_column("__site").to_numpy(), minlength=len(site_names))
        numeric, categorical = {}, {}
        for name in scenario.baseline_columns():
            spec = scenario.covariates[name]
            column = table.get_column(name)
            if isinstance(spec, CategoricalCovariate):
                levels = {level: i for i, level in enumerate(spec.levels)}
                categorical[name] = column.cast(pl.String).replace_strict(
                    levels, return_dtype=pl.Int64).to_numpy()
            else:
                numeric[name] = column.cast(pl.Float64).to_numpy()
        return cls(np.cumsum(count) - count, count, numeric, categorical)

    def pick(self, site: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Row of each person: uniform ``u`` in [0, 1) picks among its site's rows."""
        count = self.count[site]
        return self.start[site] + np.minimum(np.floor(u * count).astype(np.int64), count - 1)


@dataclass(frozen=True)
class Plan:
    """Everything the engine needs, indexed: states, transitions, sites."""

    scenario: Scenario
    state_names: list[str]
    absorbing: np.ndarray
    death: np.ndarray
    initial_probabilities: np.ndarray
    transitions: list[CompiledTransition]
    outgoing: list[list[CompiledTransition]]
    site_names: list[str]
    site_hazard_ratios: np.ndarray  # (sites, transitions)
    site_frailty_variance: np.ndarray  # (sites, transitions), 0 = none
    baseline: BaselineRows | None = None  # rows replacing some covariates' draws

    @classmethod
    def compile(cls, scenario: Scenario) -> Plan:
        names = scenario.state_names
        position = {name: i for i, name in enumerate(names)}
        transitions = [
            CompiledTransition(k, position[t.from_state], position[t.to_state], t)
            for k, t in enumerate(scenario.transitions)
        ]
        outgoing = [[t for t in transitions if t.source == s] for s in range(len(names))]
        initial = np.zeros(len(names))
        for name, p in scenario.initial_distribution.items():
            initial[position[name]] = p
        keys = [t.spec.key for t in transitions]
        ratios = np.ones((len(scenario.sites), len(keys)))
        frailty = np.zeros_like(ratios)
        for j, site in enumerate(scenario.sites):
            for key, ratio in site.hazard_ratios.items():
                ratios[j, keys.index(key)] = ratio
            for key, spec in site.frailty.items():
                frailty[j, keys.index(key)] = spec.variance
        site_names = [s.name for s in scenario.sites]
        return cls(
            scenario=scenario,
            state_names=names,
            absorbing=np.array([s.absorbing for s in scenario.states]),
            death=np.array([s.is_death for s in scenario.states]),
            initial_probabilities=initial,
            transitions=transitions,
            outgoing=outgoing,
            site_names=site_names,
            site_hazard_ratios=ratios,
            site_frailty_variance=frailty,
            baseline=(None if scenario.baseline is None
                      else BaselineRows.compile(scenario, site_names)),
        )

    def site_mean_shift(self, covariate: str) -> np.ndarray:
        """Per-site shift of a numeric covariate's mean (case-mix)."""
        return np.array([float(s.case_mix.get(covariate, 0.0)) for s in self.scenario.sites])

    def site_level_cumulative(self, covariate: str) -> np.ndarray:
        """(sites, levels) cumulative level probabilities of a categorical covariate."""
        spec = self.scenario.covariates[covariate]
        assert isinstance(spec, CategoricalCovariate)
        rows = []
        for site in self.scenario.sites:
            own = site.covariates.get(covariate)
            probabilities = (own.levels if isinstance(own, CategoricalCovariate)
                             else site.case_mix.get(covariate, spec.levels))
            rows.append(np.cumsum([probabilities[level] for level in spec.levels]))
        return np.array(rows)

