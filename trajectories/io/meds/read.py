"""Read a MEDS dataset (one :func:`~trajectories.io.meds.write.write_meds` made, or anyone's)
as a Cohort."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from trajectories.cohort import (
    CODE_PATTERN,
    EXITS,
    MICROSECONDS_PER_DAY,
    PERSON_COLUMNS,
    STATE_PREFIX,
    Cohort,
    with_initial_state,
)
from trajectories.errors import MedsError
from trajectories.io.meds.layout import (
    BIRTH_CODE,
    COVARIATE_PREFIX,
    COVARIATE_TYPES,
    DATA_DIR,
    DATASET_FILE,
    DEATH_CODE,
    EXTENSION_COLUMNS,
    FOLLOWUP_END_PREFIX,
    SPLITS_FILE,
)
from trajectories.io.table.common import assemble_cohort

SEX_VALUES = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}


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


def from_meds(
    directory: str | Path,
    *,
    state_prefix: str = STATE_PREFIX,
    code_map: Mapping[str, str] | None = None,
    other_prefix: str = "observation:",
    index_code: str | None = None,
    initial_state: str | None = None,
    default_site: str = "unknown",
    splits: Sequence[str] | None = None,
    before_index: str = "drop",
) -> Cohort:
    """A Cohort from a MEDS dataset: one :func:`~trajectories.io.meds.write.write_meds` wrote,
    or anyone's.

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
    events = with_initial_state(
        events.filter(pl.col("time") >= 0), marks, initial_state,
        lambda ids: MedsError(f"{what}: no state at time 0 (the index date's midnight) for "
                              f"{_describe_ids(ids)}; pass initial_state= to add one"))
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
