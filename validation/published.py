"""A reference given as a paper's figures instead of a cohort.

A published-figures TOML file lists, per endpoint, landmark survival or cumulative incidence
with confidence intervals, medians with intervals, hazard ratios with intervals and jump-chain
transition probabilities. Each figure becomes one check: the synthetic estimate must fall in
the published interval. Times are in ``time_unit`` (days, weeks, months or years).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trajectories.errors import TrajectoriesError
from trajectories.tomlfile import explain, read_toml
from validation.endpoints import Endpoint

UNIT_DAYS = {"days": 1.0, "weeks": 7.0, "months": 30.4375, "years": 365.25}


class _Figure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float
    lower: float
    upper: float
    site: str | None = Field(default=None, description="restrict to one site")
    group: dict[str, str] = Field(
        default_factory=dict, description="restrict to persons with these covariate levels"
    )
    label: str = ""

    @model_validator(mode="after")
    def _ordered(self):
        if not self.lower <= self.value <= self.upper:
            raise ValueError(f"needs lower <= value <= upper, got {self.lower}, {self.value}, "
                             f"{self.upper}")
        return self

    def restrict(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``frame`` (per-person rows or tallies, with site and covariate columns)
        that this figure is about: its site and covariate levels."""
        if self.site is not None:
            frame = frame.filter(pl.col("site") == self.site)
        for name, level in self.group.items():
            frame = frame.filter(pl.col(name).cast(pl.String) == level)
        return frame


class LandmarkFigure(_Figure):
    """Survival (or cumulative incidence, for endpoints with competing events) at a time."""

    kind: Literal["survival_at", "cumulative_incidence_at"]
    endpoint: str
    time: float = Field(gt=0)


class MedianFigure(_Figure):
    """Median time to the endpoint with its interval."""

    kind: Literal["median"]
    endpoint: str


class HazardRatioFigure(_Figure):
    """Hazard ratio of a covariate level (or per unit of a numeric covariate) for an endpoint."""

    kind: Literal["hazard_ratio"]
    endpoint: str
    covariate: str
    level: str | None = Field(default=None, description="categorical level versus reference")
    reference_level: str | None = None


class TransitionFigure(_Figure):
    """Probability that the next state after ``from`` is ``to`` (jump chain)."""

    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["transition_probability"]
    from_state: str = Field(alias="from")
    to_state: str = Field(alias="to")


Figure = Annotated[
    LandmarkFigure | MedianFigure | HazardRatioFigure | TransitionFigure,
    Field(discriminator="kind"),
]


class PublishedFigures(BaseModel):
    """A published-figures file: its source, its endpoints and its figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = ""
    time_unit: Literal["days", "weeks", "months", "years"] = "days"
    endpoints: list[Endpoint] = Field(default_factory=list)
    figures: list[Figure]

    @model_validator(mode="after")
    def _known_endpoints(self):
        names = {e.name for e in self.endpoints}
        for i, figure in enumerate(self.figures):
            endpoint = getattr(figure, "endpoint", None)
            if endpoint is not None and names and endpoint not in names:
                raise ValueError(
                    f"figures[{i}]: unknown endpoint {endpoint!r}; expected one of "
                    f"{sorted(names)}"
                )
        return self

    @property
    def days_per_unit(self) -> float:
        return UNIT_DAYS[self.time_unit]


def load_published(path: str | Path) -> PublishedFigures:
    """Read a published-figures TOML file; errors name the file and the entry."""
    data = read_toml(path, "published figures", TrajectoriesError)
    try:
        return PublishedFigures.model_validate(data)
    except ValidationError as error:
        problems = "\n".join(explain(error))
        raise TrajectoriesError(f"invalid published figures {path}:\n{problems}") from None


def is_published_figures(path: str | Path) -> bool:
    """True when ``path`` is a TOML file with ``[[figures]]`` (rather than a cohort folder)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        return "figures" in tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
