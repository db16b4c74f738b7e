"""Tokens of the sequence model: a vocabulary learnt from a cohort, and cohorts as token arrays.

A person becomes ``[BOS]`` + one token per static variable (site, sex, covariates, index date;
numeric ones binned at training quantiles) + one token per event (its code, with the gap since
the previous event, the value and the duration alongside) + an end-of-history token naming the
exit (``end:administrative_censoring``...) whose time is ``followup_end``, unless the history
ends in an absorbing state, which ends it by itself (its exit is death or absorbed).
Events at one instant are put states first; anything after the first absorbing state is dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort
from trajectories.errors import TrajectoriesError

PAD, BOS = 0, 1
END_PREFIX = "end:"
NULL_LEVEL = "<null>"
ABSORBED_EXITS = ("death", "absorbed")
FORCED_EXITS = ("death", "absorbed", "censored")
"""Exits the sampler sets itself: absorbing states, and histories cut at the events cap."""
MAX_CATEGORICAL_INTEGERS = 20
"""Integer covariates with at most this many distinct values are taken as categorical."""
FEATURES = 7
"""Per-token input features: log gap, log time, log time in state, time / scale, log time left
before the site's longest follow-up, value, has value (see ``model.time_features``)."""
BIRTH_OFFSET = "_birth_offset_days"
INDEX_DAY = "index_date"
EPOCH = np.datetime64("1970-01-01", "D")


@dataclass
class StaticVariable:
    """A person-level variable of the prefix: categorical levels, or numeric bins (+ null)."""

    name: str
    kind: str  # "categorical" | "numeric"
    dtype: str  # the persons column's polars dtype, restored on sampling
    first_token: int
    levels: list[str] = field(default_factory=list)
    edges: list[float] = field(default_factory=list)
    has_null: bool = False
    decimals: int | None = None

    @property
    def n_tokens(self) -> int:
        if self.kind == "categorical":
            return len(self.levels)
        return len(self.edges) - 1 + int(self.has_null)

    def token_names(self) -> list[str]:
        if self.kind == "categorical":
            return [f"{self.name}={level}" for level in self.levels]
        bins = [f"{self.name}#{b}" for b in range(len(self.edges) - 1)]
        return bins + ([f"{self.name}={NULL_LEVEL}"] if self.has_null else [])

    def encode(self, values: pl.Series) -> np.ndarray:
        """Token ids of ``values``; unknown levels raise an error naming the column."""
        if self.kind == "categorical":
            text = values.cast(pl.String).fill_null(NULL_LEVEL)
            unknown = set(text.unique().to_list()) - set(self.levels)
            if unknown:
                raise TrajectoriesError(
                    f"persons.{self.name}: level(s) {sorted(unknown)} unseen in training; "
                    f"known: {self.levels}"
                )
            index = {level: i for i, level in enumerate(self.levels)}
            codes = text.replace_strict(index, return_dtype=pl.Int64).to_numpy()
            return self.first_token + codes
        array = values.cast(pl.Float64).to_numpy()
        bins = self.bin_of(array)
        nulls = np.isnan(array)
        if nulls.any() and not self.has_null:
            raise TrajectoriesError(f"persons.{self.name}: null values, unseen in training")
        return self.first_token + np.where(nulls, len(self.edges) - 1, bins)

    def bin_of(self, values: np.ndarray) -> np.ndarray:
        """Bin index of numeric values (outside the training range: the nearest bin)."""
        inner = np.asarray(self.edges[1:-1])
        return np.searchsorted(inner, np.nan_to_num(values), side="right")


