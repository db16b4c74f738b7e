"""What a saved model directory stores, file by file: the inventory ``trajectories describe
--model`` prints, so that a reviewer sees exactly what sharing the model would share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from trajectories.errors import TrajectoriesError
from trajectories.fit.model import FIT_FILE, SCENARIO_FILE

SEQUENCE_FILES = ("weights.pt", "config.json", "vocabulary.json")
"""What `trajectories train` writes (trajectories.sequence, not imported: it loads torch)."""


def model_inventory(directory: str | Path) -> tuple[pl.DataFrame, dict[str, Any] | None]:
    """(file, part, holds) rows for every file of a multi-state or sequence model directory,
    and the privacy record (differential privacy budget and accounting), if the model has one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TrajectoriesError(f"{directory}: not a directory")
    if (directory / SCENARIO_FILE).is_file():
        rows, privacy = _multi_state(directory)
    elif all((directory / name).is_file() for name in SEQUENCE_FILES):
        rows, privacy = _sequence(directory)
    else:
        raise TrajectoriesError(
            f"{directory}: not a model directory (no {SCENARIO_FILE} of `trajectories fit`, nor "
            f"{', '.join(SEQUENCE_FILES)} of `trajectories train`)")
    listed = {row[0] for row in rows}
    rows += [(path.name, "(other file)", f"{path.stat().st_size:,} bytes, not written by "
              "trajectories") for path in sorted(directory.iterdir())
             if path.is_file() and path.name not in listed]
    return pl.DataFrame(rows, schema=["file", "part", "holds"], orient="row"), privacy


def _multi_state(directory: Path) -> tuple[list[tuple[str, str, str]], dict | None]:
    from trajectories.scenario import load_scenario

    scenario = load_scenario(directory / SCENARIO_FILE)
    rows: list[tuple[str, str, str]] = []
    add = rows.append
    add((SCENARIO_FILE, "states", f"{len(scenario.states)}: "
         + ", ".join(s.name for s in scenario.states)))
    for t in scenario.transitions:
        effects = ", ".join(sorted(t.effects)) or "none"
        add((SCENARIO_FILE, f"transition {t.key}",
             f"{t.hazard.family} hazard ({t.clock} clock); log hazard ratios of: {effects}"))
    for name, spec in scenario.covariates.items():
        add((SCENARIO_FILE, f"covariate {name}", _marginal(spec)))
    if scenario.copula is not None:
        k = len(scenario.copula.covariates)
        add((SCENARIO_FILE, "copula", f"{k} x {k} normal-scores correlation of "
             + ", ".join(scenario.copula.covariates)))
    for site in scenario.sites:
        parts = [f"share {site.share:.3f}" if site.share is not None else f"size {site.size}"]
        if site.hazard_ratios:
            parts.append(f"{len(site.hazard_ratios)} hazard ratios")
        if site.covariates:
            parts.append("own marginals of " + ", ".join(site.covariates))
        if site.index_dates is not None:
            parts.append(f"{len(site.index_dates.quantiles)} index-date quantiles")
        if site.censoring is not None:
            parts.append(f"{len(site.censoring.levels)} censoring-time quantiles")
        add((SCENARIO_FILE, f"site {site.name}", "; ".join(parts)))
    if scenario.calendar.index_dates is not None:
        add((SCENARIO_FILE, "index dates",
             f"{len(scenario.calendar.index_dates.quantiles)} quantiles (all sites)"))
    if scenario.followup.censoring is not None:
        add((SCENARIO_FILE, "censoring",
             f"{len(scenario.followup.censoring.levels)} quantiles (all sites)"))
    for kind, entries in (("visit", scenario.visits), ("measurement", scenario.measurements),
                          ("drug", scenario.drugs)):
        if entries:
            add((SCENARIO_FILE, f"{kind}s", f"{len(entries)} processes: "
                 + ", ".join(getattr(e, "type", None) or e.name for e in entries)))
    if scenario.baseline is not None:
        table = scenario.baseline.table()
        add((Path(scenario.baseline.rows).name, "baseline rows",
             f"{table.height:,} REAL PERSONS' covariate rows ({', '.join(table.columns)}), "
             "copied into every synthetic cohort (covariate_draw='resample')"))
    privacy = None
    if (directory / FIT_FILE).is_file():
        summary = json.loads((directory / FIT_FILE).read_text(encoding="utf-8"))
        reference = summary.get("reference", {})
        add((FIT_FILE, "reference", f"{reference.get('n_persons')} persons fitted on; "
             f"fingerprint {str(reference.get('fingerprint'))[:12]}...; split "
             f"{reference.get('split')}"))
        add((FIT_FILE, "estimates", f"{len(summary.get('transitions', []))} transitions with "
             "estimates, standard errors and every candidate's AIC"))
        add((FIT_FILE, "notes", f"{len(summary.get('notes', []))} notes"))
        privacy = summary.get("privacy")
    return rows, privacy


def _marginal(spec: Any) -> str:
    kind = spec.kind
    if kind == "categorical":
        return f"categorical: {len(spec.levels)} level shares"
    if kind == "discrete":
        return f"discrete: {len(spec.values)} value shares ({', '.join(map(str, spec.values))})"
    if kind == "quantiles":
        return (f"quantiles: {len(spec.quantiles)} knots from {spec.quantiles[0]:.4g} to "
                f"{spec.quantiles[-1]:.4g}" + (", whole numbers" if spec.integer else ""))
    if kind == "normal":
        return f"normal: mean {spec.mean:.4g}, sd {spec.sd:.4g} on [{spec.min:.4g}, {spec.max:.4g}]"
    return f"uniform on [{spec.low:.4g}, {spec.high:.4g}]"


def _sequence(directory: Path) -> tuple[list[tuple[str, str, str]], dict | None]:
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    vocabulary = json.loads((directory / "vocabulary.json").read_text(encoding="utf-8"))
    size = (directory / "weights.pt").stat().st_size
    rows = [("weights.pt", "network", f"{size:,} bytes of network weights (state dict)"),
            ("config.json", "configuration", "architecture, training settings and record: "
             + ", ".join(sorted(config)))]
    for key, value in sorted(vocabulary.items()):
        held = f"{len(value)} entries" if isinstance(value, list | dict) else str(value)
        rows.append(("vocabulary.json", key, held))
    return rows, config.get("privacy")
