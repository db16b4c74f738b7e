"""Reading TOML files and explaining pydantic validation errors, the same way everywhere.

Scenario, endpoint, thresholds and published-figures files all go through here, so every bad
file gets messages of one shape: ``<file>:`` then one ``  <field path>: <problem> (got X)``
line per problem.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trajectories.errors import TrajectoriesError


def read_toml(path: str | Path, what: str, error: type[TrajectoriesError]) -> dict[str, Any]:
    """Parse a TOML file; an unreadable or invalid file raises ``error`` naming it."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as problem:
        raise error(f"invalid {what} {path}: not valid TOML: {problem}") from None
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"cannot read {what} {path}: {problem}") from None


def field_path(loc: tuple) -> str:
    """A pydantic location as a field path: ``transitions[0].hazard.rate``."""
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts)


def explain(error: ValidationError, prefix: str = "") -> list[str]:
    """One indented line per problem: where (``prefix.field``), what, and the value given."""
    lines = []
    for problem in error.errors():
        # Union members (hazard families, covariate kinds) appear in the path; they tell the
        # user which family's field was wrong, so they stay.
        where = ".".join(part for part in (prefix, field_path(problem["loc"])) if part)
        message = problem["msg"].removeprefix("Value error, ")
        given = problem.get("input")
        shown = "" if isinstance(given, dict | list) or problem["type"] == "missing" else (
            f" (got {given!r})"
        )
        lines.append(f"  {where or '(file)'}: {message}{shown}")
    return lines
