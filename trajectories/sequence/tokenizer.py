"""Tokens of the sequence model: a vocabulary learnt from a cohort, and cohorts as token arrays.

A person becomes ``[BOS]`` + one token per static variable (site, sex, covariates, index date;
numeric ones binned at training quantiles) + one token per event (its code, with the gap since
the previous event, the value and the duration alongside) + an end-of-history token naming the
exit (``end:administrative_censoring``...) whose time is ``followup_end``, unless the history
ends in an absorbing state, which ends it by itself (its exit is death or absorbed).
Events at one instant are put states first; anything after the first absorbing state is dropped.

The vocabulary is released with the model, so it holds aggregates only, under the small-cell
rules of :mod:`trajectories.disclosure` (``min_cell`` persons, 11 by default):
:func:`release_cohort` drops event codes and censors histories at states held by fewer persons
and reads rare exits as ``censored`` (or as the commonest exit when even those are too few);
categorical levels held by fewer persons are merged;
numeric bins are cut within :func:`~trajectories.disclosure.robust_range` and merged until each
holds ``min_cell`` persons; every range end (values, follow-up, events per person) is the
``min_cell``-th smallest or largest, never one person's extreme. Float covariates with two
distinct values, or integer-valued ones with few, are categories (a 0/1 flag is two tokens).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from trajectories.cohort import STATE_PREFIX, Cohort
from trajectories.disclosure import MIN_CELL, merge_rare_levels, robust_range
from trajectories.errors import TrajectoriesError

PAD, BOS = 0, 1
END_PREFIX = "end:"
NULL_LEVEL = "<null>"
ABSORBED_EXITS = ("death", "absorbed")
FORCED_EXITS = ("death", "absorbed", "censored")
"""Exits the sampler sets itself: absorbing states, and histories cut at the events cap."""
MAX_CATEGORICAL_INTEGERS = 20
"""Integer covariates (and integer-valued float ones whose values repeat) with at most this many
distinct values are taken as categorical; float covariates with two distinct values always are."""
ATOM_PERSONS = 5
"""Fewest persons sharing an exact end-of-follow-up time for it to be an atom (and ``min_cell``)."""
UNKNOWN_EXIT = "censored"
"""The exit that exits held by fewer than ``min_cell`` persons are read as (reason unknown)."""
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
    other: str | None = None
    """Categorical: the level that unlisted ones (rare in training) are read as; numeric
    levels go to the nearest listed value instead (None: nothing was merged, unlisted raise)."""
    null_bin: int | None = None
    """Numeric: the bin that nulls are read as, when too few for a null token of their own."""

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
            text = self.release(values.cast(pl.String).fill_null(NULL_LEVEL))
            index = {level: i for i, level in enumerate(self.levels)}
            codes = text.replace_strict(index, return_dtype=pl.Int64).to_numpy()
            return self.first_token + codes
        array = values.cast(pl.Float64).to_numpy()
        bins = self.bin_of(array)
        nulls = np.isnan(array)
        if nulls.any() and not self.has_null:
            if self.null_bin is None:
                raise TrajectoriesError(f"persons.{self.name}: null values, unseen in training")
            return self.first_token + np.where(nulls, self.null_bin, bins)
        return self.first_token + np.where(nulls, len(self.edges) - 1, bins)

    def release(self, text: pl.Series) -> pl.Series:
        """Categorical levels (as text) as released: listed levels stay, unlisted ones go to
        the nearest listed value (numeric levels) or to ``other``; without ``other`` they raise
        an error naming the column."""
        unknown = sorted(set(text.unique().to_list()) - set(self.levels))
        if not unknown:
            return text
        if self.other is None:
            raise TrajectoriesError(
                f"persons.{self.name}: level(s) {unknown} unseen in training; "
                f"known: {self.levels}"
            )
        return text.replace({level: self._nearest(level) for level in unknown})

    def _nearest(self, level: str) -> str:
        listed = {lv: _as_number(lv) for lv in self.levels}
        listed = {lv: x for lv, x in listed.items() if x is not None}
        value = _as_number(level)
        if value is None or not listed or not _numeric_dtype(self.dtype):
            return self.other
        return min(listed, key=lambda lv: (abs(listed[lv] - value), listed[lv]))

    def bin_of(self, values: np.ndarray) -> np.ndarray:
        """Bin index of numeric values (outside the training range: the nearest bin)."""
        inner = np.asarray(self.edges[1:-1])
        return np.searchsorted(inner, np.nan_to_num(values), side="right")


def _as_number(level: str) -> float | None:
    try:
        value = float(level)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _numeric_dtype(name: str) -> bool:
    found = getattr(pl, name, None)
    return isinstance(found, type) and issubclass(found, pl.DataType) and found.is_numeric()


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


def _is_categorical(series: pl.Series, covariate: bool = True) -> bool:
    """Text, booleans and few-valued integers are categories; so are float covariates with two
    distinct values (0/1 flags stored as floats) or few integer ones that repeat (codes such as
    a 0-4 score), never the date columns."""
    dtype = series.dtype
    if dtype in (pl.String, pl.Boolean) or isinstance(dtype, pl.Categorical | pl.Enum):
        return True
    if dtype.is_integer():
        return series.n_unique() <= MAX_CATEGORICAL_INTEGERS
    if dtype.is_float():
        if not covariate:
            return False
        values = series.drop_nulls().drop_nans()
        distinct = values.n_unique()
        return distinct <= 2 or (distinct <= MAX_CATEGORICAL_INTEGERS
                                 and 2 * distinct <= values.len()
                                 and bool((values == values.round()).all()))
    if dtype.is_numeric():
        return False
    raise TrajectoriesError(
        f"persons.{series.name}: type {dtype} is neither categorical nor numeric; the "
        "sequence model cannot learn it (cast it or drop the column)"
    )


def _merge_levels(name: str, dtype: pl.DataType, counts: dict[str, int],
                  min_cell: int) -> tuple[dict[str, str], str | None]:
    """Level -> released level, and the level unlisted ones are read as (None: none merged).

    Text levels: :func:`~trajectories.disclosure.merge_rare_levels` (into ``other``). Sex and
    booleans, which admit no new level: into the most frequent level. Numbers: into the
    nearest common value (null into the most frequent level), so that sampled values stay
    values the column had."""
    common = {lv: n for lv, n in counts.items() if n >= min_cell}
    if len(common) == len(counts):
        return {lv: lv for lv in counts}, None
    if (dtype == pl.String and name != "sex") or isinstance(dtype, pl.Categorical | pl.Enum):
        mapping = merge_rare_levels(counts, min_cell)
        return mapping, next(mapping[lv] for lv in counts if lv not in common)
    if not common:
        top = max(counts, key=lambda lv: (counts[lv], lv))
        common = {top: counts[top]}
    top = max(common, key=lambda lv: (common[lv], lv))
    numbers = {lv: _as_number(lv) for lv in common} if dtype.is_numeric() else {}
    numbers = {lv: x for lv, x in numbers.items() if x is not None}
    mapping = {}
    for level in counts:
        value = _as_number(level) if numbers else None
        if level in common or value is None:
            mapping[level] = level if level in common else top
        else:
            mapping[level] = min(numbers, key=lambda lv: (abs(numbers[lv] - value), numbers[lv]))
    return mapping, top


def _bin_counts(edges: list[float], values: np.ndarray) -> np.ndarray:
    inner = np.asarray(edges[1:-1])
    return np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)


def merge_small_bins(edges: list[float], values: np.ndarray, min_cell: int) -> list[float]:
    """``edges`` with bins of fewer than ``min_cell`` of ``values`` merged into their smaller
    neighbour, the smallest first (values outside the edges count in the end bins)."""
    edges = list(edges)
    while len(edges) > 2:
        counts = _bin_counts(edges, values)
        i = int(np.argmin(counts))
        if counts[i] >= min_cell:
            break
        if i == 0:
            del edges[1]
        elif i == len(counts) - 1 or counts[i - 1] <= counts[i + 1]:
            del edges[i]
        else:
            del edges[i + 1]
    return edges


def robust_max(values: np.ndarray, min_cell: int = MIN_CELL) -> float:
    """The ``min_cell``-th largest of ``values``, at or below which ``min_cell`` persons' values
    lie (the top end of :func:`~trajectories.disclosure.robust_range`; it needs only
    ``min_cell`` values, and falls back to the median with fewer)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    if ordered.size >= min_cell:
        return float(ordered[-min_cell])
    return robust_range(ordered, min_cell)[1]


