"""Built-in scenario files shipped inside the package, and a registry to list and find them."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path


def _files() -> dict[str, Path]:
    folder = resources.files(__name__)
    return {
        Path(str(entry)).stem: Path(str(entry))
        for entry in folder.iterdir()
        if str(entry).endswith(".toml")
    }


def available() -> dict[str, str]:
    """Built-in scenario name -> its one-line description, sorted by name."""
    described = {}
    for name, path in sorted(_files().items()):
        with path.open("rb") as handle:
            lines = tomllib.load(handle).get("description", "").strip().splitlines()
            described[name] = lines[0] if lines else ""
    return described


def builtin_path(name: str) -> Path | None:
    """The file of built-in scenario ``name``, or None if there is none."""
    return _files().get(name)
