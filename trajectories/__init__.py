"""trajectories: synthetic longitudinal patient cohorts whose conclusions hold up."""

from trajectories._version import __version__
from trajectories.cohort import Cohort, Manifest, read_cohort, scan_cohort
from trajectories.errors import (
    CohortSchemaError,
    ReferenceDataError,
    ScenarioError,
    TrajectoriesError,
)
from trajectories.scenario import Scenario, load_scenario
from trajectories.simulate import MarkovSimulator

__all__ = [
    "Cohort",
    "CohortSchemaError",
    "Manifest",
    "MarkovSimulator",
    "ReferenceDataError",
    "Scenario",
    "ScenarioError",
    "TrajectoriesError",
    "__version__",
    "load_scenario",
    "read_cohort",
    "scan_cohort",
]
