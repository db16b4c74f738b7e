"""Index dates and censoring: do the synthetic persons enter and leave follow-up as the
reference's do?

Two two-sample Kolmogorov-Smirnov tests, pooled and per judged site: of the index dates (days
since 1970-01-01), and of the follow-up ends of the persons whose follow-up ended by censoring
(administrative, lost to follow-up or unknown reason). The censored follow-up ends are the
observable trace of the censoring distribution (with the event process); they are what a
uniform window plus constant loss got wrong on real cohorts. Like the sojourn KS tests, each
p-value is judged at the report's Bonferroni level (:mod:`validation.compare`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats

from trajectories.cohort import EXITS

CENSORED_EXITS = tuple(e for e in EXITS if e not in ("death", "absorbed"))
QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class SampleTest:
    """One two-sample KS test (``p_value`` None when a side has no value to compare)."""

    name: str
    subject: str
    site: str | None
    p_value: float | None
    details: dict = field(default_factory=dict)


def capped(persons: pl.DataFrame, cap: int, rng: np.random.Generator) -> pl.DataFrame:
    """At most ``cap`` rows, drawn without replacement by ``rng`` (kept in their order)."""
    if persons.height <= cap:
        return persons
    return persons[np.sort(rng.choice(persons.height, cap, replace=False))]


def _ks(name: str, subject: str, site: str | None, synthetic: np.ndarray,
        reference: np.ndarray, as_dates: bool) -> SampleTest:
    def shown(values: np.ndarray) -> list:
        if values.size == 0:
            return []
        q = np.quantile(values, QUANTILES)
        if as_dates:
            return [str(np.datetime64(int(np.floor(v + 0.5)), "D")) for v in q]
        return [float(v) for v in q]

    details = {"n_synthetic": int(synthetic.size), "n_reference": int(reference.size),
               "quantiles": list(QUANTILES), "synthetic": shown(synthetic),
               "reference": shown(reference)}
    if synthetic.size == 0 or reference.size == 0:
        return SampleTest(name, subject, site, None, details)
    result = stats.ks_2samp(synthetic, reference)
    details["ks_statistic"] = float(result.statistic)
    return SampleTest(name, subject, site, float(result.pvalue), details)


def followup_tests(synthetic: pl.DataFrame, reference: pl.DataFrame,
                   sites: list[str]) -> list[SampleTest]:
    """KS tests of index dates and of censored follow-up ends, pooled then per site in
    ``sites``, from the two sides' person tables (columns site, index_date, followup_end,
    exit)."""
    tests = []
    for site in [None, *sites]:
        syn, ref = ((frame if site is None else frame.filter(pl.col("site") == site))
                    for frame in (synthetic, reference))
        tests.append(_ks("index date KS test", "index dates", site,
                         *(f.get_column("index_date").cast(pl.Int64).to_numpy().astype(float)
                           for f in (syn, ref)), as_dates=True))
        tests.append(_ks("censored follow-up KS test", "censored follow-up ends", site,
                         *(f.filter(pl.col("exit").is_in(CENSORED_EXITS))
                           .get_column("followup_end").to_numpy() for f in (syn, ref)),
                         as_dates=False))
    return tests
