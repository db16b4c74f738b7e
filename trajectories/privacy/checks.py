"""The privacy section of a validation report (group "privacy"): the measures of
:mod:`trajectories.privacy.metrics` and :mod:`trajectories.privacy.attacks` judged by
documented rules.

With a holdout (real persons the generator never saw):

- **exact covariate-row copies**: the share of synthetic covariate rows equal to a train row
  may exceed the chance share (equal to a holdout row) by at most ``MAX_COPY_EXCESS`` plus
  z(level) permutation standard errors (level: the report's shared per-test level);
- **complete-record copies**: the same with no margin; where no synthetic record equals any
  holdout record, equality with a train record is not chance and the allowance is 0, so any
  copy of a train person's whole record fails;
- **share closer to train than holdout**: within 0.5 +- ``CLOSER_TO_TRAIN_BAND`` plus its
  allowance (above: the generator memorised its train persons; below: the "holdout" looks more
  like what it was fitted on than the train cohort does);
- **membership-inference AUC**: at most ``MAX_MEMBERSHIP_AUC`` plus its allowance (DeLong's
  standard error): ranking a member above a non-member in 60% of pairs is a weak attack but a
  real one (0.5: none);
- **singling-out, linkability and inference risks** (Giomi et al. 2023): the lower end of the
  risk's 95% interval may not exceed ``MAX_ATTACK_RISK``: a risk credibly above 10% of what an
  attacker could gain over the control fails, noise of small samples does not. The interval
  judged is the log-scale one of :attr:`~trajectories.privacy.attacks.AttackResult.
  judged_interval` (anonymeter's first-order one is in the details: it fails independent data
  when a secret is nearly fixed by the other columns and few targets are left unguessed).

The first four share the report's family-wise error rate with its other tests; the attack
risks carry their own 95% intervals. Without a holdout only the copy shares against the
reference are shown (not judged), and the report's context says how to give one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from trajectories.cohort import Cohort
from trajectories.privacy import attacks
from trajectories.privacy.limits import (
    CLOSER_TO_TRAIN_BAND,
    MAX_ATTACK_RISK,
    MAX_COPY_EXCESS,
    MAX_MEMBERSHIP_AUC,
)
from trajectories.privacy.metrics import (
    REFERENCE_CAP,
    SYNTHETIC_CAP,
    capped,
    copy_rate,
    copy_test,
    distance_test,
    equal_sizes,
)
from trajectories.privacy.records import Records, aligned_records
from validation.collect import Collector, Margin, Pending
from validation.report import Check, info, judge

if TYPE_CHECKING:
    from validation.thresholds import Thresholds

__all__ = ["CLOSER_TO_TRAIN_BAND", "MAX_ATTACK_RISK", "MAX_COPY_EXCESS", "MAX_MEMBERSHIP_AUC",
           "attack_check", "no_holdout_checks", "privacy_checks"]

GROUP = "privacy"
MIN_PERSONS = 20
"""Fewest train and holdout persons (each, after equalising) and synthetic persons measured."""
MAX_SECRETS = 20
"""Columns attacked by attribute inference, at most (outcome summary first)."""
NO_HOLDOUT = ("no holdout given: copy shares against the reference are shown, not judged. The "
              "privacy checks (copies beyond chance, distance to closest record, membership "
              "inference, singling-out, linkability and inference risks) need real persons the "
              "generator never saw: pass them with --holdout DIR (compare(..., holdout=...)), or "
              "fit with --holdout-fraction so that validate splits the reference the same way")
PUBLISHED = ("not measured: a reference of published figures has no person-level records to "
             "compare with")


def no_holdout_checks(col: Collector, synthetic: Cohort, reference: Cohort) -> dict[str, str]:
    """The copy shares of ``synthetic`` against the whole ``reference``, shown, not judged;
    the context entry says why and how to give a holdout."""
    records = aligned_records(synthetic, reference)
    for name, subject, columns in _copy_kinds(records):
        col.checks.append(info(
            GROUP, f"{name} of reference persons (not judged: no holdout)", subject,
            copy_rate(records.synthetic, records.train, columns),
            details={"columns": columns, "n_synthetic": records.synthetic.height,
                     "n_reference": records.train.height, "dropped": records.dropped}))
    return {"privacy": NO_HOLDOUT}


def privacy_checks(col: Collector, synthetic: Cohort, train: Cohort, holdout: Cohort,
                   th: Thresholds, seed: int = 0) -> dict[str, str]:
    """Every privacy check of ``synthetic`` against ``train`` (what the generator saw) with
    ``holdout`` the control; judged copy, distance and membership tests wait in ``col`` for
    the report's shared level. Returns the report context's entries on what was measured."""
    rng = np.random.default_rng(seed)
    records = aligned_records(synthetic, train, holdout)
    assert records.holdout is not None  # a holdout was given
    t, h = equal_sizes(records.train, records.holdout, rng, REFERENCE_CAP)
    syn = capped(records.synthetic, SYNTHETIC_CAP, rng)
    context = {"privacy sample": (
        f"copies on {records.synthetic.height:,} synthetic persons, distances and attacks on "
        f"{syn.height:,} (seeded sample above {SYNTHETIC_CAP:,}); train and holdout cut to one "
        f"size, {t.height:,} persons each (the larger subsampled, at most {REFERENCE_CAP:,})")}
    if records.dropped:
        context["privacy columns left out"] = "; ".join(
            f"{c}: {why}" for c, why in records.dropped.items())
    if min(t.height, syn.height) < MIN_PERSONS:
        col.checks.append(info(GROUP, "privacy checks (not evaluable)", "all", None, details={
            "reason": f"fewer than {MIN_PERSONS} persons in train, holdout or synthetic "
                      f"({records.train.height}, {records.holdout.height}, {syn.height})"}))
        return context
    _copy_checks(col, records, t, h, th, rng)
    _distance_checks(col, records, syn, t, h, th, rng)
    _attack_checks(col, records, syn, t, h, th, rng)
    return context


def _copy_kinds(records: Records) -> list[tuple[str, str, list[str]]]:
    return [("exact covariate-row copies", "covariate row", records.covariate_columns),
            ("complete-record copies", "complete record", records.complete_columns)]


def _copy_checks(col: Collector, records: Records, t: pl.DataFrame, h: pl.DataFrame,
                 th: Thresholds,
                 rng: np.random.Generator) -> None:
    for (name, subject, columns), margin in zip(_copy_kinds(records),
                                                (th.max_copy_excess, 0.0), strict=True):
        test = copy_test(records.synthetic, t, h, columns, rng)
        complete = subject == "complete record"
        se = 0.0 if complete and test.holdout_rate == 0 else test.standard_error
        col.pending.append(Pending(
            GROUP, f"{name} beyond chance", subject, None,
            margin=Margin(test.excess, margin, se),
            details={"copy_share_train": test.train_rate, "copy_share_holdout": test.holdout_rate,
                     "copy_share_whole_train": copy_rate(records.synthetic, records.train,
                                                         columns),
                     "permutation_standard_error": test.standard_error,
                     "n_synthetic": test.n_synthetic, "n_train": test.n_reference,
                     "n_holdout": test.n_reference, "columns": columns}))


def _distance_checks(col: Collector, records: Records, syn: pl.DataFrame, t: pl.DataFrame,
                     h: pl.DataFrame, th: Thresholds,
                     rng: np.random.Generator) -> None:
    test = distance_test(syn, t, h, records.complete_columns, rng)
    sizes = {"n_synthetic": test.n_synthetic, "n_train": test.n_reference,
             "n_holdout": test.n_reference}
    share = test.share_closer_to_train
    col.pending.append(Pending(
        GROUP, "share closer to train than holdout, |share - 0.5|", "complete record", None,
        margin=Margin(abs(share - 0.5), th.closer_to_train_band, test.share_standard_error),
        details={"share_closer_to_train": share, "ideal": 0.5, **sizes,
                 "band": [0.5 - th.closer_to_train_band, 0.5 + th.closer_to_train_band]}))
    low, high = test.auc_interval()
    col.pending.append(Pending(
        GROUP, "membership-inference AUC", "distance to the nearest synthetic record", None,
        margin=Margin(test.membership_auc, th.max_membership_auc, test.auc_standard_error),
        details={"auc_interval_95": [low, high], "auc_standard_error": test.auc_standard_error,
                 "members": "train", "non_members": "holdout", **sizes}))
    for side in ("train", "holdout"):
        col.checks.append(info(GROUP, "median distance to closest record", side,
                               getattr(test, f"median_dcr_{side}"),
                               details={"distance": "Gower (1971)", **sizes}))
        col.checks.append(info(GROUP, "median nearest-neighbour distance ratio", side,
                               getattr(test, f"median_nndr_{side}"), details=sizes))


def _secrets(records: Records, train: pl.DataFrame) -> list[str]:
    """Columns worth inferring (at least two values among train persons), outcomes first."""
    ordered = [*records.outcome_columns, *records.covariate_columns]
    varied = [c for c in ordered if train.get_column(c).n_unique() > 1]
    return varied[:MAX_SECRETS]


def _attack_checks(col: Collector, records: Records, syn: pl.DataFrame, t: pl.DataFrame,
                   h: pl.DataFrame, th: Thresholds,
                   rng: np.random.Generator) -> None:
    columns = records.complete_columns
    results = [attacks.singling_out(syn, t, h, columns, rng, mode=mode)
               for mode in ("univariate", "multivariate")]
    if records.covariate_columns and records.outcome_columns:
        results.append(attacks.linkability(
            syn, t, h, (records.covariate_columns, records.outcome_columns), rng))
    results += attacks.inference(syn, t, h, columns, _secrets(records, t), rng)
    col.checks += [attack_check(result, th.max_attack_risk) for result in results]


def attack_check(result: attacks.AttackResult, limit: float = MAX_ATTACK_RISK) -> Check:
    """An attack's risk judged by the lower end of its interval; not evaluable (shown) when
    no attack could be made."""
    name = f"{result.attack} risk, lower {result.confidence:.0%} bound"
    if result.n_attacks == 0 or math.isnan(result.risk[0]):
        return info(GROUP, f"{result.attack} risk (not evaluable)", result.subject, None,
                    details={"reason": "no attack could be built", **result.summary()})
    low, _ = result.judged_interval
    return judge(GROUP, name, result.subject, low, limit,
                 rule=f"lower {result.confidence:.0%} bound of (train success - holdout success)"
                      f" / (1 - holdout success) <= {limit:g}", details=result.summary())