@dataclass
class Vocabulary:
    """Everything the network and the sampler need to know about the training cohort.

    Token ids: 0 padding, 1 start, then the static variables' tokens, the event codes, and
    the end-of-history marks (one per exit). ``allowed`` lists, for each state, the marks
    (codes and end marks) seen right after an event while in that state: the rest is masked.
    """

    tokens: list[str]
    statics: list[StaticVariable]
    codes: list[str]
    first_code: int
    exits: list[str]
    first_end: int
    states: list[str]
    absorbing: list[str]
    death: list[str]
    initial: list[str]
    allowed: dict[str, list[str]]
    value_rate: list[float]
    value_mean: list[float]
    value_sd: list[float]
    value_min: list[float]
    value_max: list[float]
    value_decimals: list[int | None]
    end_rate: list[float]
    end_atoms: list[float]
    end_edges: list[float]
    gap_loc: float
    gap_scale: float
    duration_loc: float
    duration_scale: float
    time_scale: float
    site_followup: dict[str, float]  # longest follow-up seen at each site
    max_events: int
    birth: str  # "none" | "age" | "offset"
    columns: list[list[str]]  # covariate columns of persons: [name, dtype], in order
    concepts: dict[str, Any] | None = None

    # -- derived ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def n_bins(self) -> int:
        return len(self.end_atoms) + max(len(self.end_edges) - 1, 0)

    def end_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Low and high ends of the end-of-follow-up bins: atoms first, then intervals."""
        edges = np.asarray(self.end_edges, dtype=float)
        atoms = np.asarray(self.end_atoms, dtype=float)
        return np.concatenate([atoms, edges[:-1]]), np.concatenate([atoms, edges[1:]])

    def end_bin(self, times: np.ndarray) -> np.ndarray:
        """The bin of each end-of-follow-up time (an atom when it equals one)."""
        atoms = np.asarray(self.end_atoms, dtype=float)
        inner = np.asarray(self.end_edges[1:-1], dtype=float)
        interval = len(atoms) + np.searchsorted(inner, times, side="right")
        if atoms.size == 0:
            return interval
        position = np.clip(np.searchsorted(atoms, times), 0, atoms.size - 1)
        return np.where(atoms[position] == times, position, interval)

    def token_of(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.tokens)}

    def state_index(self) -> np.ndarray:
        """Per token: its state's index, or -1 for tokens that are not states."""
        index = np.full(self.size, -1, dtype=np.int64)
        position = self.token_of()
        for i, state in enumerate(self.states):
            index[position[state]] = i
        return index

    def mask_table(self) -> np.ndarray:
        """Allowed next tokens, one row per situation: 0 static prefix, 1 initial state,
        2 + s after an event while in state s (unseen moves masked; end marks always allowed)."""
        position = self.token_of()
        table = np.zeros((2 + len(self.states), self.size), dtype=bool)
        table[0, 2:self.first_code] = True
        table[1, [position[s] for s in self.initial]] = True
        for s, state in enumerate(self.states):
            table[2 + s, [position[m] for m in self.allowed.get(state, [])]] = True
            table[2 + s, self.first_end:self.first_end + len(self.exits)] = True
        return table

    # -- persistence --------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        data["statics"] = [StaticVariable(**s) for s in data["statics"]]
        return cls(**data)


@dataclass
class Tokens:
    """A cohort as arrays: static tokens (persons x variables) and events in CSR layout.

    Event arrays hold one row per event token (end marks included), persons' rows together;
    ``offsets[i]:offsets[i + 1]`` are person ``i``'s. ``state`` is the state after the event,
    ``entry`` when it was entered; ``duration`` is NaN where the event has no end time and
    ``censored`` marks durations cut by the end of follow-up; ``end_bin`` is -1 except on end
    marks.
    """

    person_ids: np.ndarray
    static: np.ndarray
    offsets: np.ndarray
    token: np.ndarray
    time: np.ndarray
    gap: np.ndarray
    state: np.ndarray
    entry: np.ndarray
    value: np.ndarray  # standardised, 0 where none
    has_value: np.ndarray
    duration: np.ndarray
    censored: np.ndarray
    end_bin: np.ndarray

    @property
    def n_persons(self) -> int:
        return self.static.shape[0]

    @property
    def lengths(self) -> np.ndarray:
        """Sequence length of each person: start token + statics + event tokens."""
        return 1 + self.static.shape[1] + np.diff(self.offsets)

    def subset(self, rows: np.ndarray) -> Tokens:
        """The persons at ``rows`` (in that order) as their own Tokens."""
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        counts = stops - starts
        index = np.repeat(starts - np.cumsum(np.append(0, counts[:-1])), counts) + np.arange(
            counts.sum())
        events = {name: getattr(self, name)[index] for name in EVENT_FIELDS}
        return Tokens(self.person_ids[rows], self.static[rows],
                      np.append(0, np.cumsum(counts)), **events)


EVENT_FIELDS = ("token", "time", "gap", "state", "entry", "value", "has_value", "duration",
                "censored", "end_bin")


# -- building the vocabulary ---------------------------------------------------------------------


