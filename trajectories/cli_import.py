"""`trajectories import`: real data (tables, counting-process rows, mstate, OMOP, MEDS) in as a
cohort. Parses, calls the loaders, prints what was imported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from trajectories.cli_output import out
from trajectories.cohort import STATE_PREFIX
from trajectories.errors import TrajectoriesError

import_app = typer.Typer(help="Import real data (tables, mstate, OMOP, MEDS) as a cohort.",
                         no_args_is_help=True)


@import_app.command("omop")
def import_omop(
    source: Annotated[str, typer.Argument(help="A DuckDB file, a Parquet folder or a "
                                          "PostgreSQL URL holding OMOP CDM v5.4 tables.")],
    mapping: Annotated[Path, typer.Option(help="TOML mapping of concepts to states, visits, "
                                          "measurements, drugs (examples/mappings/).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Cohort directory to write.")],
    schema: Annotated[
        str | None, typer.Option(help="CDM schema (DuckDB: main; PostgreSQL: public).")
    ] = None,
    resolution: Annotated[
        str, typer.Option(help="'day' (dates) or 'datetime' (timestamps) for event times.")
    ] = "day",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Read an OMOP database into a cohort; unmapped and dropped rows are counted."""
    from trajectories.io.omop.read import from_omop

    cohort = from_omop(source, mapping, schema=schema, resolution=resolution)
    cohort.write(out_dir, overwrite=overwrite)
    counts = getattr(cohort.manifest, "omop_import", {}) or {}
    out.print(f"imported {cohort.n_persons:,} persons, {cohort.events.height:,} events to "
              f"{out_dir}")
    for key, value in counts.items():
        if isinstance(value, int | float) and value:
            out.print(f"  {key}: {value:,}")


