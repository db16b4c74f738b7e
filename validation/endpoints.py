"""Endpoint definitions (overall survival, event-free survival...) and per-person endpoint times.

An :class:`Endpoint` names the states whose entry ends it, the states whose entry is a
competing event, and where its clock starts; :func:`endpoint_times` turns a cohort into one
row per person (time, status 0/1/2, covariates) for the survival estimators.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trajectories.cohort import Cohort
from trajectories.errors import TrajectoriesError
from trajectories.tomlfile import explain, read_toml

CENSORED, EVENT, COMPETING = 0, 1, 2
"""Values of the ``status`` column of :func:`endpoint_times`."""

INDEX = "index"
OUTPUT_COLUMNS = ("person_id", "site", "time", "status")
EXTRA_PERSON_COLUMNS = ("sex",)
"""Data-model person columns passed on as covariates besides the scenario's own."""

StateName = Annotated[str, Field(min_length=1, max_length=64)]


class EndpointError(TrajectoriesError):
    """An endpoint definition is invalid or cannot be applied to a cohort."""


class Endpoint(BaseModel):
    """A time-to-event endpoint defined on the cohort's states.

    ``events``: entering any of these states ends it (the first one counts); ``competing``:
    entering one of these first is a competing event (status 2); ``origin``: "index" (time 0)
    or a state, the clock then starting when it is first entered (persons never entering it
    are left out). Only state entries after the origin count.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$", max_length=64)]
    description: str = ""
    events: list[StateName]
    competing: list[StateName] = Field(default_factory=list)
    origin: StateName = INDEX

    @model_validator(mode="after")
    def _consistent(self) -> Endpoint:
        where = f"endpoint {self.name!r}"
        if not self.events:
            raise ValueError(f"{where}: events must name at least one state")
        for field, names in (("events", self.events), ("competing", self.competing)):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{where}: {field} lists {duplicated} more than once")
        both = sorted(set(self.events) & set(self.competing))
        if both:
            raise ValueError(f"{where}: {both} cannot be both an event and a competing event")
        if self.origin in self.events or self.origin in self.competing:
            raise ValueError(
                f"{where}: origin {self.origin!r} cannot also end the endpoint (events or "
                "competing)"
            )
        return self


# -- per-person times ---------------------------------------------------------------------------


def _first_entries(
    spells: pl.DataFrame, states: Sequence[str], origins: pl.DataFrame
) -> pl.DataFrame:
    """Per person, the first entry into one of ``states`` after the origin entry."""
    return (
        spells.filter(pl.col("state").is_in(list(states)))
        .join(origins, on="person_id", how="inner")
        .filter(pl.col("rank") > pl.col("origin_rank"))
        .group_by("person_id")
        .agg(pl.col("rank").min(), pl.col("start").min())
    )


def endpoint_times(cohort: Cohort, endpoint: Endpoint) -> pl.DataFrame:
    """One row per person at risk for ``endpoint``: person_id, site, time, status, covariates.

    ``time`` is days from the origin to the first entry into an event state (status 1), to
    an earlier entry into a competing state (status 2), or else to ``followup_end``
    (status 0, censored). Covariates are ``sex`` and the cohort's scenario covariates, so that
    Cox models can use them. Rows follow the order of ``cohort.persons``.
    """
    clash = [c for c in OUTPUT_COLUMNS[2:] if c in cohort.covariates]
    if clash:
        raise EndpointError(
            f"endpoint {endpoint.name!r}: the cohort has covariate column(s) {clash}, which "
            "clash with the output columns time/status; rename them"
        )
    spells = cohort.state_spells().with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).over("person_id").alias("rank")
    )
    if endpoint.origin == INDEX:
        origins = cohort.persons.select(
            "person_id",
            pl.lit(0, pl.Int64).alias("origin_rank"),
            pl.lit(0.0).alias("origin_time"),
        )
    else:
        origins = (
            spells.filter(pl.col("state") == endpoint.origin)
            .group_by("person_id")
            .agg(pl.col("rank").min().alias("origin_rank"), pl.col("start").min().alias(
                "origin_time"))
        )
        if origins.height == 0:
            raise EndpointError(
                f"endpoint {endpoint.name!r}: no person ever enters the origin state "
                f"{endpoint.origin!r}"
            )
    events = _first_entries(spells, endpoint.events, origins)
    competing = _first_entries(spells, endpoint.competing, origins)
    event_rank, competing_rank = pl.col("event_rank"), pl.col("competing_rank")
    event_first = event_rank.is_not_null() & (
        competing_rank.is_null() | (event_rank < competing_rank)
    )
    competing_first = competing_rank.is_not_null() & ~event_first
    covariates = [c for c in EXTRA_PERSON_COLUMNS if c in cohort.persons.columns]
    covariates += cohort.covariates
    return (
        cohort.persons.join(origins, on="person_id", how="inner", maintain_order="left")
        .join(
            events.rename({"rank": "event_rank", "start": "event_time"}),
            on="person_id",
            how="left",
            maintain_order="left",
        )
        .join(
            competing.rename({"rank": "competing_rank", "start": "competing_time"}),
            on="person_id",
            how="left",
            maintain_order="left",
        )
        .select(
            "person_id",
            "site",
            (
                pl.when(event_first)
                .then(pl.col("event_time"))
                .when(competing_first)
                .then(pl.col("competing_time"))
                .otherwise(pl.col("followup_end"))
                - pl.col("origin_time")
            ).alias("time"),
            pl.when(event_first)
            .then(EVENT)
            .when(competing_first)
            .then(COMPETING)
            .otherwise(CENSORED)
            .cast(pl.Int8)
            .alias("status"),
            *covariates,
        )
    )


# -- where endpoints come from ------------------------------------------------------------------


def endpoints_from_list(entries: Any, source: str = "<list>") -> list[Endpoint]:
    """Validate parsed ``[[endpoints]]`` tables; errors name the source, entry and field."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EndpointError(f"{source}: 'endpoints' must be an array of tables ([[endpoints]])")
    endpoints = []
    for i, entry in enumerate(entries):
        label = f"endpoints[{i}]" + (f" ({entry['name']})" if "name" in entry else "")
        try:
            endpoints.append(Endpoint.model_validate(entry))
        except ValidationError as error:
            problems = explain(error, prefix=label)
            raise EndpointError(f"invalid endpoints in {source}:\n" + "\n".join(problems)) from None
    names = [e.name for e in endpoints]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise EndpointError(f"{source}: endpoint name(s) {duplicated} declared more than once")
    return endpoints


