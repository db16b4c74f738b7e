"""Write a cohort (in memory or partitioned) as a MEDS v0.4 dataset (layout and conventions:
:mod:`trajectories.io.meds`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from trajectories import progress
from trajectories._version import __version__
from trajectories.cohort import (
    MICROSECONDS_PER_DAY,
    PERSON_COLUMNS,
    Cohort,
    Manifest,
    PartitionedCohort,
    prepare_output_directory,
)
from trajectories.errors import MedsError
from trajectories.io.meds.layout import (
    BIRTH_CODE,
    CODES_FILE,
    COVARIATE_PREFIX,
    COVARIATE_TYPES,
    DATA_DIR,
    DATASET_FILE,
    DEATH_CODE,
    END_SUFFIX,
    EXTENSION_COLUMNS,
    FOLLOWUP_END_PREFIX,
    MEDS_VERSION,
    SEX_PREFIX,
    SITE_PREFIX,
    SPLITS,
    SPLITS_FILE,
)

ETL_NAME = "trajectories"

DATA_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("time", pa.timestamp("us")),
        pa.field("code", pa.string(), nullable=False),
        pa.field("numeric_value", pa.float32()),
        pa.field("text_value", pa.large_string()),
        pa.field("numeric_value_exact", pa.float64()),
        pa.field("end_time", pa.timestamp("us")),
    ]
)
"""MEDS DataSchema (subject_id ... text_value) plus the two extension columns."""
CODES_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("parent_codes", pa.list_(pa.string())),
        pa.field("omop_concept_id", pa.int64()),
        pa.field("omop_domain", pa.string()),
    ]
)
SPLITS_SCHEMA = pa.schema(
    [pa.field("subject_id", pa.int64(), nullable=False),
     pa.field("split", pa.string(), nullable=False)]
)
ROW_SCHEMA = {
    "subject_id": pl.Int64(),
    "time": pl.Datetime("us"),
    "code": pl.String(),
    "numeric_value": pl.Float32(),
    "text_value": pl.String(),
    "numeric_value_exact": pl.Float64(),
    "end_time": pl.Datetime("us"),
}
"""The data rows as polars builds them (cast to :data:`DATA_SCHEMA` when written)."""


def _at(days: pl.Expr) -> pl.Expr:
    """``index_date`` 00:00 + ``days`` (float) as a timestamp, floored to the microsecond."""
    micros = (days * MICROSECONDS_PER_DAY).floor().cast(pl.Int64)
    return pl.col("index_date").cast(pl.Datetime("us")) + pl.duration(microseconds=micros)


def _split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Persons per split: tuning and held_out rounded from their fractions, train the rest."""
    if len(fractions) != len(SPLITS):
        raise MedsError(
            f"split_fractions: expected {len(SPLITS)} fractions {SPLITS}, got {list(fractions)}"
        )
    if any(not math.isfinite(f) or f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise MedsError(
            f"split_fractions: fractions for {SPLITS} must be >= 0 and sum to 1, got "
            f"{list(fractions)}"
        )
    tuning, held_out = (round(f * n) for f in fractions[1:])
    held_out = min(held_out, n - tuning)
    return [n - tuning - held_out, tuning, held_out]


def assign_splits(
    person_ids: pl.Series, split_fractions: Sequence[float], seed: int
) -> pl.DataFrame:
    """subject_id -> split (train / tuning / held_out) by a seeded permutation of the ids.

    The same ids, fractions and seed give the same assignment whatever the persons' order.
    """
    ids = person_ids.cast(pl.Int64).sort()
    sizes = _split_sizes(ids.len(), split_fractions)
    labels = np.repeat(np.arange(len(SPLITS)), sizes)
    order = np.random.default_rng(seed).permutation(ids.len())
    split = np.empty(ids.len(), dtype=np.int64)
    split[order] = labels
    return pl.DataFrame(
        {"subject_id": ids, "split": np.asarray(SPLITS, dtype=object)[split].astype(str)},
        schema={"subject_id": pl.Int64, "split": pl.String},
    )


def _covariate_types(persons: pl.DataFrame, covariates: Sequence[str]) -> dict[str, str]:
    types = {}
    for name in covariates:
        dtype = persons.schema[name]
        if isinstance(dtype, pl.Categorical | pl.Enum):
            dtype = pl.String()
        if str(dtype) not in COVARIATE_TYPES:
            raise MedsError(
                f"persons.{name}: covariate type {dtype} cannot be written to MEDS (numbers, "
                "booleans and text can)"
            )
        types[name] = str(dtype)
    return types


def _rows(frame: pl.DataFrame, *columns: pl.Expr) -> pl.DataFrame:
    """``frame`` selected into the row schema (missing columns null)."""
    out = frame.select(*columns)
    return out.select(
        (pl.col(c) if c in out.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in ROW_SCHEMA.items()
    )


def _value_columns(value: pl.Expr) -> list[pl.Expr]:
    """numeric_value (float32) and, where float32 rounds it, the exact float64 value."""
    as_float = value.cast(pl.Float64)
    single = as_float.cast(pl.Float32)
    return [
        single.alias("numeric_value"),
        pl.when(single.cast(pl.Float64) != as_float).then(as_float).alias("numeric_value_exact"),
    ]


def _static_rows(persons: pl.DataFrame, covariate_types: Mapping[str, str]) -> list[pl.DataFrame]:
    subject = pl.col("person_id").alias("subject_id")
    parts = [
        _rows(persons, subject, (SITE_PREFIX + pl.col("site")).alias("code")),
        _rows(persons.filter(pl.col("sex").is_not_null()), subject,
              (SEX_PREFIX + pl.col("sex")).alias("code")),
    ]
    for name, dtype in covariate_types.items():
        present = persons.filter(pl.col(name).is_not_null())
        code = f"{COVARIATE_PREFIX}{name}"
        if dtype == "String":
            parts.append(_rows(present, subject,
                               (code + "//" + pl.col(name).cast(pl.String)).alias("code")))
        else:
            parts.append(_rows(present, subject, pl.lit(code).alias("code"),
                               *_value_columns(pl.col(name))))
    return parts


def meds_rows(
    persons: pl.DataFrame,
    events: pl.DataFrame,
    covariate_types: Mapping[str, str],
    end_events: bool = True,
) -> pl.DataFrame:
    """The MEDS rows of ``persons`` and their ``events``, sorted by subject, then time.

    Static rows (null time) come first; rows at one time keep the cohort's event order, with
    birth before and the end of follow-up after the events of that instant, then ends of
    durations. The parts are built in that order, so one stable two-key sort suffices.
    """
    index = persons.select("person_id", "index_date")
    located = events.join(index, on="person_id", how="left", maintain_order="left")
    subject = pl.col("person_id").alias("subject_id")
    parts = [
        *_static_rows(persons, covariate_types),
        _rows(persons.filter(pl.col("birth_date").is_not_null()), subject,
              pl.col("birth_date").cast(pl.Datetime("us")).alias("time"),
              pl.lit(BIRTH_CODE).alias("code")),
        _rows(located, subject, _at(pl.col("time")).alias("time"), pl.col("code"),
              *_value_columns(pl.col("value")), _at(pl.col("end_time")).alias("end_time")),
        _rows(persons, subject, _at(pl.col("followup_end")).alias("time"),
              pl.when(pl.col("exit") == "death").then(pl.lit(DEATH_CODE))
              .otherwise(FOLLOWUP_END_PREFIX + pl.col("exit")).alias("code")),
    ]
    if end_events:
        ends = located.filter(pl.col("end_time") > pl.col("time"))
        parts.append(_rows(ends, subject, _at(pl.col("end_time")).alias("time"),
                           (pl.col("code") + END_SUFFIX).alias("code")))
    return pl.concat(parts).sort(["subject_id", "time"], nulls_last=False, maintain_order=True)


def _row_ranges(events: pl.DataFrame) -> pl.DataFrame:
    """person_id -> first row and number of rows (events are grouped by person)."""
    return (
        events.select("person_id")
        .with_row_index("first")
        .group_by("person_id")
        .agg(pl.col("first").first().cast(pl.Int64), pl.len().cast(pl.Int64).alias("rows"))
    )


def _gather(events: pl.DataFrame, ranges: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
    """The events of persons ``ids`` (in that order), by index arithmetic, without a sort."""
    wanted = pl.DataFrame({"person_id": ids}).join(
        ranges, on="person_id", how="left", maintain_order="left"
    ).fill_null(0)
    first, rows = wanted["first"].to_numpy(), wanted["rows"].to_numpy()
    offsets = np.repeat(np.cumsum(rows) - rows, rows)
    take = np.repeat(first, rows) + np.arange(rows.sum()) - offsets
    return events[take]


def _prepare_directory(directory: Path, overwrite: bool) -> None:
    stale = [p.relative_to(directory) for p in (directory / DATA_DIR).glob("**/*.parquet")]
    prepare_output_directory(directory, overwrite,
                             owned=[*stale, DATASET_FILE, CODES_FILE, SPLITS_FILE],
                             error=MedsError)
    (directory / "metadata").mkdir(parents=True, exist_ok=True)


def _code_metadata(codes: Sequence[str], concepts: Mapping[str, Any] | None) -> pa.Table:
    """codes.parquet: every code written, a description, and its OMOP concept where known."""
    from trajectories.io.omop.concepts import concept_table

    codes = sorted(set(codes))
    event_codes = [c for c in codes if _is_event_code(c)]
    known = concept_table(event_codes, concepts) if event_codes else None
    rows = []
    mapped = {} if known is None else {r["code"]: r for r in known.iter_rows(named=True)}
    for code in codes:  # distinct codes: a handful, not rows
        concept = mapped.get(code)
        rows.append(
            {
                "code": code,
                "description": _describe(code, concept),
                "parent_codes": [],
                "omop_concept_id": concept["concept_id"] if concept else None,
                "omop_domain": concept["domain"] if concept else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=CODES_SCHEMA)


def _is_event_code(code: str) -> bool:
    return (
        not code.endswith(END_SUFFIX)
        and not code.startswith((SITE_PREFIX, SEX_PREFIX, COVARIATE_PREFIX, FOLLOWUP_END_PREFIX))
        and code not in (BIRTH_CODE, DEATH_CODE)
    )


def _describe(code: str, concept: Mapping[str, Any] | None) -> str:
    if code == BIRTH_CODE:
        return "Birth"
    if code == DEATH_CODE:
        return "Death (end of follow-up)"
    if code.startswith(FOLLOWUP_END_PREFIX):
        return f"End of follow-up: {code.removeprefix(FOLLOWUP_END_PREFIX)}"
    if code.startswith(SITE_PREFIX):
        return f"Site {code.removeprefix(SITE_PREFIX)} (static)"
    if code.startswith(SEX_PREFIX):
        return f"Sex {code.removeprefix(SEX_PREFIX)} (static)"
    if code.startswith(COVARIATE_PREFIX):
        return f"Covariate {code.removeprefix(COVARIATE_PREFIX).replace('//', ' = ', 1)} (static)"
    if code.endswith(END_SUFFIX):
        return f"End of {code.removesuffix(END_SUFFIX)}"
    namespace, _, name = code.partition(":")
    text = f"{namespace} {name}"
    if concept and concept["source_value"] not in (name, code):
        text += f" ({concept['source_value']})"
    return text


def write_meds(
    cohort: Cohort | PartitionedCohort,
    out_dir: str | Path,
    *,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    shard_size: int = 50_000,
    end_events: bool = True,
    dataset_name: str | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write ``cohort`` as a MEDS v0.4 dataset under ``out_dir``; return rows per data file.

    Persons are split train / tuning / held_out by ``split_fractions`` (a seeded permutation,
    see :func:`assign_splits`); each split is cut into shards of at most ``shard_size``
    persons, ``data/<split>/<k>.parquet``, each sorted by subject then time. See
    :mod:`trajectories.io.meds` for how persons, follow-up and durations are encoded. A
    partitioned cohort is streamed block by block (memory: one block and one shard per split)
    into the same data files as the cohort in memory would give.
    """
    if shard_size < 1:
        raise MedsError(f"shard_size: must be a positive number of persons, got {shard_size}")
    directory = Path(out_dir)
    if isinstance(cohort, PartitionedCohort):
        person_ids = cohort.persons().select("person_id").collect().get_column("person_id")
        schema = cohort.persons().collect_schema()
        covariates = [c for c in schema.names() if c not in PERSON_COLUMNS]
        covariate_types = _covariate_types(pl.DataFrame(schema=schema), covariates)
        manifest = Manifest.model_validate({
            k: v for k, v in cohort.manifest.model_dump().items()
            if k not in ("layout", "blocks", "n_blocks")})
        version = hashlib.sha256("".join(
            b["persons_sha256"] + b["events_sha256"] for b in cohort.blocks).encode()).hexdigest()
    else:
        person_ids = cohort.persons.get_column("person_id")
        covariate_types = _covariate_types(cohort.persons, cohort.covariates)
        manifest, version = cohort.manifest, cohort.fingerprint()
    splits = assign_splits(person_ids, split_fractions, seed)
    _prepare_directory(directory, overwrite)

    counts: dict[str, int] = {}
    codes: set[str] = set()
    shards = (_streamed_shards(cohort, splits, shard_size)
              if isinstance(cohort, PartitionedCohort)
              else _shards(cohort, splits, shard_size))
    for name, persons, events in shards:
        rows = meds_rows(persons, events, covariate_types, end_events)
        codes.update(rows.get_column("code").unique().to_list())
        path = directory / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(rows.to_arrow().cast(DATA_SCHEMA), path, compression="zstd")
        except (OSError, pa.ArrowException) as error:
            raise MedsError(f"{path}: cannot write MEDS shard: {error}") from None
        counts[name] = rows.height

    concepts = getattr(manifest, "concepts", None)
    pq.write_table(_code_metadata(sorted(codes), concepts), directory / CODES_FILE)
    pq.write_table(splits.to_arrow().cast(SPLITS_SCHEMA), directory / SPLITS_FILE)
    metadata = {
        "dataset_name": dataset_name or manifest.scenario_name or manifest.generator,
        "dataset_version": version[:16],
        "etl_name": ETL_NAME,
        "etl_version": __version__,
        "meds_version": MEDS_VERSION,
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "other_extension_columns": list(EXTENSION_COLUMNS),
        "trajectories": {
            "covariates": covariate_types,
            "end_code_suffix": END_SUFFIX if end_events else None,
            "split_fractions": list(split_fractions),
            "split_seed": seed,
            "manifest": manifest.model_dump(mode="json"),
        },
    }
    text = json.dumps(metadata, indent=2, sort_keys=True)
    (directory / DATASET_FILE).write_text(text + "\n", encoding="utf-8")
    return counts


Shard = tuple[str, pl.DataFrame, pl.DataFrame]
"""A data file's name, its persons (sorted by person_id) and their events."""


def _shards(cohort: Cohort, splits: pl.DataFrame, shard_size: int) -> Iterator[Shard]:
    """Each split's persons in person_id order, cut every ``shard_size`` persons."""
    events = cohort.events
    ranges = _row_ranges(events)
    keyed = cohort.persons.join(splits.rename({"subject_id": "person_id"}), on="person_id")
    jobs = []
    for split in SPLITS:
        members = keyed.filter(pl.col("split") == split).sort("person_id")
        for k, start in enumerate(range(0, members.height, shard_size)):
            jobs.append((f"{DATA_DIR}/{split}/{k}.parquet", members.slice(start, shard_size)))
    for name, shard in progress.track(jobs, total=len(jobs), description="MEDS shards"):
        yield name, shard, _gather(events, ranges, shard.get_column("person_id"))


def _streamed_shards(dataset: PartitionedCohort, splits: pl.DataFrame,
                     shard_size: int) -> Iterator[Shard]:
    """:func:`_shards` of a partitioned cohort, reading one block at a time: blocks in
    person_id order fill one buffer per split, written out every ``shard_size`` persons."""
    ranges = []
    for index, file in enumerate(dataset.files("persons")):
        ids = pl.scan_parquet(file).select(pl.col("person_id").min().alias("low"),
                                           pl.col("person_id").max().alias("high")).collect()
        ranges.append((ids.item(0, "low"), ids.item(0, "high"), index))
    ranges.sort(key=lambda r: (r[0] is None, r[0]))
    present = [r for r in ranges if r[0] is not None]
    for (_, high, a), (low, _, b) in zip(present, present[1:], strict=False):
        if low <= high:
            raise MedsError(f"{dataset.directory}: blocks {a} and {b} hold overlapping person_id "
                            "ranges; a partitioned cohort keeps each block's persons apart")
    labels = splits.rename({"subject_id": "person_id"})
    buffers: dict[str, list[pl.DataFrame]] = {split: [] for split in SPLITS}
    written = dict.fromkeys(SPLITS, 0)

    def cut(split: str, persons: pl.DataFrame, events: pl.DataFrame, final: bool):
        while persons.height >= shard_size or (final and persons.height):
            shard = persons.head(shard_size)
            last = shard.item(-1, "person_id")
            yield (f"{DATA_DIR}/{split}/{written[split]}.parquet", shard,
                   events.filter(pl.col("person_id") <= last))
            written[split] += 1
            persons = persons.slice(shard.height)
            events = events.filter(pl.col("person_id") > last)
        buffers[split] = [persons, events]

    for _, _, index in progress.track(ranges, total=len(ranges), description="MEDS blocks"):
        block = dataset.block(index)
        keyed = block.persons.join(labels, on="person_id").sort("person_id")
        for split in SPLITS:
            members = keyed.filter(pl.col("split") == split).drop("split")
            mine = block.events.join(members.select("person_id"), on="person_id", how="semi")
            held = buffers[split]
            persons = pl.concat([held[0], members]) if held else members
            events = pl.concat([held[1], mine]) if held else mine
            yield from cut(split, persons, events, final=False)
    for split in SPLITS:
        if buffers[split]:
            yield from cut(split, *buffers[split], final=True)
