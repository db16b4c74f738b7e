"""Formats in and out, one folder each, reading and writing apart: :mod:`.table` (survival
tables, counting-process rows, long measurement tables), :mod:`.mstate` (R mstate's long
format), :mod:`.omop` (OMOP CDM v5.4 export, checks and import), :mod:`.meds` (MEDS v0.4)."""

from trajectories.io.meds import from_meds, write_meds
from trajectories.io.mstate import from_mstate
from trajectories.io.omop.read import from_omop
from trajectories.io.table import (
    add_measurements,
    from_counting_process,
    from_survival_table,
    read_table,
)

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
