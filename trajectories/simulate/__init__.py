"""The vectorised continuous-time Markov / semi-Markov multi-state simulator."""

from trajectories.simulate.simulator import MarkovSimulator

__all__ = ["MarkovSimulator"]
