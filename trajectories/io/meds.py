"""MEDS (Medical Event Data Standard, v0.4) export of a cohort, and import of a MEDS dataset.

Layout written (``glob("data/**/*.parquet")`` finds the data, as MEDS requires)::

    data/<split>/<shard>.parquet      subject_id, time, code, numeric_value, text_value,
                                      numeric_value_exact, end_time   (sorted by subject, time)
    metadata/dataset.json             dataset_name, dataset_version, etl_*, meds_version, ...
    metadata/codes.parquet            code, description, parent_codes, omop_concept_id/domain
    metadata/subject_splits.parquet   subject_id, split (train / tuning / held_out)

Conventions (the MEDS schema leaves them to the ETL; each is undone by :func:`from_meds`):

* an event at ``time`` days after index is at ``index_date`` 00:00 + ``time`` days, floored to
  the microsecond; event codes are written unchanged (``state:progressed``);
* static facts have a null ``time`` and come first: ``SITE//<site>``, ``SEX//<F|M>``,
  ``COVARIATE//<name>//<value>`` for text covariates and ``COVARIATE//<name>`` with the value
  for numeric and boolean ones;
* ``MEDS_BIRTH`` at the birth date; ``MEDS_DEATH`` at the end of follow-up of persons who
  died, ``FOLLOWUP_END//<exit>`` at the end of follow-up of everyone else;
* an event with a duration keeps its end in the extension column ``end_time`` and, with
  ``end_events``, also gets a ``<code>//END`` row at its end (MEDS has no intervals: readers
  that know only the core columns still see when a stay or a drug ended);
* ``numeric_value`` is float32 as MEDS requires; where that rounds the cohort's float64 value
  the exact value is in the extension column ``numeric_value_exact`` (null elsewhere).

The extension columns are declared in ``dataset.json`` (``other_extension_columns``), which also
carries the cohort's manifest and covariate types under the key ``trajectories``.
"""

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
from trajectories.cohort import (
    CODE_PATTERN,
    EXITS,
    PERSON_COLUMNS,
    STATE_PREFIX,
    Cohort,
    Manifest,
    prepare_output_directory,
)
from trajectories.errors import TrajectoriesError
from trajectories.io.survival_table import assemble_cohort
from trajectories.simulate.sharded import PartitionedCohort

MEDS_VERSION = "0.4.1"
"""The MEDS release whose schemas the files follow (the same in 0.4.0 and 0.4.1)."""
ETL_NAME = "trajectories"
BIRTH_CODE, DEATH_CODE = "MEDS_BIRTH", "MEDS_DEATH"
SITE_PREFIX, SEX_PREFIX, GENDER_PREFIX = "SITE//", "SEX//", "GENDER//"
COVARIATE_PREFIX = "COVARIATE//"
FOLLOWUP_END_PREFIX = "FOLLOWUP_END//"
END_SUFFIX = "//END"
SPLITS = ("train", "tuning", "held_out")
DATA_DIR = "data"
DATASET_FILE = "metadata/dataset.json"
CODES_FILE = "metadata/codes.parquet"
SPLITS_FILE = "metadata/subject_splits.parquet"
EXTENSION_COLUMNS = ("numeric_value_exact", "end_time")
MICROSECONDS_PER_DAY = 86_400_000_000
SEX_VALUES = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}

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
COVARIATE_TYPES: dict[str, pl.DataType] = {
    str(t): t
    for t in (pl.Float64(), pl.Float32(), pl.Int64(), pl.Int32(), pl.Int16(), pl.Int8(),
              pl.UInt32(), pl.UInt16(), pl.UInt8(), pl.Boolean(), pl.String())
}
"""Covariate types that go to MEDS and come back as themselves."""


class MedsError(TrajectoriesError):
    """A cohort cannot be written as MEDS, or a MEDS directory cannot be read as a cohort."""


