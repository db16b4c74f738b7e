"""A self-contained HTML report a clinician can read: verdicts first, then the figures."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: Report.write_html imports this module
    from validation.report.checks import Check, Report

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d2733;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #dde3ea}
.meta{color:#5b6673;font-size:.9rem}
table{border-collapse:collapse;width:100%;font-size:.88rem;margin:.6rem 0}
th,td{border-bottom:1px solid #e6ebf0;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#13723b;font-weight:600}.fail{color:#b3261e;font-weight:700}.info{color:#5b6673}
.banner{padding:.8rem 1rem;border-radius:6px;font-size:1.1rem;margin:1rem 0}
.banner.ok{background:#e7f5ec}.banner.bad{background:#fdecea}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #e6ebf0}
figcaption{font-size:.85rem;color:#5b6673}
"""


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    return html.escape(str(value))


def _row(check: Check) -> str:
    return (
        f"<tr><td class='{check.verdict}'>{check.verdict.upper()}</td>"
        f"<td>{html.escape(check.group)}</td><td>{html.escape(check.name)}</td>"
        f"<td>{html.escape(check.subject)}</td><td>{html.escape(check.site or 'pooled')}</td>"
        f"<td class='num'>{_number(check.metric)}</td>"
        f"<td class='num'>{_number(check.threshold)}</td>"
        f"<td>{html.escape(check.rule)}</td></tr>"
    )


def _table(checks: list[Check]) -> str:
    head = ("<tr><th>verdict</th><th>group</th><th>check</th><th>subject</th><th>site</th>"
            "<th>metric</th><th>threshold</th><th>rule</th></tr>")
    return f"<table>{head}{''.join(_row(c) for c in checks)}</table>"


def _summary(checks: list[Check]) -> str:
    groups: dict[str, dict[str, int]] = {}
    for check in checks:
        tally = groups.setdefault(check.group, {"pass": 0, "fail": 0, "info": 0})
        tally[check.verdict] += 1
    rows = "".join(
        f"<tr><td>{html.escape(group)}</td>"
        f"<td class='num pass'>{t['pass']}</td>"
        f"<td class='num {'fail' if t['fail'] else ''}'>{t['fail']}</td>"
        f"<td class='num info'>{t['info']}</td></tr>"
        for group, t in groups.items()
    )
    return ("<table><tr><th>group</th><th>passed</th><th>failed</th><th>shown</th></tr>"
            f"{rows}</table>")


def render_html(report: Report, title: str = "Synthetic cohort validation report") -> str:
    """The report as one HTML document with its images embedded as base64 PNG."""
    counts = report.counts()
    verdict = "ok" if report.passed else "bad"
    headline = (
        "Every judged check passed." if report.passed
        else f"{counts['fail']} check(s) failed; they are listed first."
    )
    context = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in report.context.items()
    )
    ordered = sorted(report.checks, key=lambda c: {"fail": 0, "pass": 1, "info": 2}[c.verdict])
    judged = [c for c in ordered if c.verdict != "info"]
    shown = [c for c in ordered if c.verdict == "info"]
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in report.notes)
    notes = f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""
    figures = "".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{png}'>"
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in report.figures.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{counts['pass']} passed, {counts['fail']} failed, {counts['info']} shown for
reading.</p>
<div class="banner {verdict}">{headline}</div>
<h2>Summary</h2>{_summary(report.checks)}
{notes}
<h2>What was compared</h2><table>{context}</table>
<h2>Verdicts</h2>{_table(judged)}
<h2>Figures</h2>{figures or '<p>No figures.</p>'}
<h2>Figures shown, not judged</h2>{_table(shown)}
</body></html>
"""


def write_html(report: Report, path: str | Path, title: str | None = None) -> Path:
    """Write ``report.html`` (self-contained)."""
    path = Path(path)
    text = render_html(report) if title is None else render_html(report, title)
    path.write_text(text, encoding="utf-8")
    return path
