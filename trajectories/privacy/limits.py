"""The documented limits of the privacy checks (see :mod:`trajectories.privacy.checks`), the
defaults of :class:`validation.thresholds.Thresholds`' privacy fields."""

MAX_COPY_EXCESS = 0.0
"""Margin of the covariate-row copy share over the chance share (beyond sampling noise)."""
CLOSER_TO_TRAIN_BAND = 0.10
"""Half-width around 0.5 of the share of synthetic persons closer to train than holdout."""
MAX_MEMBERSHIP_AUC = 0.60
"""Highest membership-inference AUC passed (beyond sampling noise)."""
MAX_ATTACK_RISK = 0.10
"""Highest lower 95% bound of a singling-out, linkability or inference risk passed."""
