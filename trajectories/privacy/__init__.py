"""Privacy measures of a synthetic cohort against the real persons behind it.

- :mod:`.records`: the person-level record (covariate row, complete record) every measure reads
- :mod:`.metrics`: exact copies beside chance, Gower distances to closest records, the
  membership-inference AUC
- :mod:`.attacks`: singling-out, linkability and attribute-inference risks (Giomi et al. 2023)
- :mod:`.checks`: the judged "privacy" group of a validation report (imported by
  :mod:`validation.compare`, not here: it builds on :mod:`validation.report`); its limits in
  :mod:`.limits`

The train/holdout split they rest on is :func:`trajectories.cohort.holdout_split`.
"""

from trajectories.privacy.attacks import (
    AttackResult,
    inference,
    linkability,
    singling_out,
    wilson,
)
from trajectories.privacy.limits import (
    CLOSER_TO_TRAIN_BAND,
    MAX_ATTACK_RISK,
    MAX_COPY_EXCESS,
    MAX_MEMBERSHIP_AUC,
)
from trajectories.privacy.metrics import (
    CopyTest,
    DistanceTest,
    copy_rate,
    copy_test,
    distance_test,
    equal_sizes,
    gower_distances,
    membership_auc,
)
from trajectories.privacy.records import Records, aligned_records, person_records

__all__ = [
    "CLOSER_TO_TRAIN_BAND",
    "MAX_ATTACK_RISK",
    "MAX_COPY_EXCESS",
    "MAX_MEMBERSHIP_AUC",
    "AttackResult",
    "CopyTest",
    "DistanceTest",
    "Records",
    "aligned_records",
    "copy_rate",
    "copy_test",
    "distance_test",
    "equal_sizes",
    "gower_distances",
    "inference",
    "linkability",
    "membership_auc",
    "person_records",
    "singling_out",
    "wilson",
]
