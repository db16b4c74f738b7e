"""Cox proportional hazards regression (Cox 1972; Efron 1977 ties) through lifelines'
CoxPHFitter, with the design matrix built from polars columns."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from trajectories.errors import CoxConvergenceError, SurvivalDataError
from validation.survival_data import survival_rows, z_critical

__all__ = ["COX_MAX_ROWS", "CoxConvergenceError", "cox_hazard_ratios", "design_matrix"]

COX_MAX_ROWS = 200_000
"""Above this many rows Cox models are fitted on a seeded random subsample of this size.

lifelines' Efron fit loops in Python over distinct event times: 200,000 rows with continuous
times take 9-15 s on 2 (shared) cores, 1,000,000 take ~80 s (measured, lifelines 0.30). The
subsample keeps a 1M-person cohort at the 200k cost; its standard errors are those of 200k.
"""


def design_matrix(
    frame: pl.DataFrame,
    covariates: Sequence[str],
    reference_levels: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Numeric design columns for a regression on ``covariates`` of ``frame``.

    Numbers and booleans are kept (as floats); other types are one-hot encoded as
    ``name[level]`` without the reference level (sorted first, unless ``reference_levels``
    names it). Raises :class:`SurvivalDataError` for a missing, null or constant covariate.
    """
    reference_levels = reference_levels or {}
    columns = []
    for name in covariates:
        if name not in frame.columns:
            raise SurvivalDataError(f"covariate {name!r}: no such column; have {frame.columns}")
        column = frame.get_column(name)
        if column.null_count():
            raise SurvivalDataError(
                f"covariate {name!r}: {column.null_count()} null value(s); none allowed"
            )
        if column.n_unique() < 2:
            raise SurvivalDataError(
                f"covariate {name!r} is constant ({column[0]!r} for every row); "
                "its hazard ratio cannot be estimated, leave it out"
            )
        if column.dtype.is_numeric() or column.dtype == pl.Boolean:
            columns.append(column.cast(pl.Float64))
            continue
        text = column.cast(pl.String)
        levels = sorted(text.unique().to_list())
        reference = reference_levels.get(name, levels[0])
        if reference not in levels:
            raise SurvivalDataError(
                f"covariate {name!r}: reference level {reference!r} not among {levels}"
            )
        columns += [
            (text == level).cast(pl.Float64).alias(f"{name}[{level}]")
            for level in levels
            if level != reference
        ]
    return pl.DataFrame(columns)


def cox_hazard_ratios(
    frame: pl.DataFrame,
    duration_col: str,
    event_col: str,
    covariates: Sequence[str],
    *,
    alpha: float = 0.05,
    reference_levels: Mapping[str, str] | None = None,
    max_rows: int = COX_MAX_ROWS,
    seed: int = 0,
) -> pl.DataFrame:
    """Cox proportional hazards fit (lifelines CoxPHFitter, Efron ties) of the covariates.

    ``event_col`` == 1 is the event; 0 and any other code (2 = competing event) count as
    censored, which gives cause-specific hazard ratios. String/categorical covariates are
    one-hot encoded without the reference level (sorted first, or ``reference_levels``),
    named like ``arm[treatment]``. Frames larger than ``max_rows`` are fitted on a random
    subsample of ``max_rows`` rows drawn with ``seed`` (see :data:`COX_MAX_ROWS`).
    Columns: covariate, log_hr, std_error, lower, upper (1 - alpha bounds of the hazard
    ratio), hazard_ratio, p.
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    z = z_critical(alpha)
    for name in (duration_col, event_col):
        if name not in frame.columns:
            raise SurvivalDataError(f"column {name!r} missing; have {frame.columns}")
    if frame.height > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(frame.height, max_rows, replace=False))
        frame = frame[rows]
    checked = survival_rows(frame.get_column(duration_col), frame.get_column(event_col), "codes")
    design = design_matrix(frame, covariates, reference_levels)
    data = design.with_columns(
        checked.get_column("time").alias("_duration"),
        (checked.get_column("event") == 1).cast(pl.Int64).alias("_event"),
    ).to_pandas()
    try:
        with warnings.catch_warnings():  # separation is judged below from the estimates
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted = CoxPHFitter(alpha=alpha).fit(data, "_duration", "_event")
    except (ConvergenceError, np.linalg.LinAlgError, ArithmeticError) as error:
        raise CoxConvergenceError(
            f"Cox model on {list(covariates)} did not converge (collinear covariates, a "
            "level without events, or a covariate that separates events perfectly?): "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None
    log_hr = fitted.params_.to_numpy()
    se = fitted.standard_errors_.to_numpy()
    if not (np.all(np.isfinite(log_hr)) and np.all(np.isfinite(se))):
        raise CoxConvergenceError(
            f"Cox model on {list(covariates)} did not converge: non-finite log hazard ratios "
            "or standard errors")
    with np.errstate(over="ignore"):  # a wide interval's upper end may be inf
        lower, upper, ratio = (np.exp(log_hr - z * se), np.exp(log_hr + z * se),
                               np.exp(log_hr))
    return pl.DataFrame(
        {
            "covariate": list(design.columns),
            "log_hr": log_hr,
            "std_error": se,
            "lower": lower,
            "upper": upper,
            "hazard_ratio": ratio,
            "p": fitted.summary["p"].to_numpy(),
        }
    )

