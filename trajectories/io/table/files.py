"""Read a CSV, TSV or Parquet file of reference data into a frame for the tabular loaders,
and the ``code=meaning`` lists the command line takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from trajectories.errors import ReferenceDataError

NULL_TEXT = ["", "NA", "N/A", "NaN", "nan", "NULL", "null", "."]
"""Cells read as missing in text files (R writes NA; SAS and Stata write '.')."""

SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


def read_table(path: str | Path) -> pl.DataFrame:
    """A frame from ``.csv`` / ``.tsv`` / ``.txt`` (header row) or ``.parquet``; R's row-name
    column (an unnamed first column) is dropped. Errors name the file."""
    path = Path(path)
    if path.is_dir():
        raise ReferenceDataError(f"{path}: is a directory; give a .csv, .tsv, .txt or .parquet "
                                 "file")
    if not path.is_file():
        raise ReferenceDataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix in SEPARATORS:
            frame = pl.read_csv(path, separator=SEPARATORS[suffix], null_values=NULL_TEXT,
                                infer_schema_length=None)
        else:
            raise ReferenceDataError(
                f"{path}: unknown file type {suffix!r}; expected .csv, .tsv, .txt or .parquet"
            )
    except (pl.exceptions.PolarsError, OSError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        hint = ""
        if "utf-8" in text.lower() or "utf8" in text.lower():
            hint = ("; the file is not UTF-8 text: save it as UTF-8 (e.g. iconv -f latin1 -t "
                    "utf-8)")
        elif "ragged" in str(error).lower() or "fields" in text.lower():
            hint = "; some rows have more fields than the header (a separator inside a value?)"
        raise ReferenceDataError(f"{path}: cannot read it: {text}{hint}") from None
    if frame.columns and frame.columns[0] in ("", "__index_level_0__"):
        frame = frame.drop(frame.columns[0])
    return frame


def parse_codes(text: str | None, option: str) -> dict[str, str] | None:
    """``'0=censored,1=relapse'`` -> ``{'0': 'censored', '1': 'relapse'}`` (None stays None)."""
    if text is None:
        return None
    codes: dict[str, str] = {}
    for item in text.split(","):
        code, sep, meaning = item.partition("=")
        if not sep or not code.strip() or not meaning.strip():
            raise ReferenceDataError(f"{option} takes CODE=MEANING pairs separated by commas "
                                     f"(e.g. 0=censored,1=relapse,2=death), got {text!r}")
        if code.strip() in codes:
            raise ReferenceDataError(f"{option}: code {code.strip()!r} is given twice")
        codes[code.strip()] = meaning.strip()
    return codes


def parse_list(text: str | None) -> list[str] | None:
    """``'a,b'`` -> ``['a', 'b']``; ``''`` -> ``[]`` (none); None stays None (the default)."""
    if text is None:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


def sex_codes(codes: dict[str, str] | None, frame: pl.DataFrame,
              column: str | None) -> dict[Any, str | None] | None:
    """Command-line sex codes keyed like the column's values (numbers stay numbers)."""
    if codes is None or column is None or column not in frame.columns:
        return codes
    dtype = frame.schema[column]
    if dtype.is_integer():
        try:
            return {int(k): v for k, v in codes.items()}
        except ValueError:
            raise ReferenceDataError(f"--sex-codes: column {column!r} holds integers, got "
                                     f"codes {list(codes)}") from None
    if dtype.is_float():
        return {float(k): v for k, v in codes.items()}
    return codes
