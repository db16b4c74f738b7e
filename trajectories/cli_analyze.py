"""`trajectories analyze`: an estimate with an honest interval from synthetic replicates (or a
real cohort, or a real cohort augmented by a synthetic one). Parses, calls
:mod:`trajectories.inference`, prints."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from trajectories.cli_output import cell, out
from trajectories.errors import TrajectoriesError


def analyze(
    directory: Annotated[Path, typer.Argument(
        help="A cohort directory, or a folder of replicate-* cohorts (trajectories simulate "
        "--model M --replicates m); with --augment, the real cohort.")],
    hazard_ratio: Annotated[str | None, typer.Option(
        "--hazard-ratio", metavar="COVARIATE[=LEVEL]",
        help="Cox hazard ratio of LEVEL against the covariate's first other level (sort "
        "order), or per unit of a numeric covariate; combined on the log scale.")] = None,
    landmark: Annotated[float | None, typer.Option(
        metavar="DAYS", help="Kaplan-Meier survival at DAYS (combined on the log(-log) "
        "scale, Greenwood variance).")] = None,
    rmst: Annotated[float | None, typer.Option(
        metavar="DAYS", help="Restricted mean survival time to DAYS, in days.")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="Endpoint name (default: the first default endpoint without competing events, "
        "e.g. overall_survival).")] = None,
    rule: Annotated[str, typer.Option(
        help="auto (from the manifests: draws none -> simple, asymptotic/bootstrap -> "
        "proper; real cohort -> real), simple, proper, partially_synthetic or "
        "fully_synthetic (guarded: refused when its variance is not positive).")] = "auto",
    augment: Annotated[Path | None, typer.Option(
        metavar="SYNTHETIC", help="A synthetic cohort that powers the real cohort DIRECTORY "
        "(PPI++: valid whatever its hazards, if its covariate mix is the real one's).")] = None,
    match_on: Annotated[str | None, typer.Option(
        help="With --augment: covariates whose cells predict each person's influence, "
        "separated by commas (default: every covariate both cohorts share).")] = None,
    alpha: Annotated[float, typer.Option(help="1 - confidence level.")] = 0.05,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object: estimate, ci, naive_ci, m, rule, df, "
        "analysis.")] = False,
) -> None:
    """Estimate a hazard ratio, a landmark survival or an RMST with an interval that accounts
    for the synthesis: each replicate is analysed and the results combined (Raab, Nowok &
    Dibben 2016; Reiter 2003); the naive interval, which takes synthetic persons for real
    ones, is printed beside it."""
    from trajectories import inference
    from trajectories.io.table.files import parse_list

    given = [x for x in (hazard_ratio, landmark, rmst) if x is not None]
    if len(given) != 1:
        raise TrajectoriesError("analyze: give exactly one of --hazard-ratio COVARIATE[=LEVEL], "
                                "--landmark DAYS or --rmst DAYS")
    if hazard_ratio is not None:
        analysis = inference.HazardRatio.parse(hazard_ratio, endpoint)
    elif landmark is not None:
        analysis = inference.Landmark(days=landmark, endpoint=endpoint)
    else:
        analysis = inference.Rmst(days=float(rmst or 0), endpoint=endpoint)
    if augment is not None:
        if rule != "auto":
            raise TrajectoriesError("analyze: --rule applies to replicates; --augment uses "
                                    "PPI++")
        result = inference.augment(directory, augment, analysis, match_on=parse_list(match_on),
                         alpha=alpha)
        if json_output:
            _print_json(result.as_json())
            return
        _print_augmented(result)
        return
    if match_on is not None:
        raise TrajectoriesError("analyze: --match-on needs --augment SYNTHETIC")
    combined = inference.analyze(directory, analysis, rule=rule, alpha=alpha)
    if json_output:
        _print_json(combined.as_json())
        return
    level = f"{100 * (1 - alpha):g}%"
    table = Table(title=combined.analysis, title_justify="left")
    for name in ("estimate", f"{level} CI", "df", f"naive {level} CI", "m", "rule"):
        table.add_column(name, justify="left" if name == "rule" else "right")
    table.add_row(_value(combined.estimate), _interval(combined.ci), _df(combined.df),
                  _interval(combined.naive_ci), str(combined.m), combined.rule)
    out.print(table)
    if combined.rule == "real":
        out.print("a real cohort (no 'replicate' key): its own interval", highlight=False)
    else:
        out.print(f"{combined.m} replicate(s) of {combined.n_synthetic:,.0f} persons from a "
                  f"model of {combined.n_reference:,} real persons (draws "
                  f"{combined.draws}); the naive interval takes the synthetic persons for real "
                  "ones", highlight=False)


def _print_augmented(result) -> None:
    level = f"{100 * (1 - result.alpha):g}%"
    table = Table(title=result.analysis, title_justify="left")
    for name in ("", "estimate", f"{level} CI"):
        table.add_column(name, justify="left" if not name else "right")
    table.add_row("PPI++ (real, powered by synthetic)", _value(result.estimate),
                  _interval(result.ci))
    table.add_row("real only", _value(result.real_estimate), _interval(result.real_ci))
    table.add_row("naive (real and synthetic pooled)", "", _interval(result.naive_ci))
    out.print(table)
    out.print(f"{result.n_real:,} real and {result.n_synthetic:,} synthetic persons; lambda "
              f"{result.lam:.3f}; {result.cells} covariate cell(s) from "
              f"{', '.join(result.match_on) or 'none'}; covariate-mix shift z "
              f"{result.shift_z:.2f}", highlight=False)
    if math.isfinite(result.shift_z) and abs(result.shift_z) > 3:
        out.print("[bold red]warning:[/] the synthetic covariate mix departs from the real "
                  "one (|z| > 3): the PPI++ interval assumes they match", highlight=False)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)


def _print_json(data: dict) -> None:
    out.print(json.dumps(data), markup=False, highlight=False, soft_wrap=True)


def _value(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _interval(bounds: tuple[float, float]) -> str:
    return f"{_value(bounds[0])} to {_value(bounds[1])}"


def _df(df: float) -> str:
    return "inf (normal)" if math.isinf(df) else cell(float(df))
