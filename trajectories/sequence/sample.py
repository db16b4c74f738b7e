"""Batched sampling of whole cohorts from a trained sequence network.

Persons are drawn in blocks, each from its own seeded stream, all persons of a block advancing
one token per step: first the static prefix (fixed where conditioned, the fixed variables
first), then the initial state at time 0, then events until an end mark (whose time is the end
of follow-up), an absorbing state (the end of follow-up is its time; exit death for states
where persons died in training, absorbed otherwise), the longest follow-up seen in training at
the person's site (exit administrative_censoring) or the events cap (exit censored). Moves
never seen in training are masked, a state never follows time 0 at time 0, and gaps are never
negative. Durations are drawn when the event happens and cut at the end of follow-up, as in
the data.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from trajectories.cohort import PERSON_COLUMNS
from trajectories.errors import TrajectoriesError
from trajectories.sequence.model import (
    NEGATIVE,
    EventSequenceNet,
    categorical_sample,
    mixture_sample,
    time_features,
    truncated_mixture_sample,
)
from trajectories.sequence.tokenizer import (
    BIRTH_OFFSET,
    BOS,
    FEATURES,
    INDEX_DAY,
    NULL_LEVEL,
    StaticVariable,
    Vocabulary,
)
from trajectories.sequence.train import longest_follow_up, site_column

DAYS_PER_YEAR = 365.25
COMPACT_BELOW = 0.8
"""Finished persons are dropped from the batch (and its cache) once fewer than this share of
its rows are still running."""
EXTRA_EXITS = ["death", "absorbed", "censored", "administrative_censoring"]


@dataclass
class _Tables:
    """Per-token constants on the sampling device."""

    masks: torch.Tensor
    state_of: torch.Tensor
    absorbing: torch.Tensor
    death: torch.Tensor
    is_end: torch.Tensor
    value_rate: torch.Tensor
    value_mean: torch.Tensor
    value_sd: torch.Tensor
    value_min: torch.Tensor
    value_max: torch.Tensor
    value_scale: torch.Tensor  # 10 ** decimals, 0 where values are not rounded
    end_rate: torch.Tensor
    bin_low: torch.Tensor
    bin_high: torch.Tensor
    longest: torch.Tensor  # per token: the longest follow-up at a site token's site

    @classmethod
    def of(cls, vocab: Vocabulary, device: torch.device) -> _Tables:
        size = vocab.size
        codes = slice(vocab.first_code, vocab.first_code + len(vocab.codes))

        def per_token(values: list, fill: float = 0.0) -> torch.Tensor:
            array = np.full(size, fill)
            array[codes] = values
            return torch.as_tensor(array, device=device, dtype=torch.float64)

        position = vocab.token_of()
        flags = {name: np.zeros(size, dtype=bool) for name in ("absorbing", "death", "end")}
        flags["absorbing"][[position[s] for s in vocab.absorbing]] = True
        flags["death"][[position[s] for s in vocab.death]] = True
        flags["end"][vocab.first_end:vocab.first_end + len(vocab.exits)] = True
        decimals = [0.0 if d is None else 10.0 ** d for d in vocab.value_decimals]
        low, high = vocab.end_bounds()
        return cls(
            masks=torch.as_tensor(vocab.mask_table(), device=device),
            state_of=torch.as_tensor(vocab.state_index(), device=device),
            absorbing=torch.as_tensor(flags["absorbing"], device=device),
            death=torch.as_tensor(flags["death"], device=device),
            is_end=torch.as_tensor(flags["end"], device=device),
            value_rate=per_token(vocab.value_rate),
            value_mean=per_token(vocab.value_mean),
            value_sd=per_token(vocab.value_sd, 1.0),
            value_min=per_token(vocab.value_min),
            value_max=per_token(vocab.value_max),
            value_scale=per_token(decimals),
            end_rate=per_token(vocab.end_rate),
            bin_low=torch.as_tensor(low, device=device, dtype=torch.float64),
            bin_high=torch.as_tensor(high, device=device, dtype=torch.float64),
            longest=torch.as_tensor(longest_follow_up(vocab), device=device,
                                    dtype=torch.float64),
        )


# -- conditions ----------------------------------------------------------------------------------


def resolve_conditions(vocab: Vocabulary, conditions: dict[str, Any] | None
                       ) -> dict[int, tuple[int, float | None]]:
    """Static variable index -> (token, exact numeric value or None) for each condition."""
    by_name = {v.name: i for i, v in enumerate(vocab.statics) if v.name != BIRTH_OFFSET}
    fixed = {}
    for name, value in (conditions or {}).items():
        if name not in by_name:
            raise TrajectoriesError(f"conditions: unknown variable {name!r}; expected one of "
                                    f"{sorted(by_name)}")
        variable = vocab.statics[by_name[name]]
        if variable.kind == "categorical":
            level = NULL_LEVEL if value is None else str(value).lower() \
                if isinstance(value, bool) else str(value)
            level = _numeric_level(variable, level)
            if level not in variable.levels:
                raise TrajectoriesError(f"conditions: {name} = {value!r} was never seen in "
                                        f"training; levels: {variable.levels}")
            fixed[by_name[name]] = (variable.first_token + variable.levels.index(level), None)
            continue
        if isinstance(value, str):  # from the command line: a number, or a date
            try:
                value = dt.date.fromisoformat(value) if name == INDEX_DAY else float(value)
            except ValueError:
                raise TrajectoriesError(f"conditions: {name} = {value!r} is not a "
                                        f"{'date' if name == INDEX_DAY else 'number'}") from None
        if isinstance(value, dt.date):
            value = (value - dt.date(1970, 1, 1)).days
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise TrajectoriesError(f"conditions: {name} must be a finite number, got {value!r}")
        low, high = variable.edges[0], variable.edges[-1]
        if not low <= value <= high:
            raise TrajectoriesError(f"conditions: {name} = {value} is outside the training "
                                    f"range [{low:g}, {high:g}]")
        token = variable.first_token + int(variable.bin_of(np.array([float(value)]))[0])
        fixed[by_name[name]] = (token, float(value))
    return fixed


def _numeric_level(variable: StaticVariable, level: str) -> str:
    """The listed level equal to ``level`` as a number (``1`` for a flag's ``1.0``), if any."""
    if level in variable.levels:
        return level
    try:
        value = float(level)
    except ValueError:
        return level
    for listed in variable.levels:
        try:
            if float(listed) == value:
                return listed
        except ValueError:
            continue
    return level


# -- the sampling loop ---------------------------------------------------------------------------


class _Recorder:
    """Events as they are drawn, step by step, on the device."""

    def __init__(self) -> None:
        self.parts: list[tuple[torch.Tensor, ...]] = []

    def add(self, keep, person, token, time, value, duration) -> None:
        self.parts.append(tuple(a[keep] for a in (person, token, time, value, duration)))

    def arrays(self) -> tuple[np.ndarray, ...]:
        columns = [torch.cat([p[i] for p in self.parts]).cpu().numpy() for i in range(5)]
        order = np.argsort(columns[0], kind="stable")
        return tuple(c[order] for c in columns)


def _attributes(heads: list[torch.Tensor], tables: _Tables, vocab: Vocabulary, mark,
                generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and duration of the events ``mark`` (NaN where the code has none)."""
    device = mark.device
    u = torch.rand((mark.numel(), 3), generator=generator, device=device, dtype=torch.float64)
    z = mixture_sample(heads[2], generator).double()
    value = (tables.value_mean[mark] + tables.value_sd[mark] * z).clamp(
        tables.value_min[mark], tables.value_max[mark])
    scale = tables.value_scale[mark]
    value = torch.where(scale > 0, torch.round(value * scale) / scale.clamp_min(1), value)
    value = torch.where(u[:, 0] < tables.value_rate[mark], value, torch.nan)
    params = heads[3]
    log_duration = vocab.duration_loc + vocab.duration_scale * mixture_sample(
        params[:, 1:], generator).double()
    duration = torch.exp(log_duration.clamp(max=math.log(4 * vocab.time_scale)))
    duration = torch.where(u[:, 1] < torch.sigmoid(params[:, 0].double()), 0.0, duration)
    duration = torch.where(u[:, 2] < tables.end_rate[mark], duration, torch.nan)
    return value, duration


def sample_block(net: EventSequenceNet, vocab: Vocabulary, tables: _Tables, m: int,
                 fixed: dict[int, tuple[int, float | None]], generator: torch.Generator,
                 max_events: int) -> dict[str, np.ndarray]:
    """Static tokens, events, follow-up and exits of ``m`` persons (local indices 0..m-1)."""
    device = tables.masks.device
    statics = vocab.statics
    order = list(fixed) + [i for i in range(len(statics)) if i not in fixed]
    cache = net.backbone.start(m, device, torch.float32)
    token = torch.full((m,), BOS, device=device)
    none = torch.zeros(m, dtype=torch.long, device=device)
    feats = torch.zeros((m, FEATURES), device=device)
    static = torch.empty((m, len(statics)), dtype=torch.long, device=device)
    position = 0
    for index in order:
        history = net.step(token, none, feats, cache, position)
        position += 1
        if index in fixed:
            token = torch.full((m,), fixed[index][0], device=device)
        else:
            first = statics[index].first_token
            logits = net.mark(history)[:, first:first + statics[index].n_tokens]
            token = categorical_sample(logits, generator) + first
        static[:, index] = token

    longest = tables.longest[static[:, site_column(vocab)]]
    history = net.step(token, none, feats, cache, position)
    position += 1
    mark = categorical_sample(net.mark(history).masked_fill(~tables.masks[1], NEGATIVE), generator)
    heads = net.attributes(net.conditioned(history, mark))
    value, duration = _attributes(heads, tables, vocab, mark, generator)
    recorder = _Recorder()
    ids = torch.arange(m, device=device)
    time = torch.zeros(m, dtype=torch.float64, device=device)
    recorder.add(torch.ones(m, dtype=torch.bool, device=device), ids, mark, time, value,
                 duration)
    n_exits = len(vocab.exits)
    followup = torch.zeros(m, dtype=torch.float64, device=device)
    exits = torch.full((m,), -1, dtype=torch.long, device=device)
    absorbed = tables.absorbing[mark]
    exits[absorbed] = torch.where(tables.death[mark[absorbed]], n_exits, n_exits + 1)
    alive = ~absorbed
    state, entry, gap = tables.state_of[mark], time.clone(), time.clone()
    value_z = (value - tables.value_mean[mark]) / tables.value_sd[mark]
    count = torch.ones(m, dtype=torch.long, device=device)
    token = mark

    while bool(alive.any()):
        if int(alive.sum()) < COMPACT_BELOW * alive.numel():
            keep = alive.nonzero().squeeze(1)
            cache = net.backbone.select(cache, keep, position)
            ids, time, entry, gap, value_z, state, count, token, alive, longest = (
                a[keep] for a in (ids, time, entry, gap, value_z, state, count, token, alive,
                                  longest))
        feats = time_features(gap, time, entry, longest - time, torch.nan_to_num(value_z),
                              ~torch.isnan(value_z), vocab.time_scale)
        history = net.step(token, state + 1, feats, cache, position)
        position += 1
        mark = categorical_sample(net.mark(history).masked_fill(~tables.masks[2 + state], NEGATIVE),
                             generator)
        heads = net.attributes(net.conditioned(history, mark))
        is_end = tables.is_end[mark]
        # End of follow-up: a bin at or after the current time (and not after the site's
        # longest follow-up), then a time within it.
        reachable = ((tables.bin_high.unsqueeze(0) >= time.unsqueeze(1))
                     & (tables.bin_low.unsqueeze(0) <= longest.unsqueeze(1)))
        chosen = categorical_sample(heads[1].masked_fill(~reachable, NEGATIVE), generator)
        low = torch.maximum(tables.bin_low[chosen], time)
        high = torch.maximum(tables.bin_high[chosen], low)
        u = torch.rand((mark.numel(), 2), generator=generator, device=device,
                       dtype=torch.float64)
        end_time = torch.where(reachable.any(1), low + u[:, 0] * (high - low), time)
        end_time = torch.minimum(end_time, torch.maximum(longest, time))
        # Gap to the next event: zero, or a log-normal mixture draw truncated at the room left
        # before the site's longest follow-up (as in training: events are seen only within).
        params = heads[0]
        room = (longest - time).clamp_min(1e-300)
        upper = (torch.log(room) - vocab.gap_loc) / vocab.gap_scale
        log_gap = vocab.gap_loc + vocab.gap_scale * truncated_mixture_sample(
            params[:, 1:], upper, generator)
        zero = u[:, 1] < torch.sigmoid(params[:, 0].double())
        zero &= ~((tables.state_of[mark] >= 0) & (time == 0))
        new_gap = torch.where(zero, 0.0, torch.minimum(torch.exp(log_gap), room))
        new_time = time + new_gap
        over = ~is_end & (new_time > longest)
        value, duration = _attributes(heads, tables, vocab, mark, generator)
        event = alive & ~is_end & ~over
        recorder.add(event, ids, mark, new_time, value, duration)
        count += event.long()
        absorbing = event & tables.absorbing[mark]
        capped = event & ~absorbing & (count >= max_events)
        done = alive & (is_end | over | absorbing | capped)
        ending = torch.where(is_end, end_time, torch.where(over, longest, new_time))
        reason = torch.where(
            is_end, mark - vocab.first_end, torch.where(
                over, n_exits + 3, torch.where(
                    absorbing, torch.where(tables.death[mark], n_exits, n_exits + 1),
                    n_exits + 2)))
        followup[ids[done]] = ending[done]
        exits[ids[done]] = reason[done]
        moved = tables.state_of[mark] >= 0
        entry = torch.where(moved, new_time, entry)
        state = torch.where(moved, tables.state_of[mark], state)
        value_z = (value - tables.value_mean[mark]) / tables.value_sd[mark]
        time, gap, token, alive = new_time, new_gap, mark, alive & ~done

    person, event_token, event_time, event_value, event_duration = recorder.arrays()
    return {
        "static": static.cpu().numpy(), "person": person, "token": event_token,
        "time": event_time, "value": event_value, "duration": event_duration,
        "followup": followup.cpu().numpy(), "exit": exits.cpu().numpy(),
    }


# -- from tokens back to tables ------------------------------------------------------------------


def _dtype(name: str) -> pl.DataType:
    found = getattr(pl, name, None)
    return found() if isinstance(found, type) and issubclass(found, pl.DataType) else pl.String()


def _static_values(variable: StaticVariable, tokens: np.ndarray, exact: float | None,
                   rng: np.random.Generator) -> pl.Series:
    """A static variable's column from its tokens: a level, or a uniform draw in the bin."""
    local = tokens - variable.first_token
    if variable.kind == "categorical":
        levels = np.array([None if lv == NULL_LEVEL else lv for lv in variable.levels],
                          dtype=object)
        text = pl.Series(variable.name, levels[local], dtype=pl.String)
        dtype = _dtype(variable.dtype)
        if dtype == pl.Boolean:
            return (text == "true").alias(variable.name)
        return text.cast(dtype)
    edges = np.asarray(variable.edges)
    bins = len(edges) - 1
    is_null = local >= bins
    b = np.minimum(local, bins - 1)
    values = edges[b] + rng.random(local.size) * (edges[b + 1] - edges[b])
    if exact is not None:
        values = np.full(local.size, exact)
    if variable.decimals is not None:
        values = np.round(values, variable.decimals)
    series = pl.Series(variable.name, np.where(is_null, np.nan, values), nan_to_null=True)
    dtype = _dtype(variable.dtype)
    if dtype.is_integer():
        return series.round().cast(dtype)
    return series.cast(pl.Float64) if variable.dtype == "Date" else series.cast(dtype)


def persons_frame(vocab: Vocabulary, block: dict[str, np.ndarray], start: int,
                  fixed: dict[int, tuple[int, float | None]],
                  rng: np.random.Generator) -> pl.DataFrame:
    """The persons table of a sampled block (ids from ``start + 1``)."""
    values = {v.name: _static_values(v, block["static"][:, i], fixed.get(i, (0, None))[1], rng)
              for i, v in enumerate(vocab.statics)}
    index_day = values[INDEX_DAY].round().cast(pl.Int64)
    if vocab.birth == "age":
        offset = (values["age"] * DAYS_PER_YEAR).round().cast(pl.Int64)
    elif vocab.birth == "offset":
        offset = values[BIRTH_OFFSET].round().cast(pl.Int64)
    else:
        offset = pl.Series([None] * index_day.len(), dtype=pl.Int64)
    exit_names = pl.Series(vocab.exits + EXTRA_EXITS, dtype=pl.String)
    m = block["followup"].size
    columns = {
        "person_id": pl.Series(np.arange(start + 1, start + m + 1, dtype=np.int64)),
        "site": values["site"].cast(pl.String),
        "index_date": index_day.cast(pl.Date),
        "birth_date": (index_day - offset).cast(pl.Date),
        "sex": values["sex"].cast(pl.String),
        "followup_end": pl.Series(block["followup"], dtype=pl.Float64),
        "exit": exit_names.gather(block["exit"]),
    }
    frame = pl.DataFrame(columns).with_columns(pl.col(c).cast(t)
                                               for c, t in PERSON_COLUMNS.items())
    return frame.with_columns(values[name].alias(name) for name, _ in vocab.columns)


def events_frame(vocab: Vocabulary, block: dict[str, np.ndarray], start: int) -> pl.DataFrame:
    """The events table of a sampled block; durations cut at each person's end of follow-up."""
    person = block["person"]
    time = block["time"]
    end_time = np.minimum(time + block["duration"], block["followup"][person])
    codes = pl.Series(vocab.tokens, dtype=pl.String)
    return pl.DataFrame({
        "person_id": pl.Series(person + start + 1, dtype=pl.Int64),
        "time": pl.Series(time, dtype=pl.Float64),
        "end_time": pl.Series(end_time, dtype=pl.Float64, nan_to_null=True),
        "code": codes.gather(block["token"]),
        "value": pl.Series(block["value"], dtype=pl.Float64, nan_to_null=True),
    })


def block_seed(seed: int, block: int) -> int:
    """The torch seed of one block, from (seed, block) through numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0] >> 1)
