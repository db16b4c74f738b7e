"""The canonical cohort: persons and events as polars DataFrames, plus a provenance manifest.

Every generator produces a :class:`Cohort`; every check and exporter consumes one. On disk a
cohort is a directory holding ``persons.parquet``, ``events.parquet`` and ``manifest.json``.
The schema and the temporal rules are checked whenever a cohort is built, read or written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from trajectories.errors import CohortSchemaError

PERSONS_FILE, EVENTS_FILE, MANIFEST_FILE = "persons.parquet", "events.parquet", "manifest.json"

EXITS = ("death", "absorbed", "administrative_censoring", "lost_to_follow_up", "censored")
"""How follow-up ended: death; another absorbing state; end of study; lost; unknown censoring."""

PERSON_COLUMNS: dict[str, pl.DataType] = {
    "person_id": pl.Int64(),
    "site": pl.String(),
    "index_date": pl.Date(),
    "birth_date": pl.Date(),
    "sex": pl.String(),
    "followup_end": pl.Float64(),
    "exit": pl.String(),
}
PERSON_NULLABLE = {"birth_date", "sex"}

EVENT_COLUMNS: dict[str, pl.DataType] = {
    "person_id": pl.Int64(),
    "time": pl.Float64(),
    "end_time": pl.Float64(),
    "code": pl.String(),
    "value": pl.Float64(),
}
EVENT_NULLABLE = {"end_time", "value"}

STATE_PREFIX = "state:"
CODE_PATTERN = r"^[a-z_]+:.+$"
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3}


class Manifest(BaseModel):
    """Provenance of a cohort; generators may add their own keys."""

    model_config = ConfigDict(extra="allow")

    package_version: str
    generator: str
    created: str
    n_persons: int
    seed: int | None = None
    scenario_name: str | None = None
    scenario_hash: str | None = None
    reference_fingerprint: str | None = None

    @classmethod
    def new(cls, generator: str, n_persons: int, **fields: Any) -> Manifest:
        """A manifest stamped with this package's version and the current UTC time."""
        from trajectories import __version__

        created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        return cls(
            package_version=__version__,
            generator=generator,
            created=created,
            n_persons=n_persons,
            **fields,
        )


@dataclass(frozen=True)
class Violation:
    """A broken rule: which rule, a message naming the column, and the persons at fault."""

    rule: str
    message: str
    person_ids: pl.Series

    def describe(self, limit: int = 5) -> str:
        ids = self.person_ids
        shown = ", ".join(str(i) for i in ids.head(limit).to_list())
        more = f" and {ids.len() - limit} more" if ids.len() > limit else ""
        return f"{self.message}; {ids.len()} person(s): {shown}{more}"


def _check_columns(frame: pl.DataFrame, table: str, columns: dict, nullable: set[str]) -> None:
    for name, dtype in columns.items():
        if name not in frame.columns:
            raise CohortSchemaError(
                f"{table}: missing column {name!r} (expected {dtype}); has {frame.columns}"
            )
        if frame.schema[name] != dtype:
            raise CohortSchemaError(
                f"{table}.{name}: expected type {dtype}, got {frame.schema[name]}"
            )
        if name not in nullable:
            nulls = frame.get_column(name).null_count()
            if nulls:
                raise CohortSchemaError(f"{table}.{name}: {nulls} null value(s); none allowed")


def check_columns(persons: pl.DataFrame, events: pl.DataFrame) -> None:
    """Raise :class:`CohortSchemaError` if a required column is missing, mistyped or null."""
    _check_columns(persons, "persons", PERSON_COLUMNS, PERSON_NULLABLE)
    _check_columns(events, "events", EVENT_COLUMNS, EVENT_NULLABLE)


