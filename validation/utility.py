"""Endpoint utility: does a model trained on the synthetic cohort work on the real one?

Train on synthetic, test on real (TSTR): a Cox model of the endpoint on the covariates is fitted
on the synthetic cohort and scored by Harrell's concordance on the reference, next to the same
model trained on the reference itself (k-fold cross-validated), so the gap is visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from trajectories.errors import TrajectoriesError
from validation.cox import COX_MAX_ROWS, CoxConvergenceError, design_matrix


def _fit(design: pl.DataFrame, time: np.ndarray, event: np.ndarray, what: str):
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    data = design.to_pandas()
    data["_duration"], data["_event"] = time, event
    try:
        return CoxPHFitter(penalizer=1e-4).fit(data, "_duration", "_event")
    except (ConvergenceError, np.linalg.LinAlgError, ArithmeticError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CoxConvergenceError(f"utility: the Cox model {what} did not converge: "
                                  f"{reason}") from None


def _concordance(model, design: pl.DataFrame, time: np.ndarray, event: np.ndarray) -> float:
    from lifelines.utils import concordance_index

    risk = model.predict_partial_hazard(design.to_pandas()).to_numpy()
    return float(concordance_index(time, -risk, event))


def train_synthetic_test_real(
    synthetic: pl.DataFrame,
    reference: pl.DataFrame,
    covariates: Sequence[str],
    *,
    folds: int = 5,
    seed: int = 0,
    max_rows: int = COX_MAX_ROWS,
) -> dict[str, float | int]:
    """Concordance on the reference of a Cox model trained on synthetic data, beside the
    reference's own cross-validated concordance.

    Both frames have ``time``, ``event`` (1 = event; other values censored) and the
    ``covariates``. Synthetic frames above ``max_rows`` are subsampled with ``seed``.
    """
    if folds < 2:
        raise TrajectoriesError(f"utility: folds must be >= 2, got {folds}")
    rng = np.random.default_rng(seed)
    if synthetic.height > max_rows:
        synthetic = synthetic[np.sort(rng.choice(synthetic.height, max_rows, replace=False))]
    both = pl.concat([synthetic.select("time", "event", *covariates),
                      reference.select("time", "event", *covariates)], how="vertical_relaxed")
    design = design_matrix(both, covariates, {})
    time = both.get_column("time").to_numpy()
    event = (both.get_column("event") == 1).to_numpy().astype(int)
    n_syn = synthetic.height
    syn, ref = slice(0, n_syn), slice(n_syn, both.height)
    model = _fit(design[syn], time[syn], event[syn], "trained on the synthetic cohort")
    tstr = _concordance(model, design[ref], time[ref], event[ref])

    ref_design, ref_time, ref_event = design[ref], time[ref], event[ref]
    fold_of = rng.permutation(reference.height) % folds
    scores = []
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        fitted = _fit(ref_design.filter(pl.Series(train)), ref_time[train], ref_event[train],
                      f"trained on reference fold {k + 1} of {folds}")
        scores.append(_concordance(fitted, ref_design.filter(pl.Series(test)), ref_time[test],
                                   ref_event[test]))
    cv = float(np.mean(scores))
    return {
        "tstr_concordance": tstr,
        "reference_cv_concordance": cv,
        "reference_cv_sd": float(np.std(scores, ddof=1)),
        "gap": cv - tstr,
        "n_synthetic_fit": n_syn,
        "n_reference": reference.height,
        "folds": folds,
    }
