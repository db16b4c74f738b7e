"""Importers and exporters: reference data in (survival tables, mstate long format, OMOP, MEDS)
and cohorts out (OMOP in trajectories.io.omop, MEDS)."""

from trajectories.io.meds import from_meds, write_meds
from trajectories.io.mstate import from_mstate
from trajectories.io.omop_import import from_omop
from trajectories.io.survival_table import from_survival_table

__all__ = ["from_meds", "from_mstate", "from_omop", "from_survival_table", "write_meds"]
