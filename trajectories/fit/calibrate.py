"""Deprecated: calibration moved to :mod:`validation.calibrate` (it simulates, then measures
against published figures, so it sits with the checks). Names are still found here, with a
DeprecationWarning, for one release; the module is loaded on first use, never imported, so
the generators keep importing nothing of the validation layer above them."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

NEW_HOME = "validation.calibrate"


def __getattr__(name: str) -> Any:
    module = importlib.import_module(NEW_HOME)
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"trajectories.fit.calibrate.{name} moved to {NEW_HOME}.{name}; this alias "
                  "goes in the next release", DeprecationWarning, stacklevel=2)
    return getattr(module, name)
