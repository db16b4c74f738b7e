"""Importers and exporters: reference data in (survival tables, mstate long format) and out."""

from trajectories.io.mstate import from_mstate
from trajectories.io.survival_table import from_survival_table

__all__ = ["from_mstate", "from_survival_table"]
