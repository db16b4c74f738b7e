"""The one exception family users can cause; the CLI prints these without a traceback."""

from __future__ import annotations


class TrajectoriesError(Exception):
    """Base class for every error a user can cause with bad input."""


class ScenarioError(TrajectoriesError):
    """A scenario file is unreadable or declares something impossible."""


class CohortSchemaError(TrajectoriesError):
    """A cohort's tables break the data model (column, type, or a temporal rule)."""


class ReferenceDataError(TrajectoriesError):
    """Reference data handed to a loader cannot be turned into a cohort."""
