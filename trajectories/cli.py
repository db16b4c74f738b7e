"""The `trajectories` command line: parses, calls the library, prints. No logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.markup import escape
from rich.table import Table

from trajectories import progress
from trajectories.cli_analyze import analyze
from trajectories.cli_import import import_app
from trajectories.cli_output import err, out, print_frame
from trajectories.errors import TrajectoriesError

app = typer.Typer(
    help="Synthetic longitudinal patient cohorts: simulate, describe, validate, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


WorkersOption = Annotated[
    str, typer.Option(help="Worker processes over the blocks of a partitioned cohort: a "
                      "number or 'auto'.")
]
ExecutorOption = Annotated[
    str, typer.Option(help="Where blocks run: 'local' (process pool) or 'dask'.")
]
SchedulerOption = Annotated[
    str | None, typer.Option(help="Dask scheduler address (default: a LocalCluster).")
]


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Option("--out", help="Cohort directory to write.")],
    scenario: Annotated[
        str | None, typer.Argument(help="A built-in scenario name or a TOML file path.")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="A model directory written by `trajectories fit` "
                                  "(instead of SCENARIO).")
    ] = None,
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
    shards: Annotated[
        str | None, typer.Option(help="'auto': write a partitioned cohort, one Parquet file "
                                 "per block (resumable; needed for --workers / --executor).")
    ] = None,
    workers: WorkersOption = "1",
    executor: ExecutorOption = "local",
    scheduler: SchedulerOption = None,
    replicates: Annotated[
        int | None, typer.Option(help="With --model: write this many cohorts "
                                 "--out/replicate-1 ..., each from its own parameter draw "
                                 "(for `trajectories analyze`).")
    ] = None,
    draws: Annotated[
        str | None, typer.Option(help="With --model: how each replicate's parameters are "
                                 "drawn: asymptotic (normal law of the estimates; the default "
                                 "with --replicates), bootstrap (refit on a person bootstrap "
                                 "of --reference) or none.")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="The reference cohort the model was fitted to, for "
                                  "--draws bootstrap.")
    ] = None,
) -> None:
    """Simulate a cohort from SCENARIO (or a fitted --model) and write it to --out.

    With --shards auto the cohort is written as one file per block, spread over --workers on
    a local process pool or a Dask cluster; the files are identical whatever the workers, and
    running the same command again after an interruption redoes only the missing blocks."""
    from trajectories.fit.model import SCENARIO_FILE, saved_provenance
    from trajectories.simulate import MarkovSimulator

    if (scenario is None) == (model is None):
        raise TrajectoriesError("simulate: give a SCENARIO or --model MODEL_DIR, not both")
    source = str(model / SCENARIO_FILE) if model is not None else scenario
    if model is not None and not (model / SCENARIO_FILE).is_file():
        raise TrajectoriesError(f"{model}: not a model directory ({SCENARIO_FILE} missing)")
    if replicates is not None or draws is not None:
        _simulate_replicates(model, out_dir, replicates, draws, reference, n, seed, overwrite,
                             block_size, sharded=shards is not None or workers != "1")
        return
    provenance = saved_provenance(model) if model is not None else {}
    simulator = MarkovSimulator(source, block_size=block_size, provenance=provenance)
    sharded = shards is not None or workers != "1" or executor != "local" or scheduler
    if shards not in (None, "auto"):
        raise TrajectoriesError(f"simulate: --shards takes 'auto' (one file per block), got "
                                f"{shards!r}; choose the block size with --block-size")
    if sharded:
        from trajectories.simulate.sharded import simulate_sharded

        directory = simulate_sharded(simulator, out_dir, n=n, seed=seed,
                                     parallel=_parallel(executor, workers, scheduler),
                                     overwrite=overwrite)
    else:
        directory = simulator.simulate_to(out_dir, n=n, seed=seed, overwrite=overwrite)
    out.print(f"wrote cohort of scenario [bold]{simulator.scenario.name}[/] to {directory}")


def _simulate_replicates(model: Path | None, out_dir: Path, replicates: int | None,
                         draws: str | None, reference: Path | None, n: int | None, seed: int,
                         overwrite: bool, block_size: int, sharded: bool) -> None:
    from trajectories.cohort import Cohort
    from trajectories.fit.replicates import simulate_replicates

    if model is None:
        raise TrajectoriesError("simulate: --replicates and --draws need --model (a model "
                                "written by `trajectories fit`, with its estimates' "
                                "covariances)")
    if sharded:
        raise TrajectoriesError("simulate: --replicates writes single-file cohorts; leave out "
                                "--shards and --workers")
    written = simulate_replicates(
        model, out_dir, m=replicates or 1, draws=draws or "asymptotic", n=n, seed=seed,
        reference=None if reference is None else Cohort.read(reference), overwrite=overwrite,
        block_size=block_size)
    out.print(f"wrote {len(written)} replicate(s) ({draws or 'asymptotic'} draws) to {out_dir}")


def _parallel(executor: str, workers: str, scheduler: str | None):
    """The one Parallel value of --executor, --workers and --scheduler."""
    from trajectories.parallel import Parallel

    count = workers if workers == "auto" else _positive_int(workers, "--workers")
    return Parallel(executor, count, scheduler)


def _positive_int(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise TrajectoriesError(f"{option} must be a positive number or 'auto', got {text!r}")
    return value


@app.command()
def fit(
    reference: Annotated[str, typer.Argument(help="A cohort directory, or a built-in reference "
                                             "dataset: stanford_heart, gbsg2.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    families: Annotated[
        str, typer.Option(help="auto (AIC), or family names separated by commas "
                          "(exponential, weibull, gompertz, lognormal, loglogistic, piecewise, "
                          "cox).")
    ] = "auto",
    clock: Annotated[str, typer.Option(help="auto (AIC), forward or reset.")] = "auto",
    covariates: Annotated[
        str | None, typer.Option(help="Covariates to use, separated by commas (default: all).")
    ] = None,
    site_effects: Annotated[str, typer.Option(help="fixed, shrunk or none.")] = "fixed",
    censoring: Annotated[
        str, typer.Option(help="empirical (index-date and reverse Kaplan-Meier censoring "
                          "quantiles per site) or parametric (uniform enrolment window, data "
                          "cut-off and constant loss to follow-up).")
    ] = "empirical",
    covariate_draw: Annotated[
        str, typer.Option(help="copula (per-site marginals joined by a Gaussian copula: the "
                          "model holds aggregates only) or resample (whole reference rows: "
                          "copies real persons' covariates into the model and every cohort).")
    ] = "copula",
    holdout_fraction: Annotated[
        float, typer.Option(help="Share of the reference's persons left out of the fit, by a "
                            "hash of their ids; validate then uses them as the privacy "
                            "measures' control (0: fit on all).")
    ] = 0.0,
    holdout_seed: Annotated[int, typer.Option(help="Seed of the --holdout-fraction split.")] = 0,
    epsilon: Annotated[
        float | None, typer.Option(help="Fit with differential privacy at this epsilon: every "
                                   "estimate from noisy releases, the budget and guarantee "
                                   "recorded in fit.json (one person replaced; the number of "
                                   "persons, state, site and covariate names and levels are "
                                   "public). No visits, measurements or drugs.")
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="The delta of --epsilon (default: min(1e-5, "
                                   "n ** -1.1) for n persons).")
    ] = None,
    horizon_days: Annotated[
        float | None, typer.Option(help="With --epsilon: the study's longest follow-up in days, "
                                   "if public (the design's, e.g. 1826 for five years); spares "
                                   "its noisy release, which small cohorts cannot afford.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Fit a multi-state model to a reference cohort; writes an editable scenario.toml."""
    import warnings

    from trajectories.cohort import Cohort
    from trajectories.errors import PrivacyWarning
    from trajectories.fit import MultiStateModel
    from trajectories.fit.model import RESAMPLE_WARNING
    from trajectories.fit.references import REFERENCES, load_reference
    from trajectories.io.table.files import parse_list

    cohort = load_reference(reference) if reference in REFERENCES else Cohort.read(reference)
    chosen = families if families == "auto" or "," not in families else families.split(",")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)  # printed below, in its place
        model = MultiStateModel(
            families=chosen, clock=clock, site_effects=site_effects, censoring=censoring,
            covariates=parse_list(covariates), covariate_draw=covariate_draw,
            holdout_fraction=holdout_fraction, holdout_seed=holdout_seed,
            epsilon=epsilon, delta=delta, horizon_days=horizon_days,
        ).fit(cohort)
    model.save(out_dir, overwrite=overwrite)
    summary = model.summary()
    rows = [{"transition": t["transition"], "family": t["family"], "clock": t["clock"],
             "events": t["n_events"], "aic": t["aic"]} for t in summary["transitions"]]
    print_frame(pl.DataFrame(rows), f"Fitted model written to {out_dir}")
    if "privacy" in summary:
        record = summary["privacy"]
        out.print(f"differential privacy: epsilon {record['epsilon_spent']:.4g} spent of "
                  f"{record['epsilon']:g} (delta {record['delta']:.3g}, "
                  f"{len(record['releases'])} releases, {record['accountant']})",
                  highlight=False)
    for note in summary.get("notes", []):
        if note == RESAMPLE_WARNING:
            out.print(f"[bold red]warning:[/] {note}", highlight=False)
        else:
            out.print(f"note: {note}", highlight=False)


