"""The scenario file's field-level models: each validates its own table (a negative rate, a
missing key, knots out of order); checks across tables live in ``checks``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trajectories.hazards import Hazard, NonNegative, Positive

Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$", max_length=64)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
SUM_TOLERANCE = 1e-6
SEX_LEVELS = ("F", "M")


class Strict(BaseModel):
    """Base of every scenario model: unknown keys refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_distribution(probabilities: dict[str, float], what: str) -> None:
    """Raise ValueError unless ``probabilities`` sum to 1 (within SUM_TOLERANCE)."""
    total = sum(probabilities.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"{what} must sum to 1, got {total:.6g} ({probabilities})")


class State(Strict):
    """A state of the multi-state model; absorbing states end the history."""

    name: Name
    absorbing: bool = False
    death: bool | None = Field(
        default=None, description="whether entering this absorbing state is death (default yes)"
    )
    description: str = ""

    @model_validator(mode="after")
    def _death_only_if_absorbing(self) -> State:
        if self.death and not self.absorbing:
            raise ValueError(f"state {self.name!r}: death = true needs absorbing = true")
        return self

    @property
    def is_death(self) -> bool:
        return self.absorbing and self.death is not False


class Transition(Strict):
    """An allowed move, its hazard, its clock and its covariate effects (log hazard ratios)."""

    from_state: Name = Field(alias="from")
    to_state: Name = Field(alias="to")
    hazard: Hazard
    clock: Literal["forward", "reset"] = Field(
        default="forward",
        description="forward: time since index (Markov); reset: time since entering (semi-Markov)",
    )
    effects: dict[str, float | dict[str, float]] = Field(
        default_factory=dict,
        description="log hazard ratio per unit of a numeric covariate, or per level of a "
        "categorical one (a table level -> log HR, the reference level omitted)",
    )

    @property
    def key(self) -> str:
        return f"{self.from_state}->{self.to_state}"


class NormalCovariate(Strict):
    """A numeric covariate drawn from a normal distribution truncated to [min, max]."""

    kind: Literal["normal"] = "normal"
    mean: float
    sd: Positive
    min: float = float("-inf")
    max: float = float("inf")
    center: float = Field(default=0.0, description="effects apply to (value - center)")

    @model_validator(mode="after")
    def _bounds(self) -> NormalCovariate:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class UniformCovariate(Strict):
    """A numeric covariate drawn uniformly on [low, high]; a site's case-mix shift moves both."""

    kind: Literal["uniform"] = "uniform"
    low: float
    high: float
    center: float = 0.0

    @model_validator(mode="after")
    def _bounds(self) -> UniformCovariate:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class CategoricalCovariate(Strict):
    """A categorical covariate: level -> probability; effects are relative to ``reference``."""

    kind: Literal["categorical"] = "categorical"
    levels: dict[Name, Probability]
    reference: str | None = Field(default=None, description="defaults to the first level")

    @model_validator(mode="after")
    def _levels(self) -> CategoricalCovariate:
        if len(self.levels) < 1:
            raise ValueError("needs at least one level")
        check_distribution(self.levels, "level probabilities")
        if self.reference is not None and self.reference not in self.levels:
            raise ValueError(f"reference {self.reference!r} is not one of {list(self.levels)}")
        return self

    @property
    def reference_level(self) -> str:
        return self.reference or next(iter(self.levels))


class DiscreteCovariate(Strict):
    """A numeric covariate taking a few values (a 0/1 flag, a score 0-4): value -> probability.
    Effects apply per unit of (value - center), as for any number."""

    kind: Literal["discrete"] = "discrete"
    values: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(
        min_length=1, description="the values, strictly increasing")
    probabilities: list[Probability] = Field(min_length=1, description="one per value")
    center: float = 0.0

    @model_validator(mode="after")
    def _table(self) -> DiscreteCovariate:
        if len(self.values) != len(self.probabilities):
            raise ValueError(f"values and probabilities must have one entry each, got "
                             f"{len(self.values)} values and {len(self.probabilities)} "
                             "probabilities")
        for i in range(1, len(self.values)):
            if not self.values[i] > self.values[i - 1]:
                raise ValueError(f"values must increase: values[{i}] ({self.values[i]}) is not "
                                 f"above values[{i - 1}] ({self.values[i - 1]})")
        check_distribution(dict(zip(map(str, self.values), self.probabilities, strict=True)),
                           "probabilities")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return self.values[0], self.values[-1]


class QuantileCovariate(Strict):
    """A numeric covariate drawn from an empirical quantile function: knots at the evenly
    spaced levels 0, 1/(k-1), ..., 1, linear between them (rounded when ``integer``)."""

    kind: Literal["quantiles"] = "quantiles"
    quantiles: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(
        min_length=2, description="values at levels 0, 1/(k-1), ..., 1, non-decreasing")
    integer: bool = Field(default=False, description="round each draw to the nearest integer")
    center: float = 0.0

    @field_validator("quantiles", mode="after")
    @classmethod
    def _non_decreasing(cls, quantiles: list[float]) -> list[float]:
        for i in range(1, len(quantiles)):
            if quantiles[i] < quantiles[i - 1]:
                raise ValueError(f"quantiles must not decrease: quantiles[{i}] ({quantiles[i]}) "
                                 f"is below quantiles[{i - 1}] ({quantiles[i - 1]})")
        return quantiles

    @property
    def bounds(self) -> tuple[float, float]:
        return self.quantiles[0], self.quantiles[-1]


