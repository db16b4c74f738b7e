"""Pass/fail thresholds of the validation checks, with documented defaults, loadable from TOML.

A thresholds file holds a ``[thresholds]`` table (or the keys at top level) with any of the
fields below; unknown keys are an error naming the file. ``max_*`` values are practical
margins: each magnitude check allows its margin plus ``z(alpha / m)`` standard errors of
sampling noise (see :mod:`validation.compare`), so small samples are not failed for noise.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trajectories.errors import TrajectoriesError
from trajectories.privacy.limits import (
    CLOSER_TO_TRAIN_BAND,
    MAX_ATTACK_RISK,
    MAX_COPY_EXCESS,
    MAX_MEMBERSHIP_AUC,
)
from trajectories.tomlfile import explain, read_toml


class Thresholds(BaseModel):
    """Rules of the validation report. Hypothesis tests share one family-wise error rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(
        0.05, gt=0, lt=1,
        description="family-wise error rate; split over all tests of a report (Bonferroni)",
    )
    bootstrap_samples: int = Field(
        400, ge=50, description="replicates for the Kaplan-Meier distance threshold"
    )
    landmark_days: list[float] = Field(
        default_factory=lambda: [365.25, 730.5, 1095.75],
        description="times at which synthetic survival must fall in the reference 95% CI",
    )
    rmst_horizon_days: float | None = Field(
        None, gt=0,
        description="RMST horizon; default: the reference's 90th percentile of follow-up",
    )
    max_total_variation: float = Field(
        0.10, gt=0, le=1,
        description="jump-chain total variation margin per origin (plus sampling allowance)",
    )
    max_occupation_difference: float = Field(
        0.05, gt=0, le=1,
        description="state-occupation probability difference margin (plus sampling allowance)",
    )
    max_sojourn_median_ratio: float = Field(
        1.25, gt=1,
        description="median sojourn ratio margin: |log ratio| <= log r (plus sampling allowance)",
    )
    max_concordance_gap: float = Field(
        0.05, ge=0,
        description="how far the train-synthetic-test-real C-index may trail the reference's "
        "cross-validated one (plus sampling allowance)",
    )
    min_site_persons: int = Field(
        30, ge=1, description="sites with fewer reference persons are shown, not judged"
    )
    max_copy_excess: float = Field(
        MAX_COPY_EXCESS, ge=0, le=1,
        description="privacy (with a holdout): how far the share of synthetic covariate rows "
        "equal to a train row may exceed the share equal to a holdout row (plus sampling "
        "allowance)",
    )
    closer_to_train_band: float = Field(
        CLOSER_TO_TRAIN_BAND, gt=0, lt=0.5,
        description="privacy: the share of synthetic persons closer to train than to holdout "
        "must lie within 0.5 +- this (plus sampling allowance)",
    )
    max_membership_auc: float = Field(
        MAX_MEMBERSHIP_AUC, gt=0.5, le=1,
        description="privacy: distance-based membership-inference AUC margin (plus sampling "
        "allowance); 0.5 is an attacker no better than chance",
    )
    max_attack_risk: float = Field(
        MAX_ATTACK_RISK, ge=0, le=1,
        description="privacy: singling-out, linkability and inference risks fail when the "
        "lower end of their 95% interval exceeds this",
    )


def load_thresholds(path: str | Path) -> Thresholds:
    """Read thresholds from a TOML file; errors name the file and the field."""
    data = read_toml(path, "thresholds file", TrajectoriesError)
    try:
        return Thresholds.model_validate(data.get("thresholds", data))
    except ValidationError as error:
        problems = "\n".join(explain(error))
        raise TrajectoriesError(f"invalid thresholds file {path}:\n{problems}") from None
