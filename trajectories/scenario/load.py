"""Read a scenario from a TOML file, a built-in name or a dict, with errors that say where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trajectories.errors import ScenarioError
from trajectories.scenario.schema import BASE_DIR, Scenario
from trajectories.tomlfile import explain, read_toml


def scenario_from_dict(
    data: dict[str, Any], source: str = "<dict>", base_dir: str | Path | None = None
) -> Scenario:
    """Validate an already parsed scenario; ``source`` names it in error messages.

    A relative ``[baseline] rows`` path resolves against ``base_dir`` (default: the current
    directory); the validated scenario holds it as an absolute path.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        return Scenario.model_validate(data, context={BASE_DIR: base.resolve()})
    except ValidationError as error:
        lines = explain(error)
        raise ScenarioError(f"invalid scenario {source}:\n" + "\n".join(lines)) from None


def load_scenario(source: str | Path) -> Scenario:
    """Load a scenario from a TOML path or the name of a built-in scenario (a relative
    ``[baseline] rows`` path is relative to the file's folder)."""
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
    return scenario_from_dict(read_toml(path, "scenario", ScenarioError), source=str(path),
                              base_dir=path.parent)