def absorbing_states(cohort: Cohort) -> tuple[list[str], list[str]]:
    """States that behave as absorbing (paths that end in them, entered at ``followup_end`` by
    persons whose exit is death or absorbed, outnumber moves out of them), and among them the
    death states (where exit death outnumbers exit absorbed). Codes with their prefix."""
    spells = cohort.state_spells()
    terminal = (pl.col("next_state").is_null() & (pl.col("start") == pl.col("stop"))
                & pl.col("exit").is_in(ABSORBED_EXITS))
    votes = spells.group_by("state").agg(
        terminal.sum().alias("terminal"),
        pl.col("next_state").is_not_null().sum().alias("left"),
        (terminal & (pl.col("exit") == "death")).sum().alias("death"),
    ).filter(pl.col("terminal") > pl.col("left")).sort("state")
    absorbing = [STATE_PREFIX + s for s in votes.get_column("state").to_list()]
    death = [STATE_PREFIX + s for s in
             votes.filter(pl.col("death") * 2 >= pl.col("terminal")).get_column("state").to_list()]
    return absorbing, death


def _decimals(values: np.ndarray) -> int | None:
    """The fewest decimals (0-6) that all ``values`` are written with, or None."""
    values = values[np.isfinite(values)]
    for digits in range(7):
        if np.all(np.abs(np.round(values, digits) - values) <= 1e-9 * np.maximum(1, abs(values))):
            return digits
    return None


def _static_columns(cohort: Cohort, uses_age: bool) -> list[tuple[str, pl.Series]]:
    persons = cohort.persons
    index_day = persons.get_column("index_date").cast(pl.Int64).cast(pl.Float64)
    columns = [("site", persons["site"]), ("sex", persons["sex"])]
    columns += [(name, persons[name]) for name in cohort.covariates]
    columns.append((INDEX_DAY, index_day.alias(INDEX_DAY)))
    if persons["birth_date"].null_count() < persons.height and not uses_age:
        offset = (persons["index_date"] - persons["birth_date"]).dt.total_days()
        columns.append((BIRTH_OFFSET, offset.cast(pl.Float64).alias(BIRTH_OFFSET)))
    return columns


def _is_categorical(series: pl.Series) -> bool:
    dtype = series.dtype
    if dtype in (pl.String, pl.Boolean) or isinstance(dtype, pl.Categorical | pl.Enum):
        return True
    if dtype.is_integer():
        return series.n_unique() <= MAX_CATEGORICAL_INTEGERS
    if dtype.is_numeric():
        return False
    raise TrajectoriesError(
        f"persons.{series.name}: type {dtype} is neither categorical nor numeric; the "
        "sequence model cannot learn it (cast it or drop the column)"
    )


def _static_variables(cohort: Cohort, numeric_bins: int) -> list[StaticVariable]:
    uses_age = "age" in cohort.covariates and cohort.persons["age"].dtype.is_numeric()
    statics, first = [], 2
    for name, series in _static_columns(cohort, uses_age):
        dtype = str(series.dtype) if name != INDEX_DAY else "Date"
        if _is_categorical(series):
            levels = sorted(series.cast(pl.String).drop_nulls().unique().to_list())
            if series.null_count():
                levels.append(NULL_LEVEL)
            variable = StaticVariable(name, "categorical", dtype, first, levels=levels)
        else:
            values = series.cast(pl.Float64).drop_nulls().to_numpy()
            if values.size == 0:
                raise TrajectoriesError(f"persons.{name}: every value is null")
            edges = np.unique(np.quantile(values, np.linspace(0, 1, numeric_bins + 1)))
            edges = edges if edges.size > 1 else np.repeat(edges, 2)
            variable = StaticVariable(
                name, "numeric", dtype, first, edges=edges.tolist(),
                has_null=series.null_count() > 0, decimals=_decimals(values))
        statics.append(variable)
        first += variable.n_tokens
    return statics


def _end_bins(times: np.ndarray, n_bins: int) -> tuple[list[float], list[float]]:
    """Atoms (values shared by at least 0.5% of the ended histories) and quantile intervals."""
    if times.size == 0:
        return [], [0.0, 0.0]
    values, counts = np.unique(times, return_counts=True)
    atoms = values[counts >= max(5, 0.005 * times.size)]
    rest = times[~np.isin(times, atoms)]
    spread = rest if rest.size else times
    edges = np.unique(np.quantile(spread, np.linspace(0, 1, n_bins + 1)))
    edges = np.concatenate([[min(edges[0], times.min())], edges[1:-1],
                            [max(edges[-1], times.max())]]) if edges.size > 1 else \
        np.array([edges[0], edges[0]])
    return atoms.tolist(), edges.tolist()


def _robust_log_stats(values: np.ndarray) -> tuple[float, float]:
    logs = np.log(values[values > 0])
    if logs.size < 2:
        return 0.0, 1.0
    return float(logs.mean()), float(max(logs.std(), 1e-3))


