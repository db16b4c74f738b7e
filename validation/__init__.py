"""Validation of synthetic cohorts against a reference cohort or published figures.

Entry point: :func:`validation.compare` returns a :class:`validation.report.Report` whose
``write_json`` / :func:`validation.report.write_html` give ``report.json`` and ``report.html``.
"""

from validation.compare import compare
from validation.report import Report, write_html
from validation.thresholds import Thresholds, load_thresholds

__all__ = ["Report", "Thresholds", "compare", "load_thresholds", "write_html"]
