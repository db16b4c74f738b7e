"""Check and Report: what each validation check found, and the collection of them."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["pass", "fail", "info"]


@dataclass(frozen=True)
class Check:
    """One comparison: a metric against a threshold, its verdict and the data behind it.

    ``verdict`` is "info" for figures shown without a pass/fail rule (a median, a count).
    ``site`` is None for the pooled cohort.
    """

    group: str
    name: str
    subject: str
    metric: float | None
    threshold: float | None
    verdict: Verdict
    rule: str
    site: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"


def judge(
    group: str,
    name: str,
    subject: str,
    metric: float,
    threshold: float,
    *,
    higher_is_worse: bool = True,
    site: str | None = None,
    rule: str = "",
    details: dict[str, Any] | None = None,
) -> Check:
    """A check that passes when ``metric`` is on the right side of ``threshold``."""
    if metric is None or (isinstance(metric, float) and math.isnan(metric)):
        passed = False
    else:
        passed = metric <= threshold if higher_is_worse else metric >= threshold
    default_rule = f"{name} {'<=' if higher_is_worse else '>='} threshold"
    return Check(group, name, subject, metric, threshold, "pass" if passed else "fail",
                 rule or default_rule, site, details or {})


def within(
    group: str,
    name: str,
    subject: str,
    value: float,
    lower: float,
    upper: float,
    *,
    site: str | None = None,
    rule: str = "",
    details: dict[str, Any] | None = None,
) -> Check:
    """A check that passes when ``value`` lies in [lower, upper] (e.g. a reference interval)."""
    ok = value is not None and not math.isnan(value) and lower <= value <= upper
    return Check(group, name, subject, value, None, "pass" if ok else "fail",
                 rule or f"{name} within [{lower:.4g}, {upper:.4g}]", site,
                 {"lower": lower, "upper": upper, **(details or {})})


def info(group: str, name: str, subject: str, metric: float | None, *,
         site: str | None = None, details: dict[str, Any] | None = None) -> Check:
    """A figure reported for reading, not judged."""
    return Check(group, name, subject, metric, None, "info", "shown, not judged", site,
                 details or {})


@dataclass
class Report:
    """Every check of one comparison, the figures drawn for it, what was compared, and notes
    on choices made for the user (such as default endpoints and why)."""

    checks: list[Check]
    figures: dict[str, str] = field(default_factory=dict)  # title -> PNG as base64
    context: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def counts(self) -> dict[str, int]:
        tally = {"pass": 0, "fail": 0, "info": 0}
        for check in self.checks:
            tally[check.verdict] += 1
        return tally

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "counts": self.counts(),
            "context": self.context,
            "notes": list(self.notes),
            "checks": [asdict(c) for c in self.checks],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write ``report.json``: every check with metric, threshold, verdict and details."""
        path = Path(path)
        path.write_text(json.dumps(_finite(self.to_dict()), indent=2, default=str) + "\n",
                        encoding="utf-8")
        return path

    def write_html(self, path: str | Path, title: str | None = None) -> Path:
        """Write ``report.html``, self-contained (:func:`validation.report.html.write_html`)."""
        from validation.report.html import write_html

        return write_html(self, path, title)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