@app.command()
def train(
    reference: Annotated[str, typer.Argument(help="The cohort directory to learn from, or a "
                                             "built-in reference dataset: stanford_heart, "
                                             "gbsg2.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    epochs: Annotated[int, typer.Option(help="Most training epochs (early stopping on the "
                                        "held-out loss may stop sooner; exactly this many "
                                        "with --epsilon).")] = 20,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    architecture: Annotated[str, typer.Option(help="transformer or gru.")] = "transformer",
    seed: Annotated[int, typer.Option(help="Seed of the split, initialisation and batches.")] = 0,
    epsilon: Annotated[
        float | None, typer.Option(help="Train by DP-SGD (opacus) to this epsilon over the "
                                   "planned --epochs, on every person, without early "
                                   "stopping.")
    ] = None,
    delta: Annotated[
        float | None, typer.Option(help="DP delta (default min(1e-5, n ** -1.1)); with "
                                   "--epsilon.")
    ] = None,
    max_grad_norm: Annotated[
        float, typer.Option(help="Gradient clipping norm: per person under --epsilon.")
    ] = 1.0,
    accountant: Annotated[str, typer.Option(help="DP accountant: rdp or prv.")] = "rdp",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Train the torch sequence model on a cohort; writes weights, config and vocabulary."""
    from trajectories.cohort import Cohort
    from trajectories.fit.references import REFERENCES, load_reference
    from trajectories.sequence import SequenceModel

    cohort = load_reference(reference) if reference in REFERENCES else Cohort.read(reference)
    model = SequenceModel(max_epochs=epochs, device=device, architecture=architecture,
                          seed=seed, max_grad_norm=max_grad_norm, epsilon=epsilon, delta=delta,
                          accountant=accountant).fit(cohort)
    model.save(out_dir, overwrite=overwrite)
    history = model.training_.get("history", [])
    checkpoint = f"checkpoint {model.checkpoint_hash()[:12]} written to {out_dir}"
    for note in model.training_.get("small_cells", {}).get("notes", []):
        out.print(f"note: {note}", highlight=False)
    privacy = model.training_.get("privacy")
    if privacy is not None:
        out.print(f"trained {len(history)} epoch(s) by DP-SGD: epsilon {privacy['epsilon']:.3f} "
                  f"(target {privacy['target_epsilon']:g}) at delta {privacy['delta']:.3g}, "
                  f"noise multiplier {privacy['noise_multiplier']:.3f}, {privacy['accountant']} "
                  f"accountant; {checkpoint}", highlight=False)
        return
    best = min((h.get("validation_loss", float("inf")) for h in history), default=float("nan"))
    out.print(f"trained {len(history)} epoch(s), best held-out loss {best:.4f}; {checkpoint}")


@app.command()
def sample(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by `train`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Cohort directory to write.")],
    n: Annotated[int, typer.Option(help="Number of persons to sample.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same cohort.")] = 0,
    condition: Annotated[
        list[str] | None, typer.Option(help="Fix a covariate or site: NAME=VALUE (repeatable), "
                                       "e.g. --condition site=B --condition arm=treatment.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Sample a cohort from a trained sequence model."""
    from trajectories.sequence import SequenceModel

    conditions = {}
    for item in condition or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise TrajectoriesError(f"sample: --condition takes NAME=VALUE, got {item!r}")
        conditions[name] = value
    cohort = SequenceModel.load(model_dir, device=device).sample(n, seed=seed,
                                                                 conditions=conditions or None)
    cohort.write(out_dir, overwrite=overwrite)
    out.print(f"sampled {cohort.n_persons:,} persons, {cohort.events.height:,} events to "
              f"{out_dir}")


@app.command()
def calibrate(
    scenario: Annotated[str, typer.Argument(help="A built-in scenario name or a TOML path.")],
    targets: Annotated[Path, typer.Option(help="Published-figures TOML to reach.")],
    out_file: Annotated[Path, typer.Option("--out", help="Calibrated scenario TOML to write.")],
    n: Annotated[int, typer.Option(help="Persons simulated per evaluation.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed (common random numbers).")] = 0,
) -> None:
    """Adjust hazard levels and effects until the published figures are reached; exit 1 if
    some target stays out of reach (each is listed with the reason)."""
    from trajectories.fit.scenario_file import write_scenario
    from trajectories.scenario import load_scenario
    from validation.calibrate import calibrate as run_calibration
    from validation.published import load_published

    result = run_calibration(load_scenario(scenario), load_published(targets), n=n, seed=seed)
    write_scenario(result.scenario, out_file)
    print_frame(pl.DataFrame([
        {"target": t.label, "published": t.value, "lower": t.lower, "upper": t.upper,
         "estimate": t.estimate, "reached": t.reached, "why not": t.reason}
        for t in result.targets]), f"Calibrated scenario written to {out_file}")
    raise typer.Exit(0 if result.reached else 1)


@app.command()
def describe(
    cohort_dir: Annotated[Path | None, typer.Argument(help="A cohort directory.")] = None,
    model: Annotated[
        Path | None, typer.Option(help="A model directory (of `trajectories fit` or `train`) "
                                  "instead: list exactly what each of its files stores.")
    ] = None,
) -> None:
    """Summarise a cohort: persons per site, events per code, follow-up, states, exits; or,
    with --model, what a model directory stores (and its privacy guarantee, if any).

    A partitioned cohort is read one block at a time, never whole."""
    from trajectories.cohort import Cohort, read_cohort
    from trajectories.summary import summarize

    if (cohort_dir is None) == (model is None):
        raise TrajectoriesError("describe: give a COHORT_DIR or --model MODEL_DIR, not both")
    if model is not None:
        _describe_model(model)
        return
    cohort = read_cohort(cohort_dir)
    manifest = cohort.manifest
    n_events = (cohort.events.height if isinstance(cohort, Cohort)
                else sum(block["n_events"] for block in cohort.blocks))
    out.print(
        f"[bold]{cohort_dir}[/]: {manifest.n_persons:,} persons, {n_events:,} events; "
        f"generator {manifest.generator}, scenario {manifest.scenario_name}, seed {manifest.seed}"
    )
    summary = summarize(cohort)
    print_frame(summary.sites, "Persons per site")
    print_frame(summary.followup, "Follow-up (years)")
    print_frame(summary.states, "States entered")
    print_frame(summary.exits, "How follow-up ended")
    print_frame(summary.codes, "Events per code")
    from trajectories.cohort.files import synthetic_interval_note

    note = synthetic_interval_note(manifest)
    if note:
        out.print(f"note: {note}", highlight=False)


def _describe_model(directory: Path) -> None:
    from trajectories.inventory import model_inventory

    inventory, privacy = model_inventory(directory)
    print_frame(inventory, f"What {directory} stores")
    if privacy:
        out.print_json(data=privacy)
    else:
        out.print("no differential privacy guarantee (fitted without --epsilon)",
                  highlight=False)


export_app = typer.Typer(help="Export a cohort to other formats.", no_args_is_help=True)
app.add_typer(export_app, name="export")


def _exactly_one(command: str, duckdb_file, parquet_dir, postgres) -> None:
    given = [x for x in (duckdb_file, parquet_dir, postgres) if x is not None]
    if len(given) != 1:
        raise TrajectoriesError(
            f"{command}: give exactly one of --duckdb FILE, --parquet DIR or --postgres URL"
        )


@export_app.command("omop")
def export_omop(
    cohort_dir: Annotated[Path, typer.Argument(help="A cohort directory.")],
    duckdb_file: Annotated[
        Path | None, typer.Option("--duckdb", help="Write one embedded DuckDB file.")
    ] = None,
    parquet_dir: Annotated[
        Path | None, typer.Option("--parquet", help="Write one Parquet file per CDM table.")
    ] = None,
    postgres: Annotated[
        str | None, typer.Option("--postgres", help="PostgreSQL URL (postgresql://...); "
                                 "written with COPY in one transaction.")
    ] = None,
    schema: Annotated[
        str, typer.Option(help="PostgreSQL schema for --postgres (created if missing).")
    ] = "public",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "--block-size",
                          help="Persons whose tables are built in memory at once (--block-size: "
                          "its old name, for one release).")
    ] = 50_000,
) -> None:
    """Export a cohort as OMOP CDM v5.4 tables (DuckDB, PostgreSQL or Parquet)."""
    from trajectories.io.omop import write_duckdb, write_parquet, write_postgres
    from trajectories.io.omop.postgres import shown_url

    _exactly_one("export omop", duckdb_file, parquet_dir, postgres)
    cohort = cohort_dir  # the writers stream it from disk one block of persons at a time
    if duckdb_file is not None:
        counts = write_duckdb(cohort, duckdb_file, batch_size=batch_size, overwrite=overwrite)
        target = str(duckdb_file)
    elif parquet_dir is not None:
        counts = write_parquet(cohort, parquet_dir, batch_size=batch_size, overwrite=overwrite)
        target = str(parquet_dir)
    else:
        counts = write_postgres(cohort, postgres, schema, batch_size=batch_size,
                                overwrite=overwrite)
        target = f"{shown_url(postgres)} schema {schema}"
    print_frame(pl.DataFrame({"table": list(counts), "rows": list(counts.values())}),
                f"OMOP CDM v5.4 tables written to {target}")


