"""A scenario as an editable TOML file, and the JSON-safe form of a fit's summary."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from trajectories.scenario import Scenario


def scenario_toml(scenario: Scenario, rows: str | None = None) -> str:
    """The scenario as TOML text that :func:`trajectories.scenario.load_scenario` reads back;
    ``rows`` replaces the ``[baseline] rows`` path (absolute in a loaded scenario)."""
    import tomli_w

    data = scenario.model_dump(mode="python", by_alias=True, exclude_none=True)
    if rows is not None and "baseline" in data:
        data["baseline"]["rows"] = rows
    return tomli_w.dumps(_drop_empty(data))


def write_scenario(scenario: Scenario, path: str | Path) -> Path:
    """Write :func:`scenario_toml` to ``path``; baseline rows inside ``path``'s folder are
    named relative to it (the folder stays relocatable), others by their absolute path."""
    path = Path(path)
    rows = None
    if scenario.baseline is not None:
        file = Path(scenario.baseline.rows)
        folder = path.parent.resolve()
        rows = file.relative_to(folder).as_posix() if file.is_relative_to(folder) else str(file)
    path.write_text(scenario_toml(scenario, rows=rows), encoding="utf-8")
    return path


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in ({}, [], "")}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, dates and non-finite floats made JSON-safe (NaN: null)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
