"""The canonical cohort: persons and events as polars DataFrames, plus a provenance manifest.

Every generator produces a :class:`Cohort`; every check and exporter consumes one. On disk a
cohort is a directory holding ``persons.parquet``, ``events.parquet`` and ``manifest.json``.
The schema and the temporal rules are checked whenever a cohort is built, read or written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from trajectories.errors import CohortSchemaError, TrajectoriesError

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


DATA_MODEL_RULES: dict[str, str] = {
    "duplicate_person": "persons.person_id is unique",
    "exit_value": "persons.exit is one of the known exit values",
    "followup_end": "persons.followup_end is a finite number of days >= 0",
    "birth_after_index": "persons.birth_date is not after index_date",
    "sex_value": "persons.sex is 'F', 'M' or null",
    "code_format": "events.code is namespaced, like 'state:relapse'",
    "time_value": "events.time is finite and >= 0",
    "end_before_start": "events.end_time is not before the event's time",
    "person_rows_together": "each person's events are consecutive rows",
    "time_order": "events are in time order within each person",
    "unknown_person": "events.person_id are all in persons",
    "after_death": "no event after followup_end for persons who died",
    "after_followup": "no event after followup_end",
    "no_initial_state": "every person has a 'state:' event",
    "initial_state_time": "the first 'state:' event is at time 0",
    "initial_state_first": "each person's first event is their initial 'state:' event",
}
"""The data model's rules, by name, as a line saying what must hold (see find_violations)."""


def same_person_as_previous() -> pl.Expr:
    """True on rows whose previous row belongs to the same person (rows grouped by person)."""
    return (pl.col("person_id") == pl.col("person_id").shift(1)).fill_null(False)


def next_of_person(column: str) -> pl.Expr:
    """``column`` on the person's next row, null on their last row (rows grouped by person).

    A shift guarded by a same-person test: far faster than ``.over("person_id")``.
    """
    same = (pl.col("person_id").shift(-1) == pl.col("person_id")).fill_null(False)
    return pl.when(same).then(pl.col(column).shift(-1))


