"""The package version, at the ground floor so that any module can stamp it (pyproject's)."""

__version__ = "0.1.0"