def build_vocabulary(cohort: Cohort, numeric_bins: int = 16, end_bins: int = 32) -> Vocabulary:
    """Learn the vocabulary, the structure (absorbing states, allowed moves) and the scales."""
    statics = _static_variables(cohort, numeric_bins)
    first_code = statics[-1].first_token + statics[-1].n_tokens
    codes = sorted(cohort.events.get_column("code").unique().to_list())
    states = [c for c in codes if c.startswith(STATE_PREFIX)]
    absorbing, death = absorbing_states(cohort)
    frame = event_frame(cohort, set(absorbing))
    ends = frame.filter(pl.col("end"))
    exits = sorted(ends.get_column("mark").str.strip_prefix(END_PREFIX).unique().to_list())
    events = frame.filter(~pl.col("end"))
    per_code = (
        events.group_by("mark").agg(
            pl.col("value").is_not_null().mean().alias("value_rate"),
            pl.col("value").mean().alias("value_mean"),
            pl.col("value").std().alias("value_sd"),
            pl.col("value").min().alias("value_min"),
            pl.col("value").max().alias("value_max"),
            pl.col("duration").is_not_null().mean().alias("end_rate"),
        ).sort("mark")
    )
    stats = {row["mark"]: row for row in per_code.iter_rows(named=True)}
    decimals = {
        code: _decimals(events.filter(pl.col("mark") == code)["value"].drop_nulls().to_numpy())
        if stats[code]["value_rate"] > 0 else None for code in codes
    }
    transitions = frame.filter(~pl.col("first")).group_by("previous_state").agg(
        pl.col("mark").unique().sort())
    tokens = ["<pad>", "<bos>"] + [t for s in statics for t in s.token_names()] + codes + [
        END_PREFIX + e for e in exits]
    atoms, edges = _end_bins(ends.get_column("time").to_numpy(), end_bins)
    gaps = events.filter(~pl.col("first")).get_column("gap").to_numpy()
    durations = events.get_column("duration").drop_nulls().to_numpy()

    def stat(name: str, default: float) -> list[float]:
        values = [stats[c][name] for c in codes]
        return [default if v is None or not np.isfinite(v) else float(v) for v in values]

    return Vocabulary(
        tokens=tokens,
        statics=statics,
        codes=codes,
        first_code=first_code,
        exits=exits,
        first_end=first_code + len(codes),
        states=states,
        absorbing=absorbing,
        death=death,
        initial=sorted(frame.filter(pl.col("first"))["mark"].unique().to_list()),
        allowed={row["previous_state"]: row["mark"] for row in transitions.iter_rows(named=True)},
        value_rate=stat("value_rate", 0.0),
        value_mean=stat("value_mean", 0.0),
        value_sd=[max(v, 1e-6) for v in stat("value_sd", 1.0)],
        value_min=stat("value_min", 0.0),
        value_max=stat("value_max", 0.0),
        value_decimals=[decimals[c] for c in codes],
        end_rate=stat("end_rate", 0.0),
        end_atoms=atoms,
        end_edges=edges,
        gap_loc=_robust_log_stats(gaps)[0],
        gap_scale=_robust_log_stats(gaps)[1],
        duration_loc=_robust_log_stats(durations)[0],
        duration_scale=_robust_log_stats(durations)[1],
        time_scale=float(max(cohort.persons["followup_end"].max(), 1.0)),
        site_followup=dict(cohort.persons.group_by("site").agg(pl.col("followup_end").max())
                           .sort("site").iter_rows()),
        max_events=int(frame.group_by("row").len()["len"].max()),
        birth=("none" if cohort.persons["birth_date"].null_count() == cohort.n_persons
               else "age" if any(s.name == "age" and s.kind == "numeric" for s in statics)
               else "offset"),
        columns=[[name, str(cohort.persons.schema[name])] for name in cohort.covariates],
        concepts=cohort.manifest.model_dump().get("concepts"),
    )


# -- cohorts as tokens ---------------------------------------------------------------------------