def grouped_by_person(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with each person's rows together, in their order (a stable sort if needed)."""
    if frame.get_column("person_id").is_sorted():
        return frame
    return frame.sort("person_id", maintain_order=True)


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
        ("person_rows_together", "events: a person's rows are not consecutive",
         events.filter(~same_person_as_previous()).filter(pl.col("person_id").is_duplicated())),
        ("time_order", "events.time: goes backwards within a person (rows out of time order)",
         events.filter(same_person_as_previous() & (pl.col("time") < pl.col("time").shift(1)))),
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
        ("initial_state_first",
         "events: a person's first row must be their initial 'state:' event (another event "
         "comes before it, at the same time)",
         events.filter(~same_person_as_previous()
                       & ~pl.col("code").str.starts_with(STATE_PREFIX))),
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
        """Load a cohort directory written by :meth:`write` or the CLI; a partitioned one
        (``persons/`` and ``events/`` part files of a sharded run) is collected whole."""
        directory = Path(directory)
        if (directory / "persons").is_dir() and (directory / "events").is_dir():
            from trajectories.simulate.sharded import read_partitioned

            return read_partitioned(directory).collect(check=check)
        persons_path, events_path, manifest = cohort_files(directory)
        try:
            persons, events = pl.read_parquet(persons_path), pl.read_parquet(events_path)
        except (OSError, pl.exceptions.ComputeError) as error:
            raise CohortSchemaError(f"{directory}: unreadable Parquet: {error}") from None
        try:
            return cls(persons, events, manifest, check=check)
        except CohortSchemaError as error:
            raise CohortSchemaError(f"{directory}: {error}") from None

    @classmethod
    def from_meds(cls, directory: str | Path, **options: Any) -> Cohort:
        """A cohort from a MEDS v0.4 dataset (ours or anyone's); options as
        :func:`trajectories.io.meds.from_meds` (state_prefix, index_code, initial_state...)."""
        from trajectories.io.meds import from_meds

        return from_meds(directory, **options)

    @classmethod
    def from_omop(
        cls, source: Any, mapping: Any, *, schema: str | None = None, resolution: str = "day"
    ) -> Cohort:
        """A cohort from an OMOP CDM v5.4 DuckDB file, Parquet folder or PostgreSQL URL, mapped
        by a TOML mapping (see examples/mappings/oncology.toml and
        :func:`trajectories.io.omop_import.from_omop`)."""
        from trajectories.io.omop_import import from_omop

        return from_omop(source, mapping, schema=schema, resolution=resolution)

    def write(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the three files; a non-empty ``directory`` is refused unless ``overwrite``.

        The tables are checked first, so a cohort built with ``check=False`` is never saved
        broken.
        """
        validate_tables(self.persons, self.events)
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

    def state_spells(self, collapse_instants: bool = False) -> pl.DataFrame:
        """One row per state occupied: person_id, state, start, stop, next_state, first, exit.

        ``stop`` is the time of the next state, or ``followup_end`` for the last one;
        ``next_state`` is null when the spell ended by censoring or is absorbing; ``first``
        marks the person's first spell; ``exit`` repeats how the person's follow-up ended.
        With ``collapse_instants`` several state events at one instant count as one, the last
        of them (a path A -> B -> C at one time t becomes one move A -> C at t).
        """
        states = grouped_by_person(
            self.events.filter(pl.col("code").str.starts_with(STATE_PREFIX)).select(
                "person_id",
                pl.col("code").str.strip_prefix(STATE_PREFIX).alias("state"),
                pl.col("time").alias("start"),
            )
        )
        if collapse_instants:
            states = states.filter((next_of_person("start") != pl.col("start")).fill_null(True))
        return states.join(
            self.persons.select("person_id", "followup_end", "exit"),
            on="person_id",
            how="left",
            maintain_order="left",
        ).select(
            "person_id",
            "state",
            "start",
            pl.coalesce(next_of_person("start"), "followup_end").alias("stop"),
            next_of_person("state").alias("next_state"),
            (~same_person_as_previous()).alias("first"),
            "exit",
        )

    def fingerprint(self) -> str:
        """SHA-256 of the persons and events contents (for provenance of reference data)."""
        digest = hashlib.sha256()
        _frame_digest(self.persons, digest)
        _frame_digest(self.events, digest)
        return digest.hexdigest()


def cohort_files(directory: Path) -> tuple[Path, Path, Manifest]:
    """The persons and events files of a (single-file) cohort directory, and its manifest;
    a missing file or an invalid manifest is an error naming it."""
    paths = [directory / name for name in (PERSONS_FILE, EVENTS_FILE, MANIFEST_FILE)]
    for path in paths:
        if not path.is_file():
            raise CohortSchemaError(f"{directory}: not a cohort directory, {path.name} missing")
    try:
        manifest = Manifest.model_validate_json(paths[2].read_text(encoding="utf-8"))
    except ValueError as error:
        raise CohortSchemaError(f"{paths[2]}: invalid manifest: {error}") from None
    return paths[0], paths[1], manifest


def prepare_output_directory(
    directory: str | Path,
    overwrite: bool,
    owned: Iterable[str | Path] = (PERSONS_FILE, EVENTS_FILE, MANIFEST_FILE),
    error: type[TrajectoriesError] = CohortSchemaError,
) -> Path:
    """Create ``directory``; refuse a non-empty one unless ``overwrite``, then delete the files
    ``owned`` (paths relative to it) that a previous output of the same kind left there."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise error(f"{directory}: exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        if not overwrite:
            raise error(
                f"{directory}: directory is not empty; choose another or pass --overwrite "
                "(overwrite=True)"
            )
        for name in owned:
            (directory / name).unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_manifest(manifest: Manifest, directory: Path) -> None:
    """Write ``manifest.json`` with sorted keys, so equal manifests give equal files."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    (directory / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