Covariate = Annotated[
    NormalCovariate | UniformCovariate | CategoricalCovariate | DiscreteCovariate
    | QuantileCovariate,
    Field(discriminator="kind"),
]
NUMERIC_KINDS = (NormalCovariate, UniformCovariate, DiscreteCovariate, QuantileCovariate)


def numeric_bounds(spec: NormalCovariate | UniformCovariate | DiscreteCovariate
                   | QuantileCovariate) -> tuple[float, float]:
    """Lowest and highest value a numeric covariate can be drawn at (before case-mix)."""
    if isinstance(spec, NormalCovariate):
        return spec.min, spec.max
    if isinstance(spec, UniformCovariate):
        return spec.low, spec.high
    return spec.bounds

DEFAULT_AGE = NormalCovariate(mean=60.0, sd=12.0, min=18.0, max=95.0, center=60.0)
DEFAULT_SEX = CategoricalCovariate(levels={"F": 0.5, "M": 0.5})


class Copula(Strict):
    """A Gaussian copula joining some declared covariates: their inverse-CDF uniforms come from
    correlated standard normals (``correlation``: of the normal scores, rows and columns in the
    order of ``covariates``). One matrix for every site; the marginals stay per site."""

    covariates: list[str]
    correlation: list[list[Annotated[float, Field(allow_inf_nan=False)]]]

    def cholesky(self) -> np.ndarray:
        """Lower-triangular L with L @ L.T = correlation (validated positive definite)."""
        return np.linalg.cholesky(np.asarray(self.correlation, dtype=float))


COPULA_TOLERANCE = 1e-9
"""Symmetry and unit-diagonal tolerance of a copula's correlation matrix."""


class Frailty(Strict):
    """A person-level gamma random effect with mean 1 multiplying one transition's hazard."""

    kind: Literal["gamma"] = "gamma"
    variance: Positive


class IndexDates(Strict):
    """An empirical index-date distribution: its quantile function's knots at the evenly spaced
    levels 0, 1/(k-1), ..., 1. A person's index date is the date nearest that piecewise-linear
    quantile function at the person's uniform (the one the enrolment window would use), so
    knots spaced evenly over a window give that window's uniform distribution."""

    quantiles: list[dt.date] = Field(
        min_length=2,
        description="index dates at evenly spaced levels 0, 1/(k-1), ..., 1 (non-decreasing; "
        "the first and last are the lowest and highest drawn); replaces the uniform "
        "enrolment window",
    )

    @field_validator("quantiles", mode="after")
    @classmethod
    def _non_decreasing(cls, quantiles: list[dt.date]) -> list[dt.date]:
        for i in range(1, len(quantiles)):
            if quantiles[i] < quantiles[i - 1]:
                raise ValueError(f"quantiles must not decrease: quantiles[{i}] ({quantiles[i]}) "
                                 f"comes before quantiles[{i - 1}] ({quantiles[i - 1]})")
        return quantiles

    def ordinals(self) -> np.ndarray:
        """The knots as days since 1970-01-01 (floats)."""
        epoch = dt.date(1970, 1, 1).toordinal()
        return np.array([d.toordinal() - epoch for d in self.quantiles], dtype=float)

    def levels(self) -> np.ndarray:
        """The knots' levels: 0, 1/(k-1), ..., 1."""
        return np.linspace(0.0, 1.0, len(self.quantiles))


class CensoringQuantiles(Strict):
    """An empirical potential-censoring-time distribution (days since index): quantile knots
    ``days`` at ``levels``, the quantile function linear between them, and the mass above the
    last level at ``max_days`` (the end of the site's follow-up). A person's censoring time is
    that quantile function at the person's uniform; it replaces the uniform window and the
    exponential loss to follow-up (``data_cutoff``, when given, still caps it)."""

    levels: list[Probability] = Field(
        min_length=1,
        description="probability levels of the knots, strictly increasing from 0",
    )
    days: list[NonNegative] = Field(
        min_length=1,
        description="potential censoring time (days since index) at each level, non-decreasing",
    )
    max_days: Positive = Field(
        description="censoring time of the mass above the last level (days since index; "
        "at least the last of days)",
    )

    @model_validator(mode="after")
    def _knots(self) -> CensoringQuantiles:
        levels, days = self.levels, self.days
        if len(levels) != len(days):
            raise ValueError(f"levels and days must have one entry per knot, got {len(levels)} "
                             f"levels and {len(days)} days")
        if levels[0] != 0:
            raise ValueError(f"levels[0] must be 0 (the shortest censoring time), got "
                             f"{levels[0]}")
        for i in range(1, len(levels)):
            if not levels[i] > levels[i - 1]:
                raise ValueError(f"levels must increase: levels[{i}] ({levels[i]}) is not above "
                                 f"levels[{i - 1}] ({levels[i - 1]})")
            if days[i] < days[i - 1]:
                raise ValueError(f"days must not decrease: days[{i}] ({days[i]}) is below "
                                 f"days[{i - 1}] ({days[i - 1]})")
        if days[-1] > self.max_days:
            raise ValueError(f"max_days ({self.max_days}) must be at least the last of days "
                             f"({days[-1]})")
        return self