def _static_variables(cohort: Cohort, numeric_bins: int, min_cell: int) -> list[StaticVariable]:
    statics, first = [], 2
    for name, series in _static_columns(cohort, _uses_age(cohort)):
        dtype = str(series.dtype) if name != INDEX_DAY else "Date"
        if _is_categorical(series, covariate=name in cohort.covariates):
            text = series.cast(pl.String).fill_null(NULL_LEVEL)
            counts = dict(text.value_counts().iter_rows())
            mapping, other = _merge_levels(name, series.dtype, counts, min_cell)
            released = set(mapping.values())
            levels = sorted(released - {NULL_LEVEL}) + (
                [NULL_LEVEL] if NULL_LEVEL in released else [])
            variable = StaticVariable(name, "categorical", dtype, first, levels=levels,
                                      other=other)
        else:
            values = series.cast(pl.Float64).drop_nulls().to_numpy()
            if values.size == 0:
                raise TrajectoriesError(f"persons.{name}: every value is null")
            low, high = robust_range(values, min_cell)
            quantiles = np.quantile(values, np.linspace(0, 1, numeric_bins + 1))
            edges = np.unique(np.clip(quantiles, low, high))
            edges = edges if edges.size > 1 else np.repeat(edges, 2)
            edges = merge_small_bins(edges.tolist(), values, min_cell)
            nulls = series.null_count()
            variable = StaticVariable(
                name, "numeric", dtype, first, edges=edges, has_null=nulls >= min_cell,
                decimals=_decimals(values))
            if 0 < nulls < min_cell:
                variable.null_bin = int(variable.bin_of(np.array([np.median(values)]))[0])
        statics.append(variable)
        first += variable.n_tokens
    return statics


