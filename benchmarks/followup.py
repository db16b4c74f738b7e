"""Follow-up benchmark: how the fitted model's index dates and censoring compare with the
reference's, with the empirical censoring (the default: index-date and reverse Kaplan-Meier
quantile knots) and the parametric one (uniform window before a data cut-off plus constant
loss), on the lifelines cohorts simulated at ten times their size. Prints the censored
follow-up q10/q50/q90 (days), the index-date q10/q50/q90, the distinct index dates and the two
KS p-values of the validation's follow-up checks.

Run: python benchmarks/followup.py [--multiple 10] [--seed 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from trajectories.fit import MultiStateModel
from trajectories.fit.references import gbsg2, stanford_heart
from validation.followup import CENSORED_EXITS, followup_tests


def _figures(persons: pl.DataFrame) -> tuple[str, str, int]:
    ended = persons.filter(pl.col("exit").is_in(CENSORED_EXITS))["followup_end"].to_numpy()
    days = persons["index_date"].cast(pl.Int64).to_numpy()
    censored = "/".join(f"{q:.0f}" for q in np.quantile(ended, [0.1, 0.5, 0.9]))
    dates = "/".join(str(np.datetime64(int(np.floor(q + 0.5)), "D"))
                     for q in np.quantile(days, [0.1, 0.5, 0.9]))
    return censored, dates, int(np.unique(days).size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--multiple", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("| data | cohort | censored follow-up q10/q50/q90 (days) | index date q10/q50/q90 | "
          "distinct index dates | KS p: index dates, censored follow-up |")
    print("|---|---|---|---|---|---|")
    for label, load in (("GBSG2", gbsg2), ("Stanford heart", stanford_heart)):
        reference = load()
        censored, dates, distinct = _figures(reference.persons)
        print(f"| {label} | reference ({reference.n_persons:,}) | {censored} | {dates} | "
              f"{distinct} | |")
        for censoring in ("empirical", "parametric"):
            model = MultiStateModel(censoring=censoring).fit(reference)
            synthetic = model.simulate(args.multiple * reference.n_persons, seed=args.seed)
            censored, dates, distinct = _figures(synthetic.persons)
            p = [t.p_value for t in followup_tests(synthetic.persons, reference.persons, [])]
            print(f"| | {censoring} ({synthetic.n_persons:,}) | {censored} | {dates} | "
                  f"{distinct} | {p[0]:.3g}, {p[1]:.3g} |")


if __name__ == "__main__":
    main()