class Site(Strict):
    """A site: its share (or size), case-mix, hazard modifiers, enrolment and follow-up."""

    name: Name
    share: Probability | None = None
    size: Annotated[int, Field(gt=0)] | None = None
    enrolment_start: dt.date | None = None
    enrolment_end: dt.date | None = None
    followup_days: Positive | None = None
    loss_to_followup_per_year: NonNegative | None = None
    case_mix: dict[str, float | dict[str, Probability]] = Field(
        default_factory=dict,
        description="numeric covariate -> shift of its mean; categorical -> level probabilities",
    )
    covariates: dict[Name, Covariate] = Field(
        default_factory=dict,
        description="the site's own marginal of some declared covariates (same kind family and "
        "levels as the declared one), replacing the declared marginal there; not together "
        "with a case_mix entry for the same covariate",
    )
    hazard_ratios: dict[str, Positive] = Field(
        default_factory=dict, description="transition key 'from->to' -> hazard multiplier"
    )
    frailty: dict[str, Frailty] = Field(default_factory=dict)
    index_dates: IndexDates | None = Field(
        default=None,
        description="the site's empirical index dates (quantile knots) instead of a uniform "
        "enrolment window; not together with enrolment_start / enrolment_end",
    )
    censoring: CensoringQuantiles | None = Field(
        default=None,
        description="the site's empirical potential censoring times (quantile knots) instead "
        "of followup_days and loss_to_followup_per_year; not together with them",
    )


class Calendar(Strict):
    """When index dates fall (uniformly over the enrolment window, or as ``index_dates``
    says) and the data cut-off."""

    enrolment_start: dt.date = dt.date(2015, 1, 1)
    enrolment_end: dt.date = dt.date(2019, 12, 31)
    data_cutoff: dt.date | None = Field(
        default=None, description="administrative censoring date for everyone, if any"
    )
    index_dates: IndexDates | None = Field(
        default=None,
        description="default empirical index dates (quantile knots): replace the enrolment "
        "window for every site that gives neither its own window nor its own index_dates",
    )


class FollowUp(Strict):
    """Default follow-up: maximum length and loss to follow-up, or an empirical censoring
    distribution (sites may override)."""

    max_days: Positive = 5 * 365.25
    loss_to_followup_per_year: NonNegative = 0.0
    censoring: CensoringQuantiles | None = Field(
        default=None,
        description="default empirical potential censoring times (quantile knots): replace "
        "max_days and the loss for every site that gives neither followup_days, nor "
        "loss_to_followup_per_year, nor its own censoring",
    )


class Visit(Strict):
    """Visits of one type: a Poisson process with a rate per state (per year)."""

    type: Name
    rates_per_year: dict[str, NonNegative]
    mean_duration_days: NonNegative = Field(
        default=0.0, description="0: a point visit; otherwise exponential length of stay"
    )


class Measurement(Strict):
    """A value taken at visits: state mean + trend since entering the state + noise."""

    name: Name
    unit: str | None = None
    visit_types: list[str] | None = Field(default=None, description="default: every visit")
    mean: dict[str, float] = Field(description="state -> mean value on entering the state")
    trend_per_year: dict[str, float] = Field(default_factory=dict)
    noise_sd: NonNegative = 0.0
    person_sd: NonNegative = Field(default=0.0, description="sd of a per-person offset")
    min: float = float("-inf")
    max: float = float("inf")
    decimals: Annotated[int, Field(ge=0, le=10)] | None = None


class Drug(Strict):
    """A drug exposure started on entering one of ``on_entry`` states."""

    name: Name
    on_entry: list[str]
    when: dict[str, list[str]] = Field(
        default_factory=dict, description="categorical covariate -> levels that receive it"
    )
    probability: Probability = 1.0
    duration_days: Positive
    duration_cv: NonNegative = Field(default=0.0, description="0: fixed; else gamma spread")


OMOP_DOMAINS = ("condition", "observation", "procedure", "measurement", "drug", "visit", "death")
DEFAULT_DOMAIN = {"state": "condition", "visit": "visit", "measurement": "measurement",
                  "drug": "drug"}


class ConceptMapping(Strict):
    """How one event code maps to an OMOP standard concept (used by the OMOP exporter)."""

    domain: Literal[OMOP_DOMAINS] | None = Field(
        default=None,
        description="OMOP table family; default from the code's namespace (state -> condition)",
    )
    concept_id: Annotated[int, Field(ge=0)] = 0
    source_value: str | None = None
    unit_concept_id: Annotated[int, Field(ge=0)] | None = None
    unit_source_value: str | None = None
    type_concept_id: Annotated[int, Field(ge=0)] = Field(
        default=32817, description="provenance; 32817 = EHR"
    )
