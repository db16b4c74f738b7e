"""The scenario as a whole: ``Scenario``, its one cross-field validator (running ``checks`` in
order) and its content hash.

The field models live in ``models``, the ``[baseline]`` rows in ``baseline``; their names are
re-exported here, where the rest of the package imports them from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field, field_validator, model_validator

from trajectories.scenario import checks
from trajectories.scenario.baseline import BASE_DIR, Baseline, baseline_problems
from trajectories.scenario.models import (
    COPULA_TOLERANCE,
    DEFAULT_AGE,
    DEFAULT_DOMAIN,
    DEFAULT_SEX,
    NUMERIC_KINDS,
    OMOP_DOMAINS,
    SEX_LEVELS,
    SUM_TOLERANCE,
    Calendar,
    CategoricalCovariate,
    CensoringQuantiles,
    ConceptMapping,
    Copula,
    Covariate,
    DiscreteCovariate,
    Drug,
    FollowUp,
    Frailty,
    IndexDates,
    Measurement,
    Name,
    NormalCovariate,
    Probability,
    QuantileCovariate,
    Site,
    State,
    Strict,
    Transition,
    UniformCovariate,
    Visit,
    numeric_bounds,
)

__all__ = [
    "BASE_DIR",
    "COPULA_TOLERANCE",
    "DEFAULT_AGE",
    "DEFAULT_DOMAIN",
    "DEFAULT_SEX",
    "NUMERIC_KINDS",
    "OMOP_DOMAINS",
    "SEX_LEVELS",
    "SUM_TOLERANCE",
    "Baseline",
    "Calendar",
    "CategoricalCovariate",
    "CensoringQuantiles",
    "ConceptMapping",
    "Copula",
    "Covariate",
    "DiscreteCovariate",
    "Drug",
    "FollowUp",
    "Frailty",
    "IndexDates",
    "Measurement",
    "Name",
    "NormalCovariate",
    "Probability",
    "QuantileCovariate",
    "Scenario",
    "Site",
    "State",
    "Transition",
    "UniformCovariate",
    "Visit",
    "numeric_bounds",
]


class Scenario(Strict):
    """A complete declarative scenario, as read from a TOML file."""

    name: Name
    description: str = ""
    references: list[str] = Field(default_factory=list)
    states: list[State]
    initial_state: str | dict[str, Probability]
    transitions: list[Transition]
    covariates: dict[Name, Covariate] = Field(default_factory=dict, validate_default=True)
    calendar: Calendar = Calendar()
    followup: FollowUp = FollowUp()
    sites: list[Site] = Field(default_factory=lambda: [Site(name="site_1", share=1.0)])
    visits: list[Visit] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=list)
    drugs: list[Drug] = Field(default_factory=list)
    concepts: dict[str, ConceptMapping] = Field(
        default_factory=dict, description="event code (e.g. 'state:relapse') -> OMOP concept"
    )
    baseline: Baseline | None = Field(
        default=None, description="reference rows resampled per site for some covariates"
    )
    copula: Copula | None = Field(
        default=None, description="Gaussian copula correlating some drawn covariates"
    )
    endpoints: list[dict[str, Any]] = Field(
        default_factory=list,
        description="[[endpoints]] tables for validation (read by validation.endpoints); "
        "checked here only for the states they name",
    )

    @field_validator("covariates", mode="after")
    @classmethod
    def _age_and_sex(cls, covariates: dict) -> dict:
        covariates = {"age": DEFAULT_AGE, "sex": DEFAULT_SEX, **covariates}
        if not isinstance(covariates["age"], NUMERIC_KINDS):
            raise ValueError("'age' must be a numeric covariate (normal, uniform, discrete or "
                             "quantiles), in years")
        if numeric_bounds(covariates["age"])[0] < 0:
            raise ValueError("'age' must not go below 0 (set min / low)")
        sex = covariates["sex"]
        if not isinstance(sex, CategoricalCovariate) or set(sex.levels) - set(SEX_LEVELS):
            raise ValueError(f"'sex' must be categorical with levels among {SEX_LEVELS}")
        return covariates

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        problems = (
            checks.state_problems(self)
            + checks.transition_problems(self)
            + checks.site_problems(self)
            + checks.calendar_problems(self)
            + checks.process_problems(self)
            + checks.concept_problems(self)
            + checks.endpoint_problems(self)
            + baseline_problems(self)
            + checks.copula_problems(self)
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- conveniences --------------------------------------------------------------------------

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.states]

    def event_codes(self) -> list[str]:
        """Every event code the scenario can produce."""
        return (
            [f"state:{s.name}" for s in self.states]
            + [f"visit:{v.type}" for v in self.visits]
            + [f"measurement:{m.name}" for m in self.measurements]
            + [f"drug:{d.name}" for d in self.drugs]
        )

    def concept_map(self) -> dict[str, dict]:
        """Event code -> OMOP mapping for every code (unmapped codes get concept 0)."""
        mapped = {}
        for code in self.event_codes():
            namespace, name = code.split(":", 1)
            mapping = self.concepts.get(code, ConceptMapping())
            default_domain = DEFAULT_DOMAIN[namespace]
            if namespace == "state" and self.states[self.state_names.index(name)].is_death:
                default_domain = "death"
            entry = mapping.model_dump()
            entry["domain"] = mapping.domain or default_domain
            entry["source_value"] = mapping.source_value or name
            mapped[code] = entry
        for measurement in self.measurements:
            entry = mapped[f"measurement:{measurement.name}"]
            entry["unit_source_value"] = entry["unit_source_value"] or measurement.unit
        return mapped

    @property
    def initial_distribution(self) -> dict[str, float]:
        if isinstance(self.initial_state, str):
            return {self.initial_state: 1.0}
        return dict(self.initial_state)

    def site_index_dates(self, site: Site) -> IndexDates | None:
        """The empirical index dates ``site`` draws from, or None for a uniform window: its
        own ``index_dates``; else, unless it gives its own window, ``calendar.index_dates``."""
        if site.index_dates is not None:
            return site.index_dates
        if site.enrolment_start is not None or site.enrolment_end is not None:
            return None
        return self.calendar.index_dates

    def site_censoring(self, site: Site) -> CensoringQuantiles | None:
        """The empirical censoring ``site`` draws from, or None for the window and loss: its
        own ``censoring``; else, unless it gives followup_days or loss_to_followup_per_year,
        ``followup.censoring``."""
        if site.censoring is not None:
            return site.censoring
        if site.followup_days is not None or site.loss_to_followup_per_year is not None:
            return None
        return self.followup.censoring

    def baseline_columns(self) -> list[str]:
        """The declared covariates drawn from baseline rows (none without ``[baseline]``)."""
        if self.baseline is None:
            return []
        if self.baseline.columns is not None:
            return list(self.baseline.columns)
        present = set(self.baseline.table().columns) - {self.baseline.site_column}
        return [name for name in self.covariates if name in present]

    def content_hash(self) -> str:
        """SHA-256 of the validated content (comments and layout of the file do not count;
        baseline rows count by their file's sha256, not by where the file lies)."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.baseline is None:
            del data["baseline"]  # scenarios without rows keep the hash they always had
        else:
            del data["baseline"]["rows"]
        if self.copula is None:
            del data["copula"]  # nor do scenarios without a copula
        # nor do scenarios without empirical index dates or censoring
        for site in data["sites"]:
            if not site["covariates"]:
                del site["covariates"]  # nor do sites without marginals of their own
        for table, key in [(data["calendar"], "index_dates"), (data["followup"], "censoring"),
                           *((site, key) for site in data["sites"]
                             for key in ("index_dates", "censoring"))]:
            if table[key] is None:
                del table[key]
        canonical = json.dumps(data, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()
