"""Scenario files: the declarative description of a cohort to simulate."""

from trajectories.scenario.load import load_scenario, scenario_from_dict
from trajectories.scenario.schema import Scenario

__all__ = ["Scenario", "load_scenario", "scenario_from_dict"]