def find_violations(persons: pl.DataFrame, events: pl.DataFrame) -> list[Violation]:
    """Every value and temporal rule the tables break (columns must already be right)."""
    joined = events.select("person_id", "time").join(
        persons.select("person_id", "followup_end", "exit"), on="person_id", how="left"
    )
    late = joined.filter(pl.col("time") > pl.col("followup_end"))
    first_state = (
        events.filter(pl.col("code").str.starts_with(STATE_PREFIX))
        .group_by("person_id")
        .agg(pl.col("time").min())
    )
    rules = [
        ("duplicate_person", "persons.person_id: duplicated ids",
         persons.filter(pl.col("person_id").is_duplicated())),
        ("exit_value", f"persons.exit: values outside {list(EXITS)}",
         persons.filter(~pl.col("exit").is_in(EXITS))),
        ("followup_end", "persons.followup_end: must be a finite number of days >= 0",
         persons.filter(~pl.col("followup_end").is_finite() | (pl.col("followup_end") < 0))),
        ("birth_after_index", "persons.birth_date: after index_date",
         persons.filter(pl.col("birth_date") > pl.col("index_date"))),
        ("sex_value", "persons.sex: values other than 'F', 'M' or null",
         persons.filter(pl.col("sex").is_not_null() & ~pl.col("sex").is_in(["F", "M"]))),
        ("code_format",
         "events.code: codes must be namespaced like 'state:relapse' or 'visit:outpatient'",
         events.filter(~pl.col("code").str.contains(CODE_PATTERN))),
        ("time_value", "events.time: must be finite and >= 0 (days since index)",
         events.filter(~pl.col("time").is_finite() | (pl.col("time") < 0))),
        ("end_before_start", "events.end_time: before the event's time",
         events.filter(pl.col("end_time").is_not_null() & (pl.col("end_time") < pl.col("time")))),
        ("time_order", "events.time: goes backwards within a person (rows out of time order)",
         events.filter((pl.col("time") < pl.col("time").shift(1)).over("person_id"))),
        ("unknown_person", "events.person_id: ids absent from persons",
         joined.filter(pl.col("exit").is_null())),
        ("after_death", "events.time: event after death",
         late.filter(pl.col("exit") == "death")),
        ("after_followup", "events.time: event after the end of follow-up (followup_end)",
         late.filter(pl.col("exit") != "death")),
        ("no_initial_state",
         "events: every person needs a 'state:' event for the initial state",
         persons.join(first_state, on="person_id", how="anti")),
        ("initial_state_time", "events: the initial 'state:' event must be at time 0",
         first_state.filter(pl.col("time") != 0)),
    ]
    return [
        Violation(rule, message, bad.get_column("person_id").unique(maintain_order=True))
        for rule, message, bad in rules
        if bad.height
    ]


def validate_tables(persons: pl.DataFrame, events: pl.DataFrame) -> None:
    """Raise :class:`CohortSchemaError` naming column and persons if the tables break the model."""
    check_columns(persons, events)
    violations = find_violations(persons, events)
    if violations:
        raise CohortSchemaError(violations[0].describe())


def _frame_digest(frame: pl.DataFrame, digest: Any) -> None:
    """Feed a canonical byte form of ``frame`` to ``digest``: equal contents, equal bytes,
    however the data are chunked or laid out in memory."""
    for name in frame.columns:
        column = frame.get_column(name)
        digest.update(f"{name}:{column.dtype}:{column.len()}".encode())
        digest.update(column.is_null().to_numpy().tobytes())
        if column.dtype == pl.String:
            filled = column.fill_null("")
            digest.update(filled.str.len_bytes().to_numpy().tobytes())
            array = filled.to_arrow().cast("large_string")
            array = array.combine_chunks() if hasattr(array, "combine_chunks") else array
            offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)
            begin, stop = offsets[array.offset], offsets[array.offset + len(array)]
            digest.update(memoryview(array.buffers()[2])[begin:stop])
        else:
            physical = column.to_physical().fill_null(0)
            digest.update(np.ascontiguousarray(physical.to_numpy()).tobytes())