def _end_bins(times: np.ndarray, n_bins: int,
              min_cell: int = MIN_CELL) -> tuple[list[float], list[float]]:
    """Atoms (values shared by at least 0.5% of the ended histories, and by ``min_cell``) and
    quantile intervals within the robust range, each holding ``min_cell`` histories."""
    if times.size == 0:
        return [], [0.0, 0.0]
    values, counts = np.unique(times, return_counts=True)
    atoms = values[counts >= max(ATOM_PERSONS, min_cell, 0.005 * times.size)]
    rest = times[~np.isin(times, atoms)]
    spread = rest if rest.size else times
    low, high = robust_range(times, min_cell)
    edges = np.unique(np.clip(np.quantile(spread, np.linspace(0, 1, n_bins + 1)), low, high))
    edges = np.concatenate([[min(edges[0], low)], edges[1:-1],
                            [max(edges[-1], high)]]) if edges.size > 1 else \
        np.array([edges[0], edges[0]])
    return atoms.tolist(), merge_small_bins(edges.tolist(), spread, min_cell)


def _robust_log_stats(values: np.ndarray) -> tuple[float, float]:
    logs = np.log(values[values > 0])
    if logs.size < 2:
        return 0.0, 1.0
    return float(logs.mean()), float(max(logs.std(), 1e-3))


def _uses_age(cohort: Cohort) -> bool:
    """Birth dates follow from a numeric age at index (else from their own offset)."""
    return "age" in cohort.covariates and cohort.persons["age"].dtype.is_numeric()


def release_cohort(cohort: Cohort, min_cell: int = MIN_CELL) -> tuple[Cohort, list[str]]:
    """``cohort`` as the vocabulary may describe it, and notes saying what changed (counts, no
    names): events of codes held by fewer than ``min_cell`` persons are dropped; a history is
    censored when it enters a state held by fewer (left out when that is its initial state);
    exits that end fewer histories (not absorbed) are read as ``censored``. Rare codes are
    dropped rather than merged so that every sampled history keeps valid states and moves."""
    persons, events, notes = cohort.persons, cohort.events, []
    for _ in range(20):  # dropping persons can make another code rare: repeat until stable
        held = events.group_by("code").agg(pl.col("person_id").n_unique().alias("persons"))
        rare = held.filter(pl.col("persons") < min_cell).get_column("code").to_list()
        if not rare:
            break
        states = [c for c in rare if c.startswith(STATE_PREFIX)]
        others = [c for c in rare if not c.startswith(STATE_PREFIX)]
        if others:
            dropped = events.filter(pl.col("code").is_in(others)).height
            events = events.filter(~pl.col("code").is_in(others))
            notes.append(f"{dropped} event(s) of {len(others)} code(s) held by fewer than "
                         f"{min_cell} persons dropped")
        if states:
            cut = (events.filter(pl.col("code").is_in(states)).group_by("person_id")
                   .agg(pl.col("time").min().alias("_cut")))
            left_out = cut.filter(pl.col("_cut") <= 0).height
            events = (
                events.join(cut, on="person_id", how="left", maintain_order="left")
                .filter(pl.col("_cut").is_null() | (pl.col("time") < pl.col("_cut")))
                .with_columns(pl.when(pl.col("_cut").is_not_null()
                                      & (pl.col("end_time") > pl.col("_cut")))
                              .then(pl.col("_cut")).otherwise(pl.col("end_time"))
                              .alias("end_time"))
                .drop("_cut")
            )
            persons = (
                persons.join(cut, on="person_id", how="left", maintain_order="left")
                .filter(pl.col("_cut").is_null() | (pl.col("_cut") > 0))
                .with_columns(
                    pl.coalesce("_cut", "followup_end").alias("followup_end"),
                    pl.when(pl.col("_cut").is_not_null()).then(pl.lit(UNKNOWN_EXIT))
                    .otherwise(pl.col("exit")).alias("exit"))
                .drop("_cut")
            )
            notes.append(f"{cut.height} history(ies) censored on entering one of "
                         f"{len(states)} state(s) entered by fewer than {min_cell} persons"
                         + (f" ({left_out} left out: their initial state)" if left_out else ""))
    if notes:
        cohort = Cohort(persons, events, cohort.manifest, check=False)
    absorbing, _ = absorbing_states(cohort)
    ends = event_frame(cohort, set(absorbing)).filter(pl.col("end"))
    counts = dict(ends.group_by("mark").len().iter_rows())
    rare = {mark for mark, n in counts.items() if n < min_cell}
    if rare:
        unknown = END_PREFIX + UNKNOWN_EXIT
        pooled = sum(counts[m] for m in rare) + (counts.get(unknown, 0) if unknown not in rare
                                                 else 0)
        common = {m: n for m, n in counts.items() if m not in rare}
        target = unknown if pooled >= min_cell or not common else max(
            common, key=lambda m: (common[m], m))
        rows = ends.filter(pl.col("mark").is_in(list(rare)))["row"]
        exit_name = target.removeprefix(END_PREFIX)
        persons = cohort.persons.with_columns(
            pl.when(pl.int_range(pl.len()).is_in(rows.implode())).then(pl.lit(exit_name))
            .otherwise(pl.col("exit")).alias("exit"))
        notes.append(f"{rows.len()} history(ies) ending in one of {len(rare)} exit(s) held by "
                     f"fewer than {min_cell} persons read as {exit_name}")
        cohort = Cohort(persons, cohort.events, cohort.manifest, check=False)
    return cohort, notes