@import_app.command("meds")
def import_meds(
    directory: Annotated[Path, typer.Argument(help="A MEDS v0.4 dataset directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Cohort directory to write.")],
    state_prefix: Annotated[
        str, typer.Option(help="Codes starting with this are states.")
    ] = STATE_PREFIX,
    index_code: Annotated[
        str | None, typer.Option(help="Code whose first row is time zero (default: the "
                                 "first timed row).")
    ] = None,
    initial_state: Annotated[
        str | None, typer.Option(help="State given at time zero to persons without one.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Read a MEDS dataset into a cohort."""
    from trajectories.io.meds import from_meds

    cohort = from_meds(directory, state_prefix=state_prefix, index_code=index_code,
                       initial_state=initial_state)
    cohort.write(out_dir, overwrite=overwrite)
    out.print(f"imported {cohort.n_persons:,} persons, {cohort.events.height:,} events to "
              f"{out_dir}")


# Options shared by `import table` and `import mstate`: who the persons are and what is kept.
SiteOption = Annotated[str | None, typer.Option("--site", help="Column naming each person's "
                                                "site (hospital, centre).")]
SexOption = Annotated[str | None, typer.Option("--sex", help="Column of sex (F/M, "
                                               "female/male, or codes with --sex-codes).")]
SexCodesOption = Annotated[str | None, typer.Option(help="Sex codes, e.g. 1=M,2=F.")]
AgeOption = Annotated[str | None, typer.Option("--age", help="Column of age at index in "
                                               "years (also sets birth dates).")]
CovariatesOption = Annotated[
    str | None, typer.Option(help="Covariate columns separated by commas (default: every "
                             "column not used otherwise; '' for none).")
]
IndexDateOption = Annotated[str, typer.Option(help="Index date of every person (YYYY-MM-DD): "
                                              "the tables hold times, not dates.")]
TimeUnitOption = Annotated[str, typer.Option(help="Unit of the times: days, weeks, months "
                                             "or years.")]
DeathOption = Annotated[
    str | None, typer.Option("--death", help="States that mean death, separated by commas "
                             "(default: the states named like death/dead/died).")
]
DelayedEntryOption = Annotated[
    str, typer.Option(help="A person whose first row starts after 0: 'error', or 'shift' "
                      "(measure their times from it).")
]
MeasurementsOption = Annotated[
    Path | None, typer.Option(help="A long table of repeated measurements (CSV/Parquet) "
                              "merged as measurement: events.")
]
MeasurementColumnsOption = Annotated[
    str, typer.Option(help="Its columns as ROLE=COLUMN for the roles id, time, name, value "
                      "and unit (unit optional), e.g. id=id,time=day,name=test,value=result.")
]
MeasurementTimeUnitOption = Annotated[
    str | None, typer.Option(help="Unit of the measurement times (default: --time-unit).")
]


def _measurement_columns(text: str) -> dict[str, str]:
    from trajectories.io.table.files import parse_codes

    roles = {"id": "id", "time": "time", "name": "name", "value": "value"}
    given = parse_codes(text, "--measurement-columns") or {}
    unknown = sorted(set(given) - {*roles, "unit"})
    if unknown:
        raise TrajectoriesError(f"--measurement-columns: unknown role(s) {unknown}; expected "
                                "id, time, name, value, unit")
    return {**roles, **given}


def _write_import(cohort, out_dir: Path, overwrite: bool, measurements: Path | None,
                  measurement_columns: str, time_unit: str) -> None:
    """Merge the measurements (if any), write the cohort and say what was imported."""
    from trajectories.io.table import add_measurements
    from trajectories.io.table.files import read_table

    if measurements is not None:
        columns = _measurement_columns(measurement_columns)
        frame = read_table(measurements)
        cohort = add_measurements(
            cohort, frame, id_col=columns["id"], time_col=columns["time"],
            name_col=columns["name"], value_col=columns["value"],
            unit_col=columns.get("unit", "unit" if "unit" in frame.columns else None),
            time_unit=time_unit, source=str(measurements))
    cohort.write(out_dir, overwrite=overwrite)
    manifest = cohort.manifest
    out.print(f"imported {cohort.n_persons:,} persons, {cohort.events.height:,} events to "
              f"{out_dir}")
    out.print(f"  states: {', '.join(getattr(manifest, 'states', []) or [])}", highlight=False)
    for state, most in (getattr(manifest, "episodes", None) or {}).items():
        out.print(f"  recurrent: {state!r} entered up to {most} times in a row; the k-th entry "
                  f"is state '{state}_k'", highlight=False)
    for what, mapping in (getattr(manifest, "name_mapping", None) or {}).items():
        shown = ", ".join(f"{k!r} -> {v!r}" for k, v in list(mapping.items())[:8])
        more = f" and {len(mapping) - 8} more" if len(mapping) > 8 else ""
        out.print(escape(f"  renamed {what} (kept in manifest.json): {shown}{more}"),
                  highlight=False)
    for name, info in (getattr(manifest, "measurements", None) or {}).items():
        unit = f" [{info['unit']}]" if info.get("unit") else ""
        out.print(escape(f"  measurement {name}{unit}: {info['rows']:,} rows"), highlight=False)


def _loading(path: Path, load):
    """Run a loader, naming the file in any error it raises."""
    from trajectories.errors import ReferenceDataError

    try:
        return load()
    except ReferenceDataError as error:
        raise ReferenceDataError(f"{path}: {error}") from None


@import_app.command("table")
def import_table(
    file: Annotated[Path, typer.Argument(help="A CSV, TSV or Parquet file.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Cohort directory to write.")],
    time: Annotated[str, typer.Option("--time", help="Column of the follow-up time (the "
                                      "interval's end with --start).")],
    status: Annotated[str, typer.Option("--status", help="Column of the status at that "
                                        "time: 0/1, or codes with --status-codes.")],
    id_col: Annotated[str | None, typer.Option("--id", help="Column of person ids (integers; "
                                               "default 1..n in row order).")] = None,
    start: Annotated[
        str | None, typer.Option(help="Column of the interval's start: rows (start, time] "
                                 "per person, as Surv(start, stop, status): recurrent events "
                                 "and several rows per person.")
    ] = None,
    status_codes: Annotated[
        str | None, typer.Option(help="What each status code means: 'censored' or a state "
                                 "name, e.g. 0=censored,1=relapse,2=death (competing risks).")
    ] = None,
    death: DeathOption = None,
    initial_state: Annotated[str | None, typer.Option(
        help="State every person starts in (default: alive, or at_risk with --start).")] = None,
    event_state: Annotated[str | None, typer.Option(
        help="State a 0/1 status of 1 enters (default: death, or event with --start).")] = None,
    time_unit: TimeUnitOption = "days",
    site: SiteOption = None,
    sex: SexOption = None,
    sex_codes: SexCodesOption = None,
    age: AgeOption = None,
    covariates: CovariatesOption = None,
    index_date: IndexDateOption = "2000-01-01",
    delayed_entry: DelayedEntryOption = "error",
    measurements: MeasurementsOption = None,
    measurement_columns: MeasurementColumnsOption = "id=id,time=time,name=name,value=value",
    measurement_time_unit: MeasurementTimeUnitOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Read a table of persons (one row each, competing risks included) or of intervals
    (--start: counting-process rows, recurrent events) into a cohort. Nothing is written
    when a row is at fault: the message names the file, column and first rows."""
    from trajectories.io import from_counting_process, from_survival_table
    from trajectories.io.table.files import parse_codes, parse_list, read_table
    from trajectories.io.table.files import sex_codes as typed_sex_codes

    frame = read_table(file)
    codes = parse_codes(status_codes, "--status-codes")
    common = dict(
        status_codes=codes, death_states=parse_list(death), covariates=parse_list(covariates),
        time_unit=time_unit, site_col=site, sex_col=sex,
        sex_map=typed_sex_codes(parse_codes(sex_codes, "--sex-codes"), frame, sex),
        age_col=age, index_date=index_date,
    )
    states = {k: v for k, v in (("initial_state", initial_state),
                                ("event_state", event_state)) if v is not None}
    if start is not None:
        if id_col is None:
            raise TrajectoriesError("import table: --start needs --id (the rows of one person "
                                    "share an id)")
        cohort = _loading(file, lambda: from_counting_process(
            frame, id_col, start, time, status, delayed_entry=delayed_entry, **states,
            **common))
    else:
        cohort = _loading(file, lambda: from_survival_table(
            frame, time, status, id_col=id_col, **states, **common))
    _write_import(cohort, out_dir, overwrite, measurements, measurement_columns,
                  measurement_time_unit or time_unit)


@import_app.command("mstate")
def import_mstate(
    file: Annotated[Path, typer.Argument(help="A CSV, TSV or Parquet file in R mstate's long "
                                         "format (msprep's output).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Cohort directory to write.")],
    id_col: Annotated[str, typer.Option("--id", help="Column of person ids.")] = "id",
    from_col: Annotated[str, typer.Option("--from", help="Column of the state left.")] = "from",
    to_col: Annotated[str, typer.Option("--to", help="Column of the state entered.")] = "to",
    tstart: Annotated[str, typer.Option(help="Column of the block's start.")] = "Tstart",
    tstop: Annotated[str, typer.Option(help="Column of the block's end.")] = "Tstop",
    status: Annotated[str, typer.Option(help="Column of the 0/1 transition flag.")] = "status",
    state_names: Annotated[
        str | None, typer.Option(help="Names of states 1, 2, ... separated by commas (as the "
                                 "rows of mstate's transition matrix).")
    ] = None,
    death: DeathOption = None,
    time_unit: TimeUnitOption = "days",
    site: SiteOption = None,
    sex: SexOption = None,
    sex_codes: SexCodesOption = None,
    age: AgeOption = None,
    covariates: CovariatesOption = None,
    index_date: IndexDateOption = "2000-01-01",
    delayed_entry: DelayedEntryOption = "error",
    measurements: MeasurementsOption = None,
    measurement_columns: MeasurementColumnsOption = "id=id,time=time,name=name,value=value",
    measurement_time_unit: MeasurementTimeUnitOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Read R mstate's long format into a cohort; a transition from a state to itself is a
    recurrent event (the k-th entry in a row becomes state '<state>_k')."""
    from trajectories.io import from_mstate
    from trajectories.io.table.files import parse_codes, parse_list, read_table
    from trajectories.io.table.files import sex_codes as typed_sex_codes

    frame = read_table(file)
    cohort = _loading(file, lambda: from_mstate(
        frame, id_col=id_col, from_col=from_col, to_col=to_col, tstart_col=tstart,
        tstop_col=tstop, status_col=status, state_names=parse_list(state_names),
        death_states=parse_list(death), covariates=parse_list(covariates),
        time_unit=time_unit, delayed_entry=delayed_entry, site_col=site, sex_col=sex,
        sex_map=typed_sex_codes(parse_codes(sex_codes, "--sex-codes"), frame, sex),
        age_col=age, index_date=index_date))
    _write_import(cohort, out_dir, overwrite, measurements, measurement_columns,
                  measurement_time_unit or time_unit)
