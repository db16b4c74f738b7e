"""Checks that fit Cox models (Cox 1972) on person rows: each log hazard ratio against the
reference's (a z-test of the difference), and train-on-synthetic, test-on-real utility (the
C-index gap, Harrell et al. 1982). Both use the synthetic side's person sample.
"""

from __future__ import annotations

import math

import polars as pl

from trajectories.cohort import Cohort
from trajectories.errors import CoxConvergenceError
from validation import cox
from validation.collect import Collector, Margin, Pending
from validation.endpoints import Endpoint, endpoint_times
from validation.report import Check, info
from validation.thresholds import Thresholds
from validation.two_sample import z_test_p
from validation.utility import train_synthetic_test_real

COX_ROWS = 50_000
"""Synthetic rows a Cox model of the report is fitted on (a seeded subsample above that): its
standard error then stays well below a typical reference's, at a fraction of the time."""


def shared_covariates(synthetic: Cohort, reference: Cohort, frame: pl.DataFrame) -> list[str]:
    """The reference's covariates the synthetic cohort has too (and ``site`` when ``frame``
    has several) that vary and have no nulls in ``frame``."""
    names = [c for c in reference.covariates if c in synthetic.covariates]
    if frame.get_column("site").n_unique() > 1:
        names.append("site")
    return [c for c in names if frame.get_column(c).n_unique() > 1
            and frame.get_column(c).null_count() == 0]


def hazard_ratio_checks(col: Collector, endpoint: Endpoint, sample: Cohort,
                        reference: Cohort) -> None:
    """The endpoint's log hazard ratios of the shared covariates, synthetic against reference;
    not evaluable (or failed, when only the synthetic fit fails) without a Cox fit."""
    syn, ref = (endpoint_times(c, endpoint) for c in (sample, reference))
    covariates = shared_covariates(sample, reference, ref)
    constant = [c for c in covariates if syn.get_column(c).n_unique() < 2]
    if constant:  # e.g. a cohort sampled for one site: no hazard ratio of it to compare
        col.checks.append(info(
            "hazard ratios", "log HR (not evaluable)", endpoint.name, None,
            details={"reason": f"synthetic: covariate(s) {constant} do not vary in the "
                               "synthetic cohort; their hazard ratios are not compared",
                     "covariates": constant}))
        covariates = [c for c in covariates if c not in constant]
    if not covariates:
        return
    fits = {}
    for label, frame in (("reference", ref), ("synthetic", syn)):
        try:
            fits[label] = cox.cox_hazard_ratios(frame, "time", "event", covariates,
                                                max_rows=COX_ROWS)
        except CoxConvergenceError as error:
            # Not evaluable where the reference itself has no Cox fit; a failure where only
            # the synthetic cohort lacks one. Either way the other checks go on.
            details = {"reason": f"{label}: {error}", "covariates": list(covariates)}
            if label == "reference":
                col.checks.append(info("hazard ratios", "log HR (not evaluable)", endpoint.name,
                                       None, details=details))
            else:
                col.checks.append(Check(
                    "hazard ratios", "log HR (not evaluable)", endpoint.name, None, None,
                    "fail", "the synthetic Cox model converges where the reference's does",
                    details=details))
            return
    table = fits["synthetic"].join(fits["reference"], on="covariate", suffix="_reference")
    for row in table.iter_rows(named=True):
        col.pending.append(Pending(
            "hazard ratios", f"log HR {row['covariate']}", endpoint.name, None,
            p_value=z_test_p(row["log_hr"] - row["log_hr_reference"], row["std_error"],
                             row["std_error_reference"]),
            details={"hazard_ratio_synthetic": row["hazard_ratio"],
                     "hazard_ratio_reference": row["hazard_ratio_reference"],
                     "reference_interval": [row["lower_reference"], row["upper_reference"]],
                     "synthetic_interval": [row["lower"], row["upper"]]}))


def utility_checks(col: Collector, endpoint: Endpoint, sample: Cohort, reference: Cohort,
                   th: Thresholds, seed: int) -> None:
    """Train on the synthetic sample, test on the reference: the C-index gap within a margin
    (skipped below 50 reference persons or 10 events)."""
    ref = endpoint_times(reference, endpoint)
    syn = endpoint_times(sample, endpoint)
    covariates = [c for c in shared_covariates(sample, reference, ref)
                  if syn.get_column(c).n_unique() > 1]  # else no fit
    if not covariates or ref.height < 50 or int((ref["event"] == 1).sum()) < 10:
        return
    try:
        result = train_synthetic_test_real(syn, ref, covariates, seed=seed, max_rows=COX_ROWS)
    except CoxConvergenceError as error:
        col.checks.append(info("utility", "train synthetic, test real: C-index gap (not "
                               "evaluable)", endpoint.name, None,
                               details={"reason": str(error), "covariates": list(covariates)}))
        return
    se = result["reference_cv_sd"] / math.sqrt(result["folds"])
    col.pending.append(Pending(
        "utility", "train synthetic, test real: C-index gap", endpoint.name, None,
        margin=Margin(result["gap"], th.max_concordance_gap, se), details=result))
