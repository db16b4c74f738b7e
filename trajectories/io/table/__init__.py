"""Tabular reference data in: one row per person, counting-process rows, long measurement
tables, and the CSV/TSV/Parquet files that hold them.

- :mod:`.common`: the checks, messages and :func:`~.common.assemble_cohort` every importer shares
- :mod:`.persons`: the persons table (site, sex, birth date, covariates) from named columns
- :mod:`.survival`: :func:`from_survival_table`
- :mod:`.counting_process`: :func:`from_counting_process`
- :mod:`.measurements`: :func:`add_measurements`
- :mod:`.files`: :func:`read_table` and the command line's ``code=meaning`` lists
- :mod:`.names`: valid scenario names for real data's sites, levels and columns
- :mod:`.episodes`: recurrent events as episode-numbered states
"""

from trajectories.io.table.counting_process import from_counting_process
from trajectories.io.table.files import read_table
from trajectories.io.table.measurements import add_measurements
from trajectories.io.table.survival import from_survival_table

__all__ = ["add_measurements", "from_counting_process", "from_survival_table", "read_table"]
