"""Read a scenario from a TOML file, a built-in name or a dict, with errors that say where."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trajectories.errors import ScenarioError
from trajectories.scenario.schema import Scenario


def _location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def scenario_from_dict(data: dict[str, Any], source: str = "<dict>") -> Scenario:
    """Validate an already parsed scenario; ``source`` names it in error messages."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            # Union members (hazard families, covariate kinds) appear in loc; keep them, they
            # tell the user which family's field was wrong.
            where = _location(problem["loc"]) or "(scenario)"
            message = problem["msg"].removeprefix("Value error, ")
            got = problem.get("input")
            shown = "" if isinstance(got, dict | list) or problem["type"] == "missing" else (
                f" (got {got!r})"
            )
            lines.append(f"  {where}: {message}{shown}")
        raise ScenarioError(f"invalid scenario {source}:\n" + "\n".join(lines)) from None


def load_scenario(source: str | Path) -> Scenario:
    """Load a scenario from a TOML path or the name of a built-in scenario."""
    path = Path(source)
    if not path.is_file():
        from scenarios import builtin_path

        builtin = builtin_path(str(source))
        if builtin is None:
            from scenarios import available

            raise ScenarioError(
                f"no scenario file {str(source)!r} and no built-in scenario of that name; "
                f"built-ins: {', '.join(available())}"
            )
        path = builtin
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"invalid scenario {path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ScenarioError(f"cannot read scenario {path}: {error}") from None
    return scenario_from_dict(data, source=str(path))