@dataclass(frozen=True)
class Cohort:
    """Persons, their events and the manifest; validated on construction.

    ``persons`` has one row per person (see ``PERSON_COLUMNS``, plus scenario covariates);
    ``events`` has one row per event (``EVENT_COLUMNS``), sorted by time within each person.
    ``check=False`` keeps only the column checks, so that validation can report every broken
    rule of a faulty cohort instead of stopping at the first.
    """

    persons: pl.DataFrame
    events: pl.DataFrame
    manifest: Manifest = field(repr=False)
    check: InitVar[bool] = True

    def __post_init__(self, check: bool) -> None:
        if check:
            validate_tables(self.persons, self.events)
        else:
            check_columns(self.persons, self.events)

    # -- reading and writing -------------------------------------------------------------------

    @classmethod
    def read(cls, directory: str | Path, check: bool = True) -> Cohort:
        """Load a cohort directory written by :meth:`write` (or by the CLI)."""
        directory = Path(directory)
        paths = [directory / name for name in (PERSONS_FILE, EVENTS_FILE, MANIFEST_FILE)]
        for path in paths:
            if not path.is_file():
                raise CohortSchemaError(f"{directory}: not a cohort directory, {path.name} missing")
        try:
            manifest = Manifest.model_validate_json(paths[2].read_text(encoding="utf-8"))
        except ValueError as error:
            raise CohortSchemaError(f"{paths[2]}: invalid manifest: {error}") from None
        try:
            persons, events = pl.read_parquet(paths[0]), pl.read_parquet(paths[1])
        except (OSError, pl.exceptions.ComputeError) as error:
            raise CohortSchemaError(f"{directory}: unreadable Parquet: {error}") from None
        try:
            return cls(persons, events, manifest, check=check)
        except CohortSchemaError as error:
            raise CohortSchemaError(f"{directory}: {error}") from None

    def write(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the three files; a non-empty ``directory`` is refused unless ``overwrite``."""
        directory = prepare_output_directory(directory, overwrite)
        pq.write_table(self.persons.to_arrow(), directory / PERSONS_FILE, **PARQUET_OPTIONS)
        pq.write_table(self.events.to_arrow(), directory / EVENTS_FILE, **PARQUET_OPTIONS)
        write_manifest(self.manifest, directory)
        return directory

    # -- views ---------------------------------------------------------------------------------

    @property
    def n_persons(self) -> int:
        return self.persons.height

    @property
    def covariates(self) -> list[str]:
        """Person columns beyond the fixed data model (age, arm, markers...)."""
        return [c for c in self.persons.columns if c not in PERSON_COLUMNS]

    def state_spells(self) -> pl.DataFrame:
        """One row per state occupied: person_id, state, start, stop, next_state.

        ``stop`` is the time of the next state, or ``followup_end`` for the last one;
        ``next_state`` is null when the spell ended by censoring or is absorbing.
        """
        states = self.events.filter(pl.col("code").str.starts_with(STATE_PREFIX)).select(
            "person_id",
            pl.col("code").str.strip_prefix(STATE_PREFIX).alias("state"),
            pl.col("time").alias("start"),
        )
        return (
            states.join(
                self.persons.select("person_id", "followup_end"),
                on="person_id",
                how="left",
                maintain_order="left",
            )
            .with_columns(
                pl.col("start").shift(-1).over("person_id").alias("next_start"),
                pl.col("state").shift(-1).over("person_id").alias("next_state"),
            )
            .select(
                "person_id",
                "state",
                "start",
                pl.coalesce("next_start", "followup_end").alias("stop"),
                "next_state",
            )
        )

    def fingerprint(self) -> str:
        """SHA-256 of the persons and events contents (for provenance of reference data)."""
        digest = hashlib.sha256()
        _frame_digest(self.persons, digest)
        _frame_digest(self.events, digest)
        return digest.hexdigest()


def prepare_output_directory(directory: str | Path, overwrite: bool) -> Path:
    """Create ``directory``; refuse a non-empty one unless ``overwrite`` (then clear our files)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CohortSchemaError(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        if not overwrite:
            raise CohortSchemaError(
                f"{directory}: directory is not empty; choose another or pass --overwrite "
                "(overwrite=True)"
            )
        for name in (PERSONS_FILE, EVENTS_FILE, MANIFEST_FILE):
            (directory / name).unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_manifest(manifest: Manifest, directory: Path) -> None:
    """Write ``manifest.json`` with sorted keys, so equal manifests give equal files."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    (directory / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
