"""trajectories: synthetic longitudinal patient cohorts whose conclusions hold up."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trajectories")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from trajectories.cohort import Cohort, Manifest  # noqa: E402
from trajectories.errors import (  # noqa: E402
    CohortSchemaError,
    ReferenceDataError,
    ScenarioError,
    TrajectoriesError,
)
from trajectories.scenario import Scenario, load_scenario  # noqa: E402
from trajectories.simulate import MarkovSimulator  # noqa: E402

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
]
