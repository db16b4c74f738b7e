"""analyze(): one analysis run on every replicate and combined by the rule that fits how the
replicates were made (:mod:`trajectories.inference.rules`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajectories.errors import InferenceError
from trajectories.inference.analyses import (
    Analysis,
    Estimate,
    Landmark,
    choose_endpoint,
    cohort_endpoints,
    known_covariates,
)
from trajectories.inference.replicates import (
    REPLICATE_DIR,
    Replicates,
    choose_rule,
    read_replicates,
)
from trajectories.inference.rules import CombinedEstimate, combine
from validation.endpoints import endpoint_times


@dataclass(frozen=True)
class AnalysisResult:
    """An analysis combined over replicates, on the scale users read (hazard ratio, survival,
    days): ``estimate``, ``ci`` (the rule's), ``naive_ci`` (every synthetic person taken as
    real), and ``combined`` on the working scale (log HR, log(-log S), days)."""

    analysis: str
    combined: CombinedEstimate
    estimate: float
    ci: tuple[float, float]
    naive_ci: tuple[float, float]
    per_replicate: list[Estimate]
    n_reference: int | None
    n_synthetic: float | None
    draws: str | None

    @property
    def rule(self) -> str:
        return self.combined.rule

    @property
    def m(self) -> int:
        return self.combined.m

    @property
    def df(self) -> float:
        return self.combined.df

    def as_json(self) -> dict[str, Any]:
        """What ``trajectories analyze --json`` prints (df null when the interval is normal)."""
        return {"estimate": _number(self.estimate), "ci": [_number(x) for x in self.ci],
                "naive_ci": [_number(x) for x in self.naive_ci], "m": self.m,
                "rule": self.rule, "df": None if math.isinf(self.df) else self.df,
                "analysis": self.analysis}


def analyze(replicates: Replicates | str | Path, analysis: Analysis, *, rule: str | None = None,
            alpha: float = 0.05) -> AnalysisResult:
    """Run ``analysis`` on each cohort of ``replicates`` (a :class:`Replicates` or a directory
    for :func:`read_replicates`) and combine the estimates with ``rule`` (None or "auto": from
    the manifests, see :func:`choose_rule`). Endpoints are the first cohort's defaults."""
    if not isinstance(replicates, Replicates):
        replicates = read_replicates(replicates)
    chosen_rule = choose_rule(replicates, rule)
    first = replicates.cohorts[0]
    where = str(replicates.source / replicates.names[0]) if replicates.folder else str(
        replicates.source)
    endpoint = choose_endpoint(cohort_endpoints(first), analysis.endpoint, analysis, where)
    bound: Analysis | None = None
    estimates = []
    for cohort, name in zip(replicates.cohorts, replicates.names, strict=True):
        here = str(replicates.source / name) if replicates.folder else str(replicates.source)
        rows = endpoint_times(cohort, endpoint)
        if bound is None:
            bound = analysis.bind(rows, known_covariates(cohort), here)
        estimates.append(bound.estimate(rows.select(bound.columns()), here))
    assert bound is not None
    n_synthetic = None if replicates.real else sum(
        c.n_persons * e.fraction for c, e in zip(replicates.cohorts, estimates, strict=True)
    ) / replicates.m
    combined = combine([e.theta for e in estimates], [e.variance for e in estimates],
                       rule=chosen_rule, n_reference=replicates.n_reference,
                       n_synthetic=n_synthetic, alpha=alpha)
    return AnalysisResult(
        analysis=bound.label(endpoint.name), combined=combined,
        estimate=bound.shown(combined.estimate), ci=bound.shown_interval(*combined.ci),
        naive_ci=bound.shown_interval(*combined.naive_ci), per_replicate=estimates,
        n_reference=replicates.n_reference, n_synthetic=n_synthetic, draws=replicates.draws)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def combined_landmarks(cohort_dir: str | Path, days: list[float]) -> dict[str, str]:
    """For a cohort that is one of a complete folder of replicates: survival at each of
    ``days`` (within its follow-up) combined over all of them, beside the naive interval, as
    report context lines (empty for any other cohort, or when the replicates disagree)."""
    cohort_dir = Path(cohort_dir)
    if not REPLICATE_DIR.fullmatch(cohort_dir.name):
        return {}
    try:
        replicates = read_replicates(cohort_dir.parent)
    except InferenceError as error:
        return {"combined over replicates": f"not computed: {error}"}
    if len(replicates.cohorts) < 2:
        return {}
    horizon = float(replicates.cohorts[0].persons.get_column("followup_end").max() or 0.0)
    lines = {}
    for day in (d for d in days if d < horizon):
        try:
            result = analyze(replicates, Landmark(days=day))
        except InferenceError as error:
            return {"combined over replicates": f"not computed: {error}"}
        lo, hi = result.ci
        naive_lo, naive_hi = result.naive_ci
        lines[f"combined {result.analysis} over {len(replicates.cohorts)} replicates "
              f"({result.rule})"] = (f"{result.estimate:.3f} [{lo:.3f}, {hi:.3f}]; naive "
                                     f"[{naive_lo:.3f}, {naive_hi:.3f}] (this cohort's own CI "
                                     "is the naive kind, not a population interval)")
    return lines
