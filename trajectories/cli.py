"""The `trajectories` command line: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from trajectories import progress
from trajectories.errors import TrajectoriesError

app = typer.Typer(
    help="Synthetic longitudinal patient cohorts: simulate, describe, validate, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def print_frame(frame: pl.DataFrame, title: str) -> None:
    """Print a small polars frame as a rich table."""
    table = Table(title=title, title_justify="left")
    for name in frame.columns:
        table.add_column(name, justify="right" if frame.schema[name].is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*(_cell(v) for v in row))
    out.print(table)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@app.command("scenarios")
def list_scenarios() -> None:
    """List the built-in scenarios with a one-line description."""
    from scenarios import available

    table = Table(title="Built-in scenarios", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for name, description in available().items():
        table.add_row(name, description)
    out.print(table)


@app.command()
def simulate(
    scenario: Annotated[str, typer.Argument(help="A built-in scenario name or a TOML file path.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Cohort directory to write.")],
    n: Annotated[
        int | None, typer.Option(help="Number of persons (default: the sum of site sizes).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the cohort files of a non-empty --out directory.")
    ] = False,
    block_size: Annotated[
        int, typer.Option(help="Persons per independently seeded block (part of the output's "
                          "identity: keep the default to reproduce others' runs).")
    ] = 100_000,
) -> None:
    """Simulate a cohort from SCENARIO and write persons, events and manifest to --out."""
    from trajectories.simulate import MarkovSimulator

    simulator = MarkovSimulator(scenario, block_size=block_size)
    directory = simulator.simulate_to(out_dir, n=n, seed=seed, overwrite=overwrite)
    out.print(f"wrote cohort of scenario [bold]{simulator.scenario.name}[/] to {directory}")


@app.command()
def describe(
    cohort_dir: Annotated[Path, typer.Argument(help="A cohort directory.")],
) -> None:
    """Summarise a cohort: persons per site, events per code, follow-up, states, exits."""
    from trajectories.cohort import Cohort
    from trajectories.summary import summarize

    cohort = Cohort.read(cohort_dir)
    manifest = cohort.manifest
    out.print(
        f"[bold]{cohort_dir}[/]: {cohort.n_persons:,} persons, {cohort.events.height:,} events; "
        f"generator {manifest.generator}, scenario {manifest.scenario_name}, seed {manifest.seed}"
    )
    summary = summarize(cohort)
    print_frame(summary.sites, "Persons per site")
    print_frame(summary.followup, "Follow-up (years)")
    print_frame(summary.states, "States entered")
    print_frame(summary.exits, "How follow-up ended")
    print_frame(summary.codes, "Events per code")


def main() -> None:
    """Entry point: run the CLI; user errors print one clear message and exit 2."""
    progress.enable(sys.stderr.isatty())
    try:
        app()
    except TrajectoriesError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