# -- writing ----------------------------------------------------------------------------------


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
    from trajectories.io.omop.tables import concept_table

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
    persons, ``data/<split>/<k>.parquet``, each sorted by subject then time. See the module
    docstring for how persons, follow-up and durations are encoded. A partitioned cohort is
    streamed block by block (memory: one block and one shard per split) into the same data
    files as the cohort in memory would give.
    """
    from trajectories import __version__

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


# -- reading ----------------------------------------------------------------------------------


def _read_metadata(directory: Path) -> dict[str, Any]:
    path = directory / DATASET_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise MedsError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise MedsError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
    return metadata


READ_TYPES = {
    "subject_id": pl.Int64(),
    "time": pl.Datetime("us"),
    "code": pl.String(),
    "numeric_value": pl.Float64(),
    "text_value": pl.String(),
    "numeric_value_exact": pl.Float64(),
    "end_time": pl.Datetime("us"),
}


def _read_shard(path: Path, extensions: bool) -> pl.DataFrame:
    """One data file in :data:`READ_TYPES` (absent optional columns null; zones dropped)."""
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as error:
        raise MedsError(f"{path}: unreadable Parquet: {error}") from None
    missing = [c for c in ("subject_id", "time", "code") if c not in names]
    if missing:
        raise MedsError(f"{path}: missing MEDS column(s) {missing}; has {names}")
    wanted = [c for c in READ_TYPES if c in names and (extensions or c not in EXTENSION_COLUMNS)]
    frame = pl.read_parquet(path, columns=wanted)
    columns = []
    for name, dtype in READ_TYPES.items():
        if name not in frame.columns:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
            continue
        column = pl.col(name)
        if isinstance(frame.schema[name], pl.Datetime) and frame.schema[name].time_zone:
            column = column.dt.replace_time_zone(None)
        columns.append(column.cast(dtype))
    try:
        return frame.select(columns)
    except pl.exceptions.PolarsError as error:
        raise MedsError(f"{path}: column types do not match MEDS: {error}") from None


def _null_ids(frame: pl.DataFrame, path: str) -> None:
    for name in ("subject_id", "code"):
        nulls = frame.get_column(name).null_count()
        if nulls:
            raise MedsError(f"{path}: {name} has {nulls} null value(s); MEDS allows none")


def _static_persons(static: pl.DataFrame, metadata_types: Mapping[str, str]) -> pl.DataFrame:
    """person_id -> site, sex and one column per covariate, from the static (null-time) rows.

    ``COVARIATE//<name>[//<value>]`` keeps the name as written; any other ``NAME[//<value>]``
    is lower-cased (``GENDER`` counts as sex). The value is the text after ``//``, else
    ``text_value``, else the number.
    """
    code = pl.col("code")
    ours = code.str.starts_with(COVARIATE_PREFIX)
    parts = pl.when(ours).then(code.str.strip_prefix(COVARIATE_PREFIX)).otherwise(code)
    parsed = static.with_columns(parts.str.splitn("//", 2).alias("_parts")).with_columns(
        pl.col("_parts").struct.field("field_0").alias("_name"),
        pl.coalesce(pl.col("_parts").struct.field("field_1"), "text_value").alias("_text"),
    ).with_columns(
        pl.when(ours).then(pl.col("_name"))
        .otherwise(pl.col("_name").str.to_lowercase().str.replace_all(r"[^a-z0-9_]", "_"))
        .alias("_name")
    ).with_columns(
        pl.when(~ours & (pl.col("_name") == "gender")).then(pl.lit("sex"))
        .otherwise(pl.col("_name")).alias("_name")
    )
    reserved = parsed.filter(pl.col("_name").is_in(set(PERSON_COLUMNS) - {"site", "sex"}))
    if reserved.height:
        raise MedsError(
            f"static rows: code {reserved['code'][0]!r} would set the person field "
            f"{reserved['_name'][0]!r}, which comes from the timed rows"
        )
    twice = parsed.filter(pl.struct("subject_id", "_name").is_duplicated())
    if twice.height:
        first = twice.row(0, named=True)
        raise MedsError(
            f"static rows: subject {first['subject_id']} has several static rows for "
            f"{first['_name']!r} ({twice.height} rows in all); a covariate takes one value"
        )
    text = parsed.filter(pl.col("_text").is_not_null()).pivot(
        "_name", index="subject_id", values="_text"
    )
    numbers = parsed.filter(pl.col("_text").is_null() & pl.col("value").is_not_null()).pivot(
        "_name", index="subject_id", values="value"
    )
    clash = set(text.columns) & set(numbers.columns) - {"subject_id"}
    if clash:
        raise MedsError(
            f"static rows: covariate(s) {sorted(clash)} hold text for some subjects and numbers "
            "for others"
        )
    out = text.join(numbers, on="subject_id", how="full", coalesce=True)
    columns = [pl.col("subject_id").alias("person_id")]
    for name in out.columns[1:]:
        column = pl.col(name)
        if name == "sex":
            column = column.str.to_uppercase().replace_strict(SEX_VALUES, default=None)
        elif name in metadata_types:
            column = column.cast(COVARIATE_TYPES[metadata_types[name]])
        columns.append(column.alias(name))
    return out.select(columns)


def _event_codes(
    codes: pl.Expr, code_map: Mapping[str, str] | None, state_prefix: str, other_prefix: str
) -> pl.Expr:
    """MEDS codes as cohort codes: ``code_map`` first, then ``state_prefix`` -> ``state:``,
    then codes already namespaced stay, and any other gets ``other_prefix``."""
    mapped = codes.replace_strict(code_map, default=None) if code_map else pl.lit(None)
    return (
        pl.when(mapped.is_not_null()).then(mapped)
        .when(codes.str.starts_with(state_prefix))
        .then(STATE_PREFIX + codes.str.strip_prefix(state_prefix))
        .when(codes.str.contains(CODE_PATTERN)).then(codes)
        .otherwise(other_prefix + codes)
    )


def _describe_ids(ids: pl.Series, limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in ids.head(limit).to_list())
    return f"{ids.len()} subject(s): {shown}" + (" ..." if ids.len() > limit else "")


def _read_rows(directory: Path, ours: bool, splits: Sequence[str] | None) -> pl.DataFrame:
    """Every data row (of the chosen splits) in file order, with the exact value and the row's
    position as ``_order`` (which breaks ties between rows of one subject at one time)."""
    files = sorted((directory / DATA_DIR).glob("**/*.parquet"))
    if not files:
        raise MedsError(f"{directory}: not a MEDS dataset, no {DATA_DIR}/**/*.parquet files")
    rows = pl.concat([_read_shard(path, ours) for path in files])
    _null_ids(rows, f"{directory}/{DATA_DIR}")
    if splits is not None:
        rows = rows.join(_subjects_in(directory, splits), on="subject_id", how="semi")
    return rows.with_row_index("_order").with_columns(
        pl.col("_order").cast(pl.Int64),
        pl.coalesce("numeric_value_exact", "numeric_value").alias("value"),
    )


def _marks(timed: pl.DataFrame, index_code: str | None, what: str) -> pl.DataFrame:
    """person_id -> index date and, in days since its midnight, birth, death, the recorded end
    of follow-up (with its exit) and the last timed row."""
    code = pl.col("code")
    index_rows = (code == index_code) if index_code is not None else (code != BIRTH_CODE)
    ends = timed.filter(code.str.starts_with(FOLLOWUP_END_PREFIX))
    by_subject = timed.group_by("subject_id").agg(
        pl.col("time").filter(index_rows).min().alias("_index"),
        pl.col("time").filter(code == BIRTH_CODE).min().alias("_birth"),
        pl.col("time").filter(code == DEATH_CODE).min().alias("_death"),
        pl.col("time").max().alias("_last"),
    ).join(
        ends.group_by("subject_id").agg(
            pl.col("time").min().alias("_end"),
            code.first().str.strip_prefix(FOLLOWUP_END_PREFIX).alias("_end_exit"),
        ),
        on="subject_id", how="left",
    ).rename({"subject_id": "person_id"}).sort("person_id")
    no_index = by_subject.filter(pl.col("_index").is_null()).get_column("person_id")
    if no_index.len():
        wanted = f"a row with code {index_code!r}" if index_code else "a timed row"
        raise MedsError(f"{what}: no index, as {wanted} is missing; {_describe_ids(no_index)}")
    bad = by_subject.filter(pl.col("_end_exit").is_not_null() & ~pl.col("_end_exit").is_in(EXITS))
    if bad.height:
        raise MedsError(
            f"{what}: {FOLLOWUP_END_PREFIX}<exit> codes with an exit outside {list(EXITS)}: "
            f"{bad.get_column('_end_exit').unique().to_list()}; "
            f"{_describe_ids(bad.get_column('person_id'))}"
        )
    index_date = pl.col("_index").dt.date()
    return by_subject.select(
        "person_id",
        index_date.alias("index_date"),
        pl.col("_birth").dt.date().alias("birth_date"),
        *(_days_since(pl.col(c), index_date).alias(c) for c in ("_death", "_end", "_last")),
        "_end_exit",
    )


def _days_since(moment: pl.Expr, index_date: pl.Expr) -> pl.Expr:
    """Days from ``index_date`` 00:00 to ``moment`` (exact to the microsecond)."""
    delta = moment - index_date.cast(pl.Datetime("us"))
    return delta.dt.total_microseconds() / MICROSECONDS_PER_DAY


def _with_initial_state(
    events: pl.DataFrame, person_ids: pl.DataFrame, initial_state: str | None, what: str
) -> pl.DataFrame:
    """``events`` plus ``state:<initial_state>`` at time 0 for persons with no state there
    (first among that instant's events); without ``initial_state`` such persons are refused."""
    has_start = events.filter(
        (pl.col("time") == 0) & pl.col("code").str.starts_with(STATE_PREFIX)
    ).select("person_id")
    missing = person_ids.join(has_start, on="person_id", how="anti")
    if missing.height and initial_state is None:
        raise MedsError(
            f"{what}: no state at time 0 (the index date's midnight) for "
            f"{_describe_ids(missing.get_column('person_id'))}; pass initial_state= to add one"
        )
    if not missing.height:
        return events
    added = missing.select(
        "person_id", pl.lit(0.0).alias("time"), pl.lit(None, pl.Float64).alias("end_time"),
        pl.lit(STATE_PREFIX + str(initial_state)).alias("code"),
        pl.lit(None, pl.Float64).alias("value"), pl.lit(-1, dtype=pl.Int64).alias("__order__"),
    )
    return pl.concat([events, added])


def from_meds(
    directory: str | Path,
    *,
    state_prefix: str = "state:",
    code_map: Mapping[str, str] | None = None,
    other_prefix: str = "observation:",
    index_code: str | None = None,
    initial_state: str | None = None,
    default_site: str = "unknown",
    splits: Sequence[str] | None = None,
    before_index: str = "drop",
) -> Cohort:
    """A Cohort from a MEDS dataset: one written by :func:`write_meds`, or anyone's.

    Each subject becomes a person. The index is the first row with code ``index_code`` (raw
    MEDS code), or else the subject's first timed row other than ``MEDS_BIRTH``; the index date
    is that row's date and times are days since its midnight. Follow-up ends at ``MEDS_DEATH``
    (exit 'death'), at ``FOLLOWUP_END//<exit>``, or else at the last timed row (exit
    'censored'). Codes become cohort codes by ``code_map``, then ``state_prefix`` (e.g.
    ``"STAGE//"`` makes ``STAGE//II`` the state ``state:II``); namespaced codes stay and others
    get ``other_prefix``. Static rows give site (``SITE//``), sex (``SEX//``, ``GENDER//``)
    and covariates (``NAME//value`` text, or ``NAME`` with a number). ``initial_state`` adds
    that state at time 0 for persons with no state there. Rows before the index are dropped
    and counted in ``manifest.meds_import`` (``before_index="error"`` raises instead).
    ``splits`` keeps only the subjects that ``metadata/subject_splits.parquet`` puts in them.
    The whole dataset is read into memory.
    """
    directory = Path(directory)
    what = f"MEDS {directory}"
    if before_index not in ("drop", "error"):
        raise MedsError(f"before_index: expected 'drop' or 'error', got {before_index!r}")
    metadata = _read_metadata(directory)
    ours = metadata.get("trajectories") if isinstance(metadata.get("trajectories"), dict) else {}
    rows = _read_rows(directory, bool(ours), splits)
    timed = rows.filter(pl.col("time").is_not_null())
    marks = _marks(timed, index_code, what)

    code = pl.col("code")
    structural = code.is_in([BIRTH_CODE, DEATH_CODE]) | code.str.starts_with(FOLLOWUP_END_PREFIX)
    if ours.get("end_code_suffix"):
        structural = structural | code.str.ends_with(ours["end_code_suffix"])
    index_date = pl.col("index_date")
    events = (
        timed.filter(~structural)
        .rename({"subject_id": "person_id"})
        .join(marks.select("person_id", "index_date"), on="person_id", how="left")
        .select(
            "person_id",
            _days_since(pl.col("time"), index_date).alias("time"),
            _days_since(pl.col("end_time"), index_date).alias("end_time"),
            _event_codes(code, code_map, state_prefix, other_prefix).alias("code"),
            "value",
            pl.col("_order").alias("__order__"),
        )
    )
    early = events.filter(pl.col("time") < 0)
    if early.height and before_index == "error":
        raise MedsError(
            f"{what}: {early.height} row(s) before the index; "
            f"{_describe_ids(early.get_column('person_id').unique().sort())}"
        )
    events = _with_initial_state(
        events.filter(pl.col("time") >= 0), marks.select("person_id"), initial_state, what
    )
    persons = _persons(marks, rows.filter(pl.col("time").is_null()), ours, default_site)
    provenance: dict[str, Any] = {
        "source": str(directory),
        "meds_dataset": {k: metadata.get(k) for k in ("dataset_name", "dataset_version",
                                                      "etl_name", "etl_version", "meds_version")},
        "meds_import": {"rows": rows.height, "before_index_dropped": early.height,
                        "splits": list(splits) if splits is not None else None},
    }
    source_manifest = ours.get("manifest") or {}
    if source_manifest.get("concepts"):
        provenance["concepts"] = source_manifest["concepts"]
    if source_manifest:
        provenance["source_manifest"] = source_manifest
    return assemble_cohort(persons, [events], "from_meds", what, **provenance)


def _subjects_in(directory: Path, splits: Sequence[str]) -> pl.DataFrame:
    path = directory / SPLITS_FILE
    if not path.is_file():
        raise MedsError(f"{path}: missing; needed to select splits {list(splits)}")
    table = pl.read_parquet(path)
    if not {"subject_id", "split"} <= set(table.columns):
        raise MedsError(f"{path}: needs columns subject_id and split; has {table.columns}")
    return table.filter(pl.col("split").is_in(list(splits))).select(
        pl.col("subject_id").cast(pl.Int64)
    )


def _persons(
    marks: pl.DataFrame, static: pl.DataFrame, ours: Mapping[str, Any], default_site: str
) -> pl.DataFrame:
    """The persons table from the per-subject marks and the static rows."""
    types = ours.get("covariates") or {}
    unknown = sorted(set(types.values()) - set(COVARIATE_TYPES))
    if unknown:
        raise MedsError(f"{DATASET_FILE}: trajectories.covariates has unknown types {unknown}")
    facts = _static_persons(static, types)
    died = pl.col("_death").is_not_null()
    base = marks.join(facts, on="person_id", how="left").with_columns(
        pl.when(died).then(pl.col("_death"))
        .when(pl.col("_end").is_not_null()).then(pl.col("_end"))
        .otherwise(pl.col("_last")).alias("followup_end"),
        pl.when(died).then(pl.lit("death"))
        .otherwise(pl.coalesce("_end_exit", pl.lit("censored"))).alias("exit"),
    )
    site = pl.col("site") if "site" in base.columns else pl.lit(None, dtype=pl.String)
    sex = pl.col("sex") if "sex" in base.columns else pl.lit(None, dtype=pl.String)
    covariates = [c for c in types if c in base.columns]
    covariates += sorted(c for c in facts.columns if c not in {"person_id", "site", "sex",
                                                                *covariates})
    return base.select(
        "person_id",
        site.cast(pl.String).fill_null(default_site).alias("site"),
        "index_date",
        "birth_date",
        sex.cast(pl.String).alias("sex"),
        "followup_end",
        "exit",
        *covariates,
    ).with_columns(pl.col(c).cast(t) for c, t in PERSON_COLUMNS.items()).sort("person_id")
