"""Honest inference from synthetic cohorts.

- :mod:`.rules`: combining rules over m replicates (Raab, Nowok & Dibben 2016 simple and
  proper synthesis; Reiter 2003 partially synthetic; Raghunathan, Reiter & Rubin 2003 fully
  synthetic, guarded): :func:`combine`
- :mod:`.analyses`: the analyses (Cox hazard ratio, Kaplan-Meier landmark, RMST) with their
  working scales
- :mod:`.replicates`: one cohort or a folder of ``replicate-*`` cohorts and their manifests
- :mod:`.analyze`: :func:`analyze`, an analysis run on every replicate and combined
- :mod:`.influence`: per-person influence terms of the estimators
- :mod:`.augment`: :func:`augment`, a small real cohort powered by a synthetic one (PPI++)
"""

from trajectories.inference.analyses import Analysis, Estimate, HazardRatio, Landmark, Rmst
from trajectories.inference.analyze import AnalysisResult, analyze
from trajectories.inference.augment import AugmentedResult, augment, prediction_powered
from trajectories.inference.replicates import (
    REPLICATE_KEY,
    ReplicateInfo,
    Replicates,
    choose_rule,
    read_replicates,
)
from trajectories.inference.rules import RULE_FOR_DRAWS, RULES, CombinedEstimate, combine

__all__ = [
    "REPLICATE_KEY",
    "RULES",
    "RULE_FOR_DRAWS",
    "Analysis",
    "AnalysisResult",
    "AugmentedResult",
    "CombinedEstimate",
    "Estimate",
    "HazardRatio",
    "Landmark",
    "ReplicateInfo",
    "Replicates",
    "Rmst",
    "analyze",
    "augment",
    "choose_rule",
    "combine",
    "prediction_powered",
    "read_replicates",
]
