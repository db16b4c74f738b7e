"""Validation results: Check and Report objects, written as JSON and self-contained HTML."""

from validation.report.checks import Check, Report, info, judge, within
from validation.report.html import render_html, write_html

__all__ = ["Check", "Report", "info", "judge", "render_html", "within", "write_html"]
