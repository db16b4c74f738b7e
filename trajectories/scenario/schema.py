"""The scenario file's data model: pydantic classes that validate a parsed TOML document.

Field-level problems (a negative rate, a missing key) are caught by pydantic; cross-field
problems (an unknown state in a transition, shares not summing to one) by ``Scenario``'s
validators, whose messages name the offending entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trajectories.hazards import Hazard, NonNegative, Positive

Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$", max_length=64)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
SUM_TOLERANCE = 1e-6
SEX_LEVELS = ("F", "M")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_distribution(probabilities: dict[str, float], what: str) -> None:
    total = sum(probabilities.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"{what} must sum to 1, got {total:.6g} ({probabilities})")


class State(_Strict):
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


class Transition(_Strict):
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


class NormalCovariate(_Strict):
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


class UniformCovariate(_Strict):
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


class CategoricalCovariate(_Strict):
    """A categorical covariate: level -> probability; effects are relative to ``reference``."""

    kind: Literal["categorical"] = "categorical"
    levels: dict[Name, Probability]
    reference: str | None = Field(default=None, description="defaults to the first level")

    @model_validator(mode="after")
    def _levels(self) -> CategoricalCovariate:
        if len(self.levels) < 1:
            raise ValueError("needs at least one level")
        _check_distribution(self.levels, "level probabilities")
        if self.reference is not None and self.reference not in self.levels:
            raise ValueError(f"reference {self.reference!r} is not one of {list(self.levels)}")
        return self

    @property
    def reference_level(self) -> str:
        return self.reference or next(iter(self.levels))


Covariate = Annotated[
    NormalCovariate | UniformCovariate | CategoricalCovariate, Field(discriminator="kind")
]
NUMERIC_KINDS = (NormalCovariate, UniformCovariate)

DEFAULT_AGE = NormalCovariate(mean=60.0, sd=12.0, min=18.0, max=95.0, center=60.0)
DEFAULT_SEX = CategoricalCovariate(levels={"F": 0.5, "M": 0.5})


BASE_DIR = "base_dir"
"""Validation-context key: the folder a relative ``[baseline] rows`` path resolves against
(the scenario file's folder; the current directory when absent)."""


class Baseline(_Strict):
    """Reference baseline rows: new persons get whole rows, drawn within their own site, for
    ``columns``, so those covariates keep their joint distribution per site.

    ``rows`` is made absolute when the scenario is validated (so a scenario passed on as a
    dict still finds it); the content hash uses the file's ``sha256``, never the path.
    """

    rows: str = Field(description="Parquet file; a relative path is relative to the scenario "
                      "file's folder")
    site_column: str = "site"
    columns: list[str] | None = Field(
        default=None,
        description="declared covariates the rows replace (default: every declared covariate "
        "that is a column of the file)",
    )
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="of the file; filled on load, checked when given"
    )
    _table: pl.DataFrame | None = PrivateAttr(default=None)
    _keep_alive: Any = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _read_rows(cls, data: Any, handler, info: ValidationInfo) -> Baseline:
        if isinstance(data, Baseline) or not isinstance(data, dict) or not isinstance(
                data.get("rows"), str):
            return handler(data)
        base = Path((info.context or {}).get(BASE_DIR) or Path.cwd())
        path = Path(data["rows"]).expanduser()
        path = (path if path.is_absolute() else base / path).resolve()
        try:
            content = path.read_bytes()
        except OSError as error:
            raise ValueError(
                f"rows file {path} cannot be read: {error.strerror or error}") from None
        digest = hashlib.sha256(content).hexdigest()
        given = data.get("sha256")
        if isinstance(given, str) and given != digest:
            raise ValueError(
                f"rows file {path} has sha256 {digest}, but the scenario gives sha256 = "
                f"{given!r}: the file changed; restore it, or update or remove sha256"
            )
        try:
            table = pl.read_parquet(io.BytesIO(content))
        except Exception as error:  # polars raises several kinds for a non-Parquet file
            raise ValueError(f"rows file {path} is not a readable Parquet file: {error}") from None
        baseline = handler({**data, "rows": str(path), "sha256": digest})
        baseline._table = table
        return baseline

    def table(self) -> pl.DataFrame:
        """The rows as read when the scenario was validated (re-read if built otherwise)."""
        if self._table is None:
            self._table = pl.read_parquet(self.rows)
        return self._table


