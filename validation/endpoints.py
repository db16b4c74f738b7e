"""Endpoint definitions (overall survival, event-free survival...) and per-person endpoint times.

An :class:`Endpoint` names the states whose entry ends it, the states whose entry is a
competing event, and where its clock starts; :func:`endpoint_times` turns a cohort into one
row per person (time, event 0/1/2, covariates) for the survival estimators.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trajectories.cohort import Cohort
from trajectories.errors import EndpointError
from trajectories.tomlfile import explain, read_toml

CENSORED, EVENT, COMPETING = 0, 1, 2
"""Values of the ``event`` column of :func:`endpoint_times`."""

INDEX = "index"
OUTPUT_COLUMNS = ("person_id", "site", "time", "event")
EXTRA_PERSON_COLUMNS = ("sex",)
"""Data-model person columns passed on as covariates besides the scenario's own."""

StateName = Annotated[str, Field(min_length=1, max_length=64)]
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.\-]*$"
"""Endpoint names: a letter, then letters, digits, '_', '.' or '-' (64 at most)."""


class Endpoint(BaseModel):
    """A time-to-event endpoint defined on the cohort's states.

    ``events``: entering any of these states ends it (the first one counts); ``competing``:
    entering one of these first is a competing event (code 2); ``origin``: "index" (time 0)
    or a state, the clock then starting when it is first entered (persons never entering it
    are left out). Only state entries after the origin count.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
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
    """One row per person at risk for ``endpoint``: person_id, site, time, event, covariates.

    ``time`` is days from the origin to the first entry into an event state (code 1), to
    an earlier entry into a competing state (code 2), or else to ``followup_end``
    (code 0, censored). Covariates are ``sex`` and the cohort's scenario covariates, so that
    Cox models can use them. Rows follow the order of ``cohort.persons``.
    """
    clash = [c for c in OUTPUT_COLUMNS[2:] if c in cohort.covariates]
    if clash:
        raise EndpointError(
            f"endpoint {endpoint.name!r}: the cohort has covariate column(s) {clash}, which "
            "clash with the output columns time/event; rename them"
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
            .alias("event"),
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
    next_states: Sequence[str] | None = None,
) -> list[Endpoint]:
    """Overall survival (entry into any death state) and, when some state is neither initial
    nor death, event-free survival (first move out of the initial state, or death).

    ``initial`` defaults to the first of ``state_names``. With several initial states, the
    event-free endpoint counts entry into any state after the first, i.e. the first move.
    Without death states, given ``next_states``: :func:`first_move_endpoints`.
    """
    initial_states = [state_names[0]] if initial is None else (
        [initial] if isinstance(initial, str) else list(initial)
    )
    if not death_states and next_states is not None:
        return first_move_endpoints(state_names, initial_states, next_states)
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


def next_states(cohort: Cohort) -> list[str]:
    """States that some person's first move enters (out of the initial state), in order of
    first appearance."""
    moves = cohort.state_spells().filter(pl.col("first") & pl.col("next_state").is_not_null())
    return moves.get_column("next_state").unique(maintain_order=True).to_list()


def _endpoint_name(prefix: str, state: str, number: int) -> str:
    """``prefix_state``, or ``prefix_number`` where the state's name cannot be part of a name."""
    name = f"{prefix}_{state}"
    return name if len(name) <= 64 and re.match(NAME_PATTERN, name) else f"{prefix}_{number}"


def first_move_endpoints(
    state_names: Sequence[str], initial: Sequence[str], next_states: Sequence[str]
) -> list[Endpoint]:
    """Endpoints of a cohort without death: time out of the initial state (its first move is
    the event) and, with two or more ``next_states`` (those the first move enters), the
    cumulative incidence of each, every other first move competing.

    With several initial states the time out counts the first move out of whichever one;
    with one next state its cumulative incidence is 1 - that survival, so it is left out;
    with none (the initial state is never left) there is no endpoint.
    """
    initial = list(initial)
    unknown = sorted(set(initial) - set(state_names)) + sorted(set(next_states)
                                                               - set(state_names))
    if unknown or not initial:
        raise EndpointError(
            f"default endpoints: initial states {initial} and next states {list(next_states)} "
            f"must be states of {list(state_names)}; unknown: {unknown}"
        )
    if not next_states:
        return []
    if len(initial) == 1:
        events = [s for s in state_names if s != initial[0]]
        name = _endpoint_name("time_out_of", initial[0], 1)
        what = f"the initial state {initial[0]!r}"
    else:
        events, name, what = list(state_names), "time_out_of_initial_state", "the initial state"
    endpoints = [Endpoint(name=name, description=f"time out of {what}: time to its first "
                          "move, to any state", events=events)]
    following = [s for s in state_names if s in next_states]
    if len(following) < 2:
        return endpoints
    names = [_endpoint_name("cumulative_incidence", s, i) for i, s in enumerate(following, 1)]
    if len(set(names)) < len(names):  # a numbered name met a state named like a number
        names = [f"cumulative_incidence_{i}" for i in range(1, len(following) + 1)]
    for name, state in zip(names, following, strict=True):
        endpoints.append(Endpoint(
            name=name,
            description=f"cumulative incidence of {state!r}: the first move out of {what} "
                        "enters it; other first moves compete",
            events=[state], competing=[s for s in events if s != state]))
    return endpoints


def _listed(names: Sequence[str], conjunction: str = "and") -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else (
        ", ".join(quoted[:-1]) + f" {conjunction} " + quoted[-1])


def default_endpoints_note(endpoints: Sequence[Endpoint], death_states: Sequence[str],
                           initial: Sequence[str], next_states: Sequence[str] = (),
                           where: str = "the reference") -> str:
    """Which default endpoints were chosen and why, in a sentence."""
    if death_states:
        chosen = " and ".join(e.description.split(":")[0] for e in endpoints)
        return f"death state(s) {_listed(death_states)} in {where}: default " \
               f"endpoint{'s are' if len(endpoints) > 1 else ' is'} {chosen}"
    out_of = _listed(initial) if len(initial) == 1 else (
        f"the initial state ({_listed(initial, 'or')})")
    if not endpoints:
        return f"no death state in {where}, and no person leaves {out_of}: no default " \
               "endpoint; declare endpoints to get survival checks"
    incidences = [e.events[0] for e in endpoints if e.competing]
    if incidences:
        return f"no death state in {where}: default endpoints are time out of {out_of} and " \
               f"the cumulative incidence of {_listed(incidences)}, each against the others"
    return f"no death state in {where}: default endpoint is time out of {out_of}" + (
        f" (its only next state is {_listed(next_states)})" if len(next_states) == 1 else "")
