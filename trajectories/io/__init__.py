"""Importers and exporters: reference data in (survival tables, counting-process rows, mstate
long format, long measurement tables, OMOP, MEDS) and cohorts out (OMOP in
trajectories.io.omop, MEDS)."""

from trajectories.io.counting_process import from_counting_process
from trajectories.io.measurements import add_measurements
from trajectories.io.meds import from_meds, write_meds
from trajectories.io.mstate import from_mstate
from trajectories.io.omop_import import from_omop
from trajectories.io.survival_table import from_survival_table
from trajectories.io.table_file import read_table

__all__ = [
    "add_measurements",
    "from_counting_process",
    "from_meds",
    "from_mstate",
    "from_omop",
    "from_survival_table",
    "read_table",
    "write_meds",
]