class Copula(_Strict):
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


class Frailty(_Strict):
    """A person-level gamma random effect with mean 1 multiplying one transition's hazard."""

    kind: Literal["gamma"] = "gamma"
    variance: Positive


class IndexDates(_Strict):
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


class CensoringQuantiles(_Strict):
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


class Site(_Strict):
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


class Calendar(_Strict):
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


class FollowUp(_Strict):
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


class Visit(_Strict):
    """Visits of one type: a Poisson process with a rate per state (per year)."""

    type: Name
    rates_per_year: dict[str, NonNegative]
    mean_duration_days: NonNegative = Field(
        default=0.0, description="0: a point visit; otherwise exponential length of stay"
    )


class Measurement(_Strict):
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


class Drug(_Strict):
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


class ConceptMapping(_Strict):
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


class Scenario(_Strict):
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
            raise ValueError("'age' must be a numeric covariate (normal or uniform), in years")
        age = covariates["age"]
        if (age.min if isinstance(age, NormalCovariate) else age.low) < 0:
            raise ValueError("'age' must not go below 0 (set min / low)")
        sex = covariates["sex"]
        if not isinstance(sex, CategoricalCovariate) or set(sex.levels) - set(SEX_LEVELS):
            raise ValueError(f"'sex' must be categorical with levels among {SEX_LEVELS}")
        return covariates

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        problems = (
            self._state_problems()
            + self._transition_problems()
            + self._site_problems()
            + self._process_problems()
            + self._concept_problems()
            + self._endpoint_problems()
            + self._baseline_problems()
            + self._copula_problems()
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- cross-field checks; each returns messages naming the entry at fault ------------------

    def _state_problems(self) -> list[str]:
        names = [s.name for s in self.states]
        problems = [f"states: {n!r} is declared twice" for n in sorted(set(names)) if
                    names.count(n) > 1]
        transient = {s.name for s in self.states if not s.absorbing}
        if not transient:
            problems.append("states: at least one state must be transient (absorbing = false)")
        initial = (
            {self.initial_state: 1.0} if isinstance(self.initial_state, str) else
            self.initial_state
        )
        for name in initial:
            if name not in transient:
                problems.append(
                    f"initial_state: {name!r} is not a transient state; expected one of "
                    f"{sorted(transient)}"
                )
        if isinstance(self.initial_state, dict):
            try:
                _check_distribution(self.initial_state, "initial_state probabilities")
            except ValueError as error:
                problems.append(str(error))
        return problems

    def _transition_problems(self) -> list[str]:
        by_name = {s.name: s for s in self.states}
        problems, seen = [], set()
        for i, tr in enumerate(self.transitions):
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
            problems += self._effect_problems(where, tr.effects)
        return problems

    def _effect_problems(self, where: str, effects: dict) -> list[str]:
        problems = []
        for name, effect in effects.items():
            covariate = self.covariates.get(name)
            if covariate is None:
                problems.append(
                    f"{where}: effect on unknown covariate {name!r}; expected one of "
                    f"{sorted(self.covariates)}"
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

    def _site_problems(self) -> list[str]:
        problems = []
        names = [s.name for s in self.sites]
        problems += [f"sites: {n!r} is declared twice" for n in sorted(set(names))
                     if names.count(n) > 1]
        with_share = [s.share is not None for s in self.sites]
        with_size = [s.size is not None for s in self.sites]
        if any(a and b for a, b in zip(with_share, with_size, strict=True)) or not (
            all(with_share) or all(with_size)
        ):
            problems.append("sites: give every site a share, or every site a size, not a mix")
        elif all(with_share):
            try:
                _check_distribution({s.name: s.share for s in self.sites}, "sites' shares")
            except ValueError as error:
                problems.append(str(error))
        keys = {tr.key for tr in self.transitions}
        for site in self.sites:
            where = f"sites ({site.name})"
            for key in list(site.hazard_ratios) + list(site.frailty):
                if key not in keys:
                    problems.append(
                        f"{where}: unknown transition {key!r}; expected one of {sorted(keys)}"
                    )
            window = site.enrolment_start is not None or site.enrolment_end is not None
            if site.index_dates is not None and window:
                problems.append(f"{where}: give enrolment_start / enrolment_end or index_dates, "
                                "not both")
            parametric = (site.followup_days is not None
                          or site.loss_to_followup_per_year is not None)
            if site.censoring is not None and parametric:
                problems.append(f"{where}: give followup_days / loss_to_followup_per_year or "
                                "censoring, not both")
            start = site.enrolment_start or self.calendar.enrolment_start
            end = site.enrolment_end or self.calendar.enrolment_end
            if end < start:
                problems.append(f"{where}: enrolment ends ({end}) before it starts ({start})")
            empirical = self.site_index_dates(site)
            if empirical is not None:
                end = empirical.quantiles[-1]
            cutoff = self.calendar.data_cutoff
            if cutoff is not None and cutoff < end:
                ends = "enrolment ends" if empirical is None else "the last index date"
                problems.append(
                    f"{where}: calendar.data_cutoff ({cutoff}) falls before {ends} ({end})"
                )
            for name, shift in site.case_mix.items():
                covariate = self.covariates.get(name)
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
                            _check_distribution(shift, f"{where}: case_mix for {name!r}")
                        except ValueError as error:
                            problems.append(str(error))
                elif isinstance(shift, dict):
                    problems.append(f"{where}: case_mix for numeric {name!r} must be a number")
        if self.calendar.enrolment_end < self.calendar.enrolment_start:
            problems.append("calendar: enrolment_end is before enrolment_start")
        return problems

    def _process_problems(self) -> list[str]:
        transient = {s.name for s in self.states if not s.absorbing}
        problems = []

        def unknown(where: str, states) -> None:
            for state in states:
                if state not in transient:
                    problems.append(
                        f"{where}: {state!r} is not a transient state; expected one of "
                        f"{sorted(transient)}"
                    )

        visit_types = [v.type for v in self.visits]
        for v in self.visits:
            unknown(f"visits ({v.type})", v.rates_per_year)
        problems += [f"visits: type {t!r} is declared twice" for t in sorted(set(visit_types))
                     if visit_types.count(t) > 1]
        for m in self.measurements:
            where = f"measurements ({m.name})"
            unknown(where, list(m.mean) + list(m.trend_per_year))
            for t in m.visit_types or []:
                if t not in visit_types:
                    problems.append(f"{where}: unknown visit type {t!r}; expected {visit_types}")
            if not m.min < m.max:
                problems.append(f"{where}: min must be below max")
        for d in self.drugs:
            where = f"drugs ({d.name})"
            unknown(where, d.on_entry)
            for name, levels in d.when.items():
                covariate = self.covariates.get(name)
                if not isinstance(covariate, CategoricalCovariate):
                    problems.append(f"{where}: 'when' needs a categorical covariate, got {name!r}")
                elif set(levels) - set(covariate.levels):
                    problems.append(
                        f"{where}: 'when' {name!r} names unknown levels "
                        f"{sorted(set(levels) - set(covariate.levels))}"
                    )
        return problems

    def _concept_problems(self) -> list[str]:
        codes = set(self.event_codes())
        return [
            f"concepts: {code!r} is not an event this scenario produces; expected one of "
            f"{sorted(codes)}"
            for code in self.concepts
            if code not in codes
        ]

    def _endpoint_problems(self) -> list[str]:
        problems = []
        for i, endpoint in enumerate(self.endpoints):
            named = list(endpoint.get("events", [])) + list(endpoint.get("competing", []))
            origin = endpoint.get("origin", "index")
            named += [] if origin == "index" else [origin]
            for state in named:
                if state not in self.state_names:
                    problems.append(
                        f"endpoints[{i}] ({endpoint.get('name', '?')}): unknown state "
                        f"{state!r}; expected one of {self.state_names}"
                    )
        return problems

    def _baseline_problems(self) -> list[str]:
        if self.baseline is None:
            return []
        table, file = self.baseline.table(), self.baseline.rows
        where = f"baseline (rows {file})"
        problems = []
        site_column = self.baseline.site_column
        if site_column not in table.columns:
            problems.append(f"{where}: site_column {site_column!r} is not a column of the file; "
                            f"it has {table.columns}")
        if self.baseline.columns == []:
            problems.append(f"{where}: columns is empty; name the covariates the rows replace, "
                            "or leave it out for every declared covariate in the file")
        if self.baseline.columns is not None:
            for name in self.baseline.columns:
                if name not in self.covariates:
                    problems.append(f"{where}: columns names {name!r}, which is not a declared "
                                    f"covariate; declared: {sorted(self.covariates)}")
                elif name not in table.columns:
                    problems.append(f"{where}: columns names {name!r}, which is not a column of "
                                    f"the file; it has {table.columns}")
        elif not self.baseline_columns():
            problems.append(f"{where}: the file has none of the declared covariates "
                            f"{sorted(self.covariates)} as a column; it has {table.columns}")
        if problems:
            return problems
        for name in [site_column, *self.baseline_columns()]:
            column = table.get_column(name)
            missing = column.null_count() + (
                int((~column.is_finite()).sum()) if column.dtype.is_float() else 0)
            if missing:
                problems.append(f"{where}: column {name!r} has {missing} null, NaN or infinite "
                                "value(s); every row must be complete in the columns used")
        for name in self.baseline_columns():
            column, spec = table.get_column(name), self.covariates[name]
            if isinstance(spec, CategoricalCovariate):
                unknown = sorted(set(column.drop_nulls().cast(pl.String).unique().to_list())
                                 - set(spec.levels))
                if unknown:
                    problems.append(f"{where}: column {name!r} has value(s) {unknown[:10]} "
                                    f"outside the declared levels {list(spec.levels)}")
            elif not (column.dtype.is_numeric() or column.dtype == pl.Boolean):
                problems.append(f"{where}: covariate {name!r} is numeric ({spec.kind}) but the "
                                f"file's column is {column.dtype}")
            elif name == "age" and (column.cast(pl.Float64) < 0).any():
                problems.append(f"{where}: column 'age' has negative values")
        if site_column in table.columns:
            present = set(table.get_column(site_column).drop_nulls().cast(pl.String).to_list())
            empty = [s.name for s in self.sites if s.name not in present]
            if empty:
                problems.append(f"{where}: no rows for site(s) {empty} in column "
                                f"{site_column!r}; it holds {sorted(present)[:10]}")
        return problems

    def _copula_problems(self) -> list[str]:
        if self.copula is None:
            return []
        names, matrix = self.copula.covariates, self.copula.correlation
        problems = [f"copula: covariates names {n!r} twice" for n in sorted(set(names))
                    if names.count(n) > 1]
        if len(names) < 2:
            problems.append(f"copula: covariates needs at least two covariates, got {names}")
        for name in names:
            if name not in self.covariates:
                problems.append(f"copula: covariates names {name!r}, which is not a declared "
                                f"covariate; declared: {sorted(self.covariates)}")
            elif name in self.baseline_columns():
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
        for table, key in [(data["calendar"], "index_dates"), (data["followup"], "censoring"),
                           *((site, key) for site in data["sites"]
                             for key in ("index_dates", "censoring"))]:
            if table[key] is None:
                del table[key]
        canonical = json.dumps(data, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()
