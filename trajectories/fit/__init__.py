"""Learning scenarios from data: a multi-state model fitted to a reference cohort."""

from trajectories.fit.families import FitError, TransitionFit, select_family
from trajectories.fit.model import MultiStateModel
from trajectories.fit.scenario_file import scenario_toml, write_scenario

__all__ = ["FitError", "MultiStateModel", "TransitionFit", "scenario_toml", "select_family",
           "write_scenario"]