def event_frame(cohort: Cohort, absorbing: set[str]) -> pl.DataFrame:
    """One row per event token, persons in ``persons`` order: events (states first at ties,
    cut after the first absorbing state), then an end mark for histories not absorbed.

    Columns: row (person's row), mark, time, gap, state (after the event), previous_state,
    entry (time the state was entered), value, duration, censored, first, end.
    """
    persons = cohort.persons.select("person_id", "followup_end", "exit").with_row_index("row")
    is_state = pl.col("code").str.starts_with(STATE_PREFIX)
    events = (
        cohort.events.join(persons, on="person_id", how="left", maintain_order="left")
        .with_columns(is_state.alias("is_state"))
        .sort("row", "time", pl.col("is_state").not_(), maintain_order=True)
        .with_columns(pl.col("code").is_in(list(absorbing)).alias("absorbing"))
        .filter((pl.col("absorbing").cum_sum().over("row") - pl.col("absorbing")) == 0)
    )
    first = pl.col("row") != pl.col("row").shift(1)
    events = events.with_columns(
        first.fill_null(True).alias("first"),
        pl.when(pl.col("is_state")).then(pl.col("code")).forward_fill().alias("state"),
        pl.when(pl.col("is_state")).then(pl.col("time")).forward_fill().alias("entry"),
    )
    bad = events.filter(pl.col("first") & (~pl.col("is_state") | (pl.col("time") != 0)))
    if bad.height:
        raise TrajectoriesError(
            "events: every history must start with a 'state:' event at time 0; person(s) "
            f"{bad['person_id'].head(5).to_list()} do not"
        )
    events = events.with_columns(
        pl.when(pl.col("first")).then(0.0).otherwise(pl.col("time") - pl.col("time").shift(1))
        .alias("gap"),
        pl.when(pl.col("first")).then(None).otherwise(pl.col("state").shift(1))
        .alias("previous_state"),
        (pl.col("end_time") - pl.col("time")).alias("duration"),
        ((pl.col("end_time") >= pl.col("followup_end")) & (pl.col("end_time") > pl.col("time")))
        .fill_null(False).alias("censored"),
        pl.lit(False).alias("end"),
    )
    last = events.group_by("row", maintain_order=True).last()
    ends = last.filter(~pl.col("absorbing")).select(
        "row",
        (END_PREFIX + pl.col("exit")).alias("mark"),
        pl.col("followup_end").alias("time"),
        (pl.col("followup_end") - pl.col("time")).alias("gap"),
        "state",
        pl.col("state").alias("previous_state"),
        "entry",
        pl.lit(None, pl.Float64).alias("value"),
        pl.lit(None, pl.Float64).alias("duration"),
        pl.lit(False).alias("censored"),
        pl.lit(False).alias("first"),
        pl.lit(True).alias("end"),
    )
    kept = events.with_columns(pl.col("code").alias("mark")).select(ends.columns)
    return pl.concat([kept, ends]).sort("row", "end", maintain_order=True)


def tokenize(cohort: Cohort, vocab: Vocabulary) -> Tokens:
    """``cohort`` as token arrays under ``vocab``; unknown codes, levels or exits raise."""
    persons = cohort.persons
    columns = _static_columns(cohort, vocab.birth == "age")
    by_name = dict(columns)
    static = np.empty((persons.height, len(vocab.statics)), dtype=np.int64)
    for j, variable in enumerate(vocab.statics):
        if variable.name not in by_name:
            raise TrajectoriesError(f"persons: column {variable.name!r} missing (seen in training)")
        static[:, j] = variable.encode(by_name[variable.name])
    frame = event_frame(cohort, set(vocab.absorbing))
    position = vocab.token_of()
    unknown = set(frame.get_column("mark").unique().to_list()) - set(position)
    if unknown:
        raise TrajectoriesError(
            f"events.code (or persons.exit): {sorted(unknown)} unseen in training")
    token = frame.get_column("mark").replace_strict(position, return_dtype=pl.Int64).to_numpy()
    states = {s: i for i, s in enumerate(vocab.states)}
    state = frame.get_column("state").replace_strict(states, return_dtype=pl.Int64).to_numpy()
    code = np.clip(token - vocab.first_code, 0, len(vocab.codes) - 1)
    raw_value = frame.get_column("value").fill_null(np.nan).to_numpy()
    has_value = ~np.isnan(raw_value)
    value = np.where(has_value, (raw_value - np.asarray(vocab.value_mean)[code])
                     / np.asarray(vocab.value_sd)[code], 0.0)
    end = frame.get_column("end").to_numpy()
    time = frame.get_column("time").to_numpy()
    counts = np.bincount(frame.get_column("row").to_numpy(), minlength=persons.height)
    return Tokens(
        person_ids=persons.get_column("person_id").to_numpy(),
        static=static,
        offsets=np.append(0, np.cumsum(counts)),
        token=token,
        time=time,
        gap=frame.get_column("gap").to_numpy(),
        state=state,
        entry=frame.get_column("entry").to_numpy(),
        value=np.clip(value, -10, 10).astype(np.float32),
        has_value=has_value,
        duration=frame.get_column("duration").fill_null(np.nan).to_numpy(),
        censored=frame.get_column("censored").to_numpy(),
        end_bin=np.where(end, vocab.end_bin(time), -1),
    )

