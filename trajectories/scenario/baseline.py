"""The ``[baseline]`` rows: the Parquet file read (and its sha256 checked) when the scenario is
validated, then its columns checked against the declared covariates and sites."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import polars as pl
from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from trajectories.scenario.models import CategoricalCovariate, Strict

if TYPE_CHECKING:
    from trajectories.scenario.schema import Scenario


BASE_DIR = "base_dir"
"""Validation-context key: the folder a relative ``[baseline] rows`` path resolves against
(the scenario file's folder; the current directory when absent)."""


class Baseline(Strict):
    """Reference baseline rows: new persons get whole rows, drawn within their own site, for
    ``columns``, so those covariates keep their joint distribution per site.

    ``rows`` is made absolute when the scenario is validated (so a scenario passed on as a
    dict still finds it); the content hash uses the file's ``sha256``, never the path.
    """

    rows: str = Field(description="Parquet file; a relative path is relative to the scenario "
                      "file's folder")
    site_column: str = "site"
    columns: list[str] | None = Field(
        default=None,
        description="declared covariates the rows replace (default: every declared covariate "
        "that is a column of the file)",
    )
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="of the file; filled on load, checked when given"
    )
    _table: pl.DataFrame | None = PrivateAttr(default=None)
    _keep_alive: Any = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _read_rows(cls, data: Any, handler, info: ValidationInfo) -> Baseline:
        if isinstance(data, Baseline) or not isinstance(data, dict) or not isinstance(
                data.get("rows"), str):
            return handler(data)
        base = Path((info.context or {}).get(BASE_DIR) or Path.cwd())
        path = Path(data["rows"]).expanduser()
        path = (path if path.is_absolute() else base / path).resolve()
        try:
            content = path.read_bytes()
        except OSError as error:
            raise ValueError(
                f"rows file {path} cannot be read: {error.strerror or error}") from None
        digest = hashlib.sha256(content).hexdigest()
        given = data.get("sha256")
        if isinstance(given, str) and given != digest:
            raise ValueError(
                f"rows file {path} has sha256 {digest}, but the scenario gives sha256 = "
                f"{given!r}: the file changed; restore it, or update or remove sha256"
            )
        try:
            table = pl.read_parquet(io.BytesIO(content))
        except Exception as error:  # polars raises several kinds for a non-Parquet file
            raise ValueError(f"rows file {path} is not a readable Parquet file: {error}") from None
        baseline = handler({**data, "rows": str(path), "sha256": digest})
        baseline._table = table
        return baseline

    def table(self) -> pl.DataFrame:
        """The rows as read when the scenario was validated (re-read if built otherwise)."""
        if self._table is None:
            self._table = pl.read_parquet(self.rows)
        return self._table


def baseline_problems(scenario: Scenario) -> list[str]:
    """The rows file against the declared covariates and sites: columns present and complete,
    levels declared, numeric columns of numbers, rows for every site."""
    baseline = scenario.baseline
    if baseline is None:
        return []
    table, file = baseline.table(), baseline.rows
    where = f"baseline (rows {file})"
    problems = []
    site_column = baseline.site_column
    if site_column not in table.columns:
        problems.append(f"{where}: site_column {site_column!r} is not a column of the file; "
                        f"it has {table.columns}")
    if baseline.columns == []:
        problems.append(f"{where}: columns is empty; name the covariates the rows replace, "
                        "or leave it out for every declared covariate in the file")
    if baseline.columns is not None:
        for name in baseline.columns:
            if name not in scenario.covariates:
                problems.append(f"{where}: columns names {name!r}, which is not a declared "
                                f"covariate; declared: {sorted(scenario.covariates)}")
            elif name not in table.columns:
                problems.append(f"{where}: columns names {name!r}, which is not a column of "
                                f"the file; it has {table.columns}")
    elif not scenario.baseline_columns():
        problems.append(f"{where}: the file has none of the declared covariates "
                        f"{sorted(scenario.covariates)} as a column; it has {table.columns}")
    if problems:
        return problems
    for name in [site_column, *scenario.baseline_columns()]:
        column = table.get_column(name)
        missing = column.null_count() + (
            int((~column.is_finite()).sum()) if column.dtype.is_float() else 0)
        if missing:
            problems.append(f"{where}: column {name!r} has {missing} null, NaN or infinite "
                            "value(s); every row must be complete in the columns used")
    for name in scenario.baseline_columns():
        column, spec = table.get_column(name), scenario.covariates[name]
        if isinstance(spec, CategoricalCovariate):
            unknown = sorted(set(column.drop_nulls().cast(pl.String).unique().to_list())
                             - set(spec.levels))
            if unknown:
                problems.append(f"{where}: column {name!r} has value(s) {unknown[:10]} "
                                f"outside the declared levels {list(spec.levels)}")
        elif not (column.dtype.is_numeric() or column.dtype == pl.Boolean):
            problems.append(f"{where}: covariate {name!r} is numeric ({spec.kind}) but the "
                            f"file's column is {column.dtype}")
        elif name == "age" and (column.cast(pl.Float64) < 0).any():
            problems.append(f"{where}: column 'age' has negative values")
    if site_column in table.columns:
        present = set(table.get_column(site_column).drop_nulls().cast(pl.String).to_list())
        empty = [s.name for s in scenario.sites if s.name not in present]
        if empty:
            problems.append(f"{where}: no rows for site(s) {empty} in column "
                            f"{site_column!r}; it holds {sorted(present)[:10]}")
    return problems
