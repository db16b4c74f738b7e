"""Merge a long table of repeated measurements (id, time, name, value[, unit]) into a cohort
as ``measurement:<name>`` events with their values."""

from __future__ import annotations

from typing import Any

import polars as pl

from trajectories.cohort import EVENT_COLUMNS, Cohort
from trajectories.errors import CohortSchemaError, ReferenceDataError
from trajectories.io.table.common import (
    ID_LABEL,
    as_polars,
    check_times,
    days_per_unit,
    describe_rows,
    fail_rows,
    integer_ids,
    require_columns,
    with_labels,
)
from trajectories.io.table.names import changed, valid_names

MEASUREMENT_PREFIX = "measurement:"


def add_measurements(
    cohort: Cohort,
    frame: Any,
    *,
    id_col: str = "id",
    time_col: str = "time",
    name_col: str = "name",
    value_col: str = "value",
    unit_col: str | None = None,
    time_unit: str = "days",
    source: str = "measurements table",
) -> Cohort:
    """``cohort`` with one ``measurement:<name>`` event per row of ``frame``.

    Times are days since the person's index (converted from ``time_unit``) and must fall
    within their follow-up; values must be numbers; every id must be a person of the cohort;
    a name keeps one unit. Names a scenario cannot use are renamed (manifest
    ``name_mapping['measurement']``); the manifest's ``measurements`` lists each name's unit
    and row count. At one time a measurement follows the state entered then. No row is
    dropped: bad rows raise :class:`ReferenceDataError` naming ``source``, the column and the
    first ids.
    """
    what = source
    table = as_polars(frame, what)
    require_columns(table, [id_col, time_col, name_col, value_col, unit_col], what)
    if table.height == 0:
        raise ReferenceDataError(f"{what}: no rows")
    scale = days_per_unit(time_unit, what)
    table = with_labels(table, id_col)
    table = table.with_columns(integer_ids(table, id_col, what).alias("person_id"))
    check_times(table, time_col, what, f"time in {time_unit}")
    values = _numbers(table, value_col, what)
    fail_rows(table, pl.col(name_col).is_null(), f"{what}: column {name_col!r} has missing names")
    names = valid_names(table.get_column(name_col).cast(pl.String).unique(maintain_order=True)
                        .to_list(), "m")
    table = table.with_columns(
        (pl.col(time_col).cast(pl.Float64) * scale).alias("__time__"),
        values.alias("__value__"),
        pl.col(name_col).cast(pl.String).replace_strict(names, return_dtype=pl.String)
        .alias("__name__"),
    ).join(cohort.persons.select("person_id", "followup_end"), on="person_id", how="left")
    fail_rows(table, pl.col("followup_end").is_null(),
              f"{what}: column {id_col!r} names persons the cohort does not have")
    fail_rows(table, pl.col("__time__") > pl.col("followup_end"),
              f"{what}: column {time_col!r} has measurements after the person's follow-up "
              "ended")
    units = _units(table, unit_col, what)
    ordered = pl.concat([
        cohort.events.with_columns(pl.lit(0, dtype=pl.Int8).alias("__order__")),
        table.select(
            "person_id", pl.col("__time__").alias("time"),
            pl.lit(None, dtype=pl.Float64).alias("end_time"),
            (pl.lit(MEASUREMENT_PREFIX) + pl.col("__name__")).alias("code"),
            pl.col("__value__").alias("value"), pl.lit(1, dtype=pl.Int8).alias("__order__"),
        ),
    ]).sort("person_id", "time", "__order__", maintain_order=True)
    events = ordered.select(pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items())
    counts = dict(table.group_by("__name__").len().iter_rows())
    manifest = cohort.manifest.model_copy(deep=True)
    manifest.measurements = {name: {"unit": units.get(name), "rows": int(counts[name])}
                             for name in sorted(counts)}
    renamed = changed(names)
    if renamed:
        mapping = dict(getattr(manifest, "name_mapping", None) or {})
        mapping["measurement"] = renamed
        manifest.name_mapping = mapping
    try:
        merged = Cohort(cohort.persons, events, manifest)
    except CohortSchemaError as error:
        raise ReferenceDataError(f"{what}: {error}") from None
    if manifest.reference_fingerprint is not None:
        manifest.reference_fingerprint = merged.fingerprint()
    return merged


def _numbers(table: pl.DataFrame, column: str, what: str) -> pl.Series:
    """The value column as Float64; text that is not a number and missing values are named."""
    series = table.get_column(column)
    if series.dtype.is_numeric():
        values = series.cast(pl.Float64)
    elif series.dtype == pl.String:
        values = series.str.strip_chars().cast(pl.Float64, strict=False)
    else:
        raise ReferenceDataError(f"{what}: column {column!r} must hold numbers, got type "
                                 f"{series.dtype}")
    bad = table.filter((values.is_null() | ~values.is_finite()).fill_null(True))
    if bad.height:
        shown = bad.get_column(column).head(3).to_list()
        raise ReferenceDataError(
            f"{what}: column {column!r} has missing or non-numeric values (e.g. {shown}); "
            f"remove or correct those rows; {describe_rows(bad)}"
        )
    return values


def _units(table: pl.DataFrame, unit_col: str | None, what: str) -> dict[str, str | None]:
    if unit_col is None:
        return {}
    per_name = table.group_by("__name__").agg(
        pl.col(unit_col).cast(pl.String).drop_nulls().unique().alias("units"),
        pl.col(ID_LABEL).first(),
    )
    mixed = per_name.filter(pl.col("units").list.len() > 1)
    if mixed.height:
        first = mixed.row(0, named=True)
        raise ReferenceDataError(
            f"{what}: measurement {first['__name__']!r} has several units {first['units']} in "
            f"column {unit_col!r}; convert to one unit first"
        )
    return {r["__name__"]: (r["units"][0] if r["units"] else None)
            for r in per_name.iter_rows(named=True)}