def load_endpoints(path: str | Path) -> list[Endpoint]:
    """Read the ``[[endpoints]]`` tables of a TOML file (a scenario file may carry them);
    a file without any gives an empty list."""
    data = read_toml(path, "endpoints file", EndpointError)
    return endpoints_from_list(data.get("endpoints", []), source=str(path))


def default_endpoints(
    state_names: Sequence[str],
    death_states: Sequence[str],
    initial: str | Sequence[str] | None = None,
) -> list[Endpoint]:
    """Overall survival (entry into any death state) and, when some state is neither initial
    nor death, event-free survival (first move out of the initial state, or death).

    ``initial`` defaults to the first of ``state_names``. With several initial states, the
    event-free endpoint counts entry into any state after the first, i.e. the first move.
    """
    initial_states = [state_names[0]] if initial is None else (
        [initial] if isinstance(initial, str) else list(initial)
    )
    unknown = sorted(set(death_states) - set(state_names))
    if unknown or not death_states:
        raise EndpointError(
            f"default endpoints: death states {list(death_states)} must be a non-empty subset "
            f"of the states {list(state_names)}"
        )
    endpoints = [
        Endpoint(
            name="overall_survival",
            description="overall survival: time to death from any cause",
            events=list(death_states),
        )
    ]
    others = [s for s in state_names if s not in initial_states and s not in death_states]
    if others:
        events = (
            [s for s in state_names if s not in initial_states]
            if len(initial_states) == 1
            else list(state_names)
        )
        endpoints.append(
            Endpoint(
                name="event_free_survival",
                description="event-free survival: time to the first move out of the initial "
                "state, or death",
                events=events,
            )
        )
    return endpoints
