"""The persons table of a tabular import: site, sex, birth date and covariates from the
named columns, with names a scenario cannot use renamed (never merged)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from trajectories.cohort import PERSON_COLUMNS
from trajectories.errors import ReferenceDataError
from trajectories.io.table.common import (
    DAYS_PER_UNIT,
    ID_LABEL,
    LABELS,
    TEXT_TYPES,
    as_text,
    describe_rows,
    fail_rows,
    index_day,
    require_numeric,
)
from trajectories.io.table.names import changed, valid_names

SEX_CODES = {"f": "F", "female": "F", "m": "M", "male": "M"}
"""Text codings of sex understood without a ``sex_map`` (case and surrounding blanks ignored)."""


def _sex_column(
    frame: pl.DataFrame, sex_col: str, sex_map: Mapping[Any, str | None] | None, what: str
) -> pl.Expr:
    raw = frame.get_column(sex_col)
    if sex_map is None:
        if not isinstance(raw.dtype, TEXT_TYPES):
            raise ReferenceDataError(
                f"{what}: sex column {sex_col!r} holds codes of type {raw.dtype}; say what they "
                f"mean with sex_map={{1: 'M', 2: 'F'}} (--sex-codes 1=M,2=F)"
            )
        key, mapping = raw.cast(pl.String).str.strip_chars().str.to_lowercase(), SEX_CODES
    else:
        wrong = [v for v in sex_map.values() if v not in ("F", "M", None)]
        if wrong:
            raise ReferenceDataError(f"{what}: sex_map values must be 'F', 'M' or None: {wrong}")
        key, mapping = raw, dict(sex_map)
    seen = key.drop_nulls().unique(maintain_order=True).to_list()
    unknown = [v for v in seen if v not in mapping]
    if unknown:
        hint = "" if sex_map is not None else " (understood: F/M, female/male)"
        raise ReferenceDataError(
            f"{what}: sex column {sex_col!r} has values {unknown[:5]} that sex_map does not "
            f"cover{hint}; pass sex_map={{value: 'F' | 'M' | None}} (--sex-codes VALUE=F,...)"
        )
    if not seen:
        return pl.lit(None, dtype=pl.String)
    return pl.lit(key.replace_strict(
        seen, [mapping[v] for v in seen], default=None, return_dtype=pl.String
    ))


def _birth_date(frame: pl.DataFrame, age_col: str, index: dt.date, what: str) -> pl.Expr:
    require_numeric(frame, age_col, what, "age in years")
    age = pl.col(age_col).cast(pl.Float64)
    fail_rows(
        frame,
        age.is_not_null() & (~age.is_finite() | (age < 0)),
        f"{what}: age column {age_col!r} has infinite or negative ages",
    )
    days = (age * DAYS_PER_UNIT["years"]).round().cast(pl.Int64)
    return pl.lit(index) - pl.duration(days=days)


def _covariate(frame: pl.DataFrame, name: str, what: str) -> pl.Expr:
    dtype = frame.schema[name]
    if name in PERSON_COLUMNS or name in LABELS:
        hint = (f"pass {name}_col={name!r} (--{name} {name})" if name in ("site", "sex")
                else "rename it")
        raise ReferenceDataError(
            f"{what}: column {name!r} would clash with the cohort's own {name!r} column; "
            f"{hint} or leave it out of covariates (covariates=[...], --covariates A,B)"
        )
    if dtype.is_numeric() or dtype in (pl.Boolean, pl.Null):
        return pl.col(name).cast(pl.Float64)
    if isinstance(dtype, TEXT_TYPES):
        return pl.col(name).cast(pl.String)
    raise ReferenceDataError(
        f"{what}: covariate {name!r} has type {dtype}; covariates must be numbers or text"
    )

def _renamed(series: pl.Series, prefix: str) -> tuple[pl.Series, dict[str, str]]:
    """``series`` with every value made a valid scenario name, and the renamed values."""
    seen = series.drop_nulls().unique(maintain_order=True).to_list()
    mapping = valid_names(seen, prefix)
    if not changed(mapping):
        return series, {}
    return series.replace_strict(mapping, default=None, return_dtype=pl.String), changed(mapping)


def person_values(table: pl.DataFrame, columns: list[str], what: str) -> pl.DataFrame:
    """One row per person with the columns that must be constant within a person (site, sex,
    age, covariates): a value that changes, or is missing on some of a person's rows only, is
    named with the persons at fault."""
    if columns:
        spread = table.group_by("person_id", maintain_order=True).agg(
            *(pl.col(c).drop_nulls().n_unique().alias(c) for c in columns),
            *(pl.col(c).null_count().alias(f"__nulls__{c}") for c in columns),
            pl.len().alias("__rows__"),
        ).rename({"person_id": ID_LABEL})
        for column in columns:
            nulls = pl.col(f"__nulls__{column}")
            varying = spread.filter(pl.col(column) > 1)
            if varying.height:
                raise ReferenceDataError(
                    f"{what}: column {column!r} varies within a person (a person's site, sex, "
                    "age and covariates must be the same on all their rows: time-varying or "
                    "transition-specific columns, such as expand.covs' 'age.1', cannot be one "
                    f"of them; leave it out of covariates); {describe_rows(varying)}"
                )
            partly = spread.filter((nulls > 0) & (nulls < pl.col("__rows__")))
            if partly.height:
                raise ReferenceDataError(
                    f"{what}: column {column!r} is missing on some of a person's rows but not "
                    f"on others; fill it in on every row; {describe_rows(partly)}"
                )
    return table.group_by("person_id", maintain_order=True).agg(
        pl.col(ID_LABEL).first(), *(pl.col(c).drop_nulls().first() for c in columns)
    )


def build_persons(
    frame: pl.DataFrame,
    *,
    covariates: Sequence[str],
    site_col: str | None,
    site: str,
    sex_col: str | None,
    sex_map: Mapping[Any, str | None] | None,
    age_col: str | None,
    index_date: dt.date | str,
    what: str,
) -> tuple[pl.DataFrame, dict[str, dict[str, str]]]:
    """The persons table from one row per person holding person_id, followup_end and exit,
    and the names it had to change (``{'site': {...}, 'columns': {...}, covariate: {...}}``).

    Site, sex, birth date (index date minus age) and covariates are derived from the named
    columns; numeric covariates become Float64 and text ones String. Site names, covariate
    names and text levels that a scenario could not use are mapped to valid names
    (:func:`trajectories.io.table.names.valid_names`), never merged.
    """
    index = index_day(index_date, what)
    renamed: dict[str, dict[str, str]] = {}
    if site_col is not None:
        blank = pl.col(site_col).cast(pl.String).str.strip_chars() == ""
        fail_rows(frame, pl.col(site_col).is_null() | blank,
                  f"{what}: site column {site_col!r} has missing or blank values")
        sites, renamed["site"] = _renamed(as_text(frame, site_col), "site")
        site_expr = pl.lit(sites)
    else:
        site_expr = pl.lit(site, dtype=pl.String)
    sex = pl.lit(None, dtype=pl.String) if sex_col is None else _sex_column(
        frame, sex_col, sex_map, what
    )
    birth = pl.lit(None, dtype=pl.Date) if age_col is None else _birth_date(
        frame, age_col, index, what
    )
    names = valid_names(covariates, "x", taken=[*PERSON_COLUMNS, *LABELS])
    renamed["columns"] = changed(names)
    extra = []
    for name in covariates:
        expr = _covariate(frame, name, what)
        if isinstance(frame.schema[name], TEXT_TYPES):
            levels, renamed[names[name]] = _renamed(frame.get_column(name).cast(pl.String),
                                                    names[name])
            expr = pl.lit(levels)
        extra.append(expr.alias(names[name]))
    persons = frame.select(
        pl.col("person_id"),
        site_expr.alias("site"),
        pl.lit(index, dtype=pl.Date).alias("index_date"),
        birth.alias("birth_date"),
        sex.alias("sex"),
        pl.col("followup_end"),
        pl.col("exit"),
        *extra,
    )
    persons = persons.with_columns(pl.col(c).cast(t) for c, t in PERSON_COLUMNS.items())
    return persons.sort("person_id"), {k: v for k, v in renamed.items() if v}


def persons_from_rows(
    table: pl.DataFrame, ends: pl.DataFrame, *, covariates: Sequence[str],
    site_col: str | None, site: str, sex_col: str | None,
    sex_map: Mapping[Any, str | None] | None, age_col: str | None,
    index_date: dt.date | str, what: str,
) -> tuple[pl.DataFrame, dict[str, dict[str, str]]]:
    """:func:`build_persons` from several rows per person (whose person columns must agree)
    and ``ends`` (person_id, followup_end, exit)."""
    columns = [c for c in dict.fromkeys([site_col, sex_col, age_col, *covariates]) if c]
    return build_persons(
        person_values(table, columns, what).join(ends, on="person_id", how="left"),
        covariates=covariates, site_col=site_col, site=site, sex_col=sex_col,
        sex_map=sex_map, age_col=age_col, index_date=index_date, what=what,
    )