def build_vocabulary(cohort: Cohort, numeric_bins: int = 16, end_bins: int = 32,
                     min_cell: int = MIN_CELL) -> Vocabulary:
    """Learn the vocabulary, the structure (absorbing states, allowed moves) and the scales,
    from ``cohort`` as :func:`release_cohort` leaves it; ranges and bins follow the small-cell
    rules (``min_cell`` = 1 keeps every level and the true extremes)."""
    cohort, _ = release_cohort(cohort, min_cell)
    if cohort.n_persons == 0:
        raise TrajectoriesError(f"no history is left under the small-cell rules: every "
                                f"initial state is held by fewer than {min_cell} persons")
    statics = _static_variables(cohort, numeric_bins, min_cell)
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
            pl.col("duration").is_not_null().mean().alias("end_rate"),
        ).sort("mark")
    )
    stats = {row["mark"]: row for row in per_code.iter_rows(named=True)}
    # Value ranges: the min_cell-th smallest of persons' lowest values and the min_cell-th
    # largest of their highest, so that each end is reached by min_cell persons.
    extremes = events.filter(pl.col("value").is_not_null()).group_by("mark", "row").agg(
        pl.col("value").min().alias("low"), pl.col("value").max().alias("high"))
    for code, part in extremes.group_by("mark"):
        stats[code[0]]["value_min"] = robust_range(part["low"].to_numpy(), min_cell)[0]
        stats[code[0]]["value_max"] = robust_range(part["high"].to_numpy(), min_cell)[1]
    decimals = {
        code: _decimals(events.filter(pl.col("mark") == code)["value"].drop_nulls().to_numpy())
        if stats[code]["value_rate"] > 0 else None for code in codes
    }
    transitions = frame.filter(~pl.col("first")).group_by("previous_state").agg(
        pl.col("mark").unique().sort())
    tokens = ["<pad>", "<bos>"] + [t for s in statics for t in s.token_names()] + codes + [
        END_PREFIX + e for e in exits]
    atoms, edges = _end_bins(ends.get_column("time").to_numpy(), end_bins, min_cell)
    gaps = events.filter(~pl.col("first")).get_column("gap").to_numpy()
    durations = events.get_column("duration").drop_nulls().to_numpy()
    followup = cohort.persons["followup_end"].to_numpy()
    site = statics[0]
    sites = site.release(cohort.persons["site"].cast(pl.String).fill_null(NULL_LEVEL))

    def stat(name: str, default: float) -> list[float]:
        values = [stats[c].get(name) for c in codes]
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
        time_scale=float(max(robust_max(followup, min_cell), 1.0)),
        site_followup={level: robust_max(followup[(sites == level).to_numpy()], min_cell)
                       for level in site.levels if (sites == level).any()},
        max_events=int(robust_max(frame.group_by("row").len()["len"].to_numpy(), min_cell)),
        birth=("none" if cohort.persons["birth_date"].null_count() == cohort.n_persons
               else "age" if _uses_age(cohort) else "offset"),
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

