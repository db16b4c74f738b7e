"""Old home of the episode numbering, kept for one release: import from
:mod:`trajectories.io.table.episodes` instead."""

from trajectories.io.table.episodes import episode_name, number_episodes  # noqa: F401
