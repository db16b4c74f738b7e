"""What the command line prints through: its two consoles and small polars tables."""

from __future__ import annotations

import polars as pl
from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)


def print_frame(frame: pl.DataFrame, title: str) -> None:
    """Print a small polars frame as a rich table."""
    table = Table(title=title, title_justify="left")
    for name in frame.columns:
        table.add_column(name, justify="right" if frame.schema[name].is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*(cell(v) for v in row))
    out.print(table)


def cell(value) -> str:
    """A value as a table cell: numbers with thousands separators, nothing for null."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