@export_app.command("meds")
def export_meds(
    cohort_dir: Annotated[Path, typer.Argument(help="A cohort directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="MEDS dataset directory to write.")],
    shard_size: Annotated[int, typer.Option(help="Persons per data shard.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Seed of the train/tuning/held_out split.")] = 0,
    splits: Annotated[
        str, typer.Option(help="train,tuning,held_out fractions summing to 1.")
    ] = "0.8,0.1,0.1",
    end_events: Annotated[
        bool, typer.Option(help="Add a '<code>//END' row where a visit or drug ends.")
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Export a cohort as a MEDS v0.4 dataset (data/, metadata/); a partitioned cohort is
    streamed block by block."""
    from trajectories.cohort import read_cohort
    from trajectories.io.meds import write_meds

    try:
        fractions = tuple(float(x) for x in splits.split(","))
    except ValueError:
        raise TrajectoriesError(
            f"export meds: --splits must be three numbers, got {splits!r}"
        ) from None
    cohort = read_cohort(cohort_dir)
    counts = write_meds(cohort, out_dir, split_fractions=fractions, seed=seed,
                        shard_size=shard_size, end_events=end_events, overwrite=overwrite)
    print_frame(pl.DataFrame({"part": list(counts), "rows": list(counts.values())}),
                f"MEDS dataset written to {out_dir}")


app.add_typer(import_app, name="import")
app.command("analyze")(analyze)


@app.command("check-omop")
def check_omop(
    duckdb_file: Annotated[
        Path | None, typer.Option("--duckdb", help="An OMOP CDM DuckDB database file.")
    ] = None,
    parquet_dir: Annotated[
        Path | None, typer.Option("--parquet", help="A folder of <table>.parquet files.")
    ] = None,
    postgres: Annotated[
        str | None, typer.Option("--postgres", help="A PostgreSQL URL (read-only session).")
    ] = None,
    schema: Annotated[str, typer.Option(help="PostgreSQL schema for --postgres.")] = "public",
    thresholds: Annotated[
        str, typer.Option(help="'strict' (no failing row allowed) or 'dqd' (OHDSI DQD's "
                          "default percentages).")
    ] = "strict",
    show_all: Annotated[bool, typer.Option("--all", help="List passing checks too.")] = False,
) -> None:
    """Run the conformance and data-quality checks on an OMOP database; exit 1 on failures."""
    from trajectories.io.omop import (
        check_omop_duckdb,
        check_omop_parquet,
        check_omop_postgres,
        failures,
    )

    _exactly_one("check-omop", duckdb_file, parquet_dir, postgres)
    if thresholds not in ("strict", "dqd"):
        raise TrajectoriesError(f"check-omop: --thresholds must be strict or dqd, got "
                                f"{thresholds!r}")
    if duckdb_file is not None:
        results = check_omop_duckdb(duckdb_file, thresholds=thresholds)
    elif parquet_dir is not None:
        results = check_omop_parquet(parquet_dir, thresholds=thresholds)
    else:
        results = check_omop_postgres(postgres, schema, thresholds=thresholds)
    failed = failures(results)
    for result in results if show_all else failed:
        out.print(result.describe(), highlight=False)
    out.print(f"{len(results) - len(failed)} checks passed, {len(failed)} failed")
    raise typer.Exit(1 if failed else 0)


@app.command()
def validate(
    synthetic: Annotated[Path, typer.Argument(help="The synthetic cohort directory.")],
    reference: Annotated[
        Path, typer.Option(help="A reference cohort directory, or a published-figures TOML.")
    ],
    report: Annotated[Path, typer.Option(help="Directory for report.json and report.html.")],
    endpoints: Annotated[
        Path | None, typer.Option(help="TOML file with [[endpoints]] (default: overall and "
                                  "event-free survival from the states; without a death "
                                  "state, time out of the initial state and the cumulative "
                                  "incidence of each next state).")
    ] = None,
    thresholds: Annotated[
        Path | None, typer.Option(help="TOML file with a [thresholds] table (see README).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstraps and subsamples.")] = 0,
    resolution: Annotated[
        float | None, typer.Option(help="Round endpoint times and sojourn durations up to "
                                   "multiples of this many days before counting (default: "
                                   "exact, or 1 day for partitioned cohorts over 2,000,000 "
                                   "persons).")
    ] = None,
    workers: WorkersOption = "1",
    executor: ExecutorOption = "local",
    scheduler: SchedulerOption = None,
    holdout: Annotated[
        Path | None, typer.Option(help="A cohort directory of real persons from the reference's "
                                  "population that the generator never saw (not fitted on): "
                                  "the control of the privacy checks (copies beyond chance, "
                                  "distance to closest record, membership inference, "
                                  "singling-out, linkability and inference risks). Default: "
                                  "the holdout part of the reference's split when SYNTHETIC's "
                                  "manifest records one (fit --holdout-fraction), else the "
                                  "privacy section shows copy shares only.")
    ] = None,
) -> None:
    """Compare SYNTHETIC with a reference; exit 0 if every check passes, 1 if any fails.

    A partitioned SYNTHETIC cohort (written with --shards) is read block by block, over
    --workers, and never loaded whole."""
    from trajectories.cohort import Cohort, read_cohort
    from validation import compare, load_thresholds
    from validation.endpoints import load_endpoints
    from validation.published import is_published_figures, load_published
    from validation.thresholds import Thresholds

    reference_data = (
        load_published(reference) if is_published_figures(reference) else Cohort.read(reference)
    )
    synthetic_data = read_cohort(synthetic, check=False)
    result = compare(
        synthetic_data,
        reference_data,
        endpoints=load_endpoints(endpoints) if endpoints else None,
        thresholds=load_thresholds(thresholds) if thresholds else None,
        seed=seed,
        resolution="auto" if resolution is None else resolution,
        parallel=_parallel(executor, workers, scheduler),
        holdout=Cohort.read(holdout) if holdout is not None else None,
    )
    if not is_published_figures(reference):
        from trajectories.inference.analyze import combined_landmarks

        days = (load_thresholds(thresholds) if thresholds else Thresholds()).landmark_days
        result.context |= combined_landmarks(synthetic, list(days))
    report.mkdir(parents=True, exist_ok=True)
    result.write_json(report / "report.json")
    result.write_html(report / "report.html")
    for note in result.notes:
        out.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if "privacy" in result.context:
        out.print(f"privacy: {result.context['privacy']}", markup=False, highlight=False,
                  soft_wrap=True)
    _print_verdicts(result)
    out.print(f"report written to {report / 'report.html'} and {report / 'report.json'}")
    raise typer.Exit(0 if result.passed else 1)


def _print_verdicts(result) -> None:
    counts = result.counts()
    out.print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['info']} shown")
    for check in result.failures:
        where = f" [{check.site}]" if check.site else ""
        out.print(f"  [red]FAIL[/] {check.group}: {check.name} - {check.subject}{where}: "
                  f"metric {check.metric!r}, {check.rule}", highlight=False)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for every demo output.")] = (
        Path("demo-output")
    ),
    n: Annotated[int, typer.Option(help="Synthetic persons to simulate.")] = 20_000,
    reference_n: Annotated[
        int, typer.Option(help="Persons of the independent stand-in reference cohort.")
    ] = 4_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 2026,
    overwrite: Annotated[bool, typer.Option(help="Reuse a non-empty --out directory.")] = False,
) -> None:
    """Run the whole job on the built-in oncology scenario: simulate, validate, export, report."""
    from trajectories.demo import run_demo

    result = run_demo(out_dir, n=n, reference_n=reference_n, seed=seed, overwrite=overwrite)
    out.print(f"synthetic cohort: {result.synthetic}")
    out.print(f"reference cohort (independent simulation standing in for real data): "
              f"{result.reference}")
    counts = result.counts
    out.print(f"validation: {counts['pass']} passed, {counts['fail']} failed, "
              f"{counts['info']} shown -> {result.report_html}")
    out.print(f"OMOP CDM v5.4 DuckDB export: {result.duckdb}")


def main() -> None:
    """Entry point: run the CLI; user errors print one clear message and exit 2."""
    progress.enable(sys.stderr.isatty())
    try:
        app()
    except TrajectoriesError as error:
        err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as error:  # read-only or full disk, a path through a file: the user's to fix
        where = f"{error.filename}: " if error.filename else ""
        err.print(f"[bold red]error:[/] {escape(where + (error.strerror or str(error)))}",
                  highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
