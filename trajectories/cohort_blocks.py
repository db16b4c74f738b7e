"""Old home of the block sources, kept for one release: import from
:mod:`trajectories.cohort.blocks` (or :mod:`trajectories.cohort`) instead."""

from trajectories.cohort.blocks import (  # noqa: F401
    Block,
    CohortBlocks,
    CohortSource,
    DirectoryBlocks,
    InMemoryBlocks,
    built_ahead,
    cohort_blocks,
)
