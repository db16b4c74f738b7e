"""Parameter draws: a fitted scenario with its parameters drawn from their sampling
distribution, one draw per synthetic replicate, so that the replicates carry the reference's
sampling error and the combining rules of :mod:`trajectories.inference` give honest intervals
(proper synthesis: Raab, Nowok & Dibben 2016; Reiter 2003).

``asymptotic``: each transition's (theta, beta) from the multivariate normal at the estimate
with the fit's covariance, on the stored unconstrained scale (log rates, log shapes, log hazard
ratios); site effects drawn before their empirical-Bayes shrinkage and shrunk again; a Cox
baseline's piece rates times a log-normal factor with variance 1 / (events per piece).
Covariate shares, value shares, site shares and initial-state shares by the Bayesian bootstrap
of their counts (Dirichlet; Rubin 1981), which needs no person-level row; a quantile marginal
shifted by a normal draw of its mean's error; copula correlations drawn on Fisher's z scale.
Index dates, censoring and the visit, measurement and drug processes stay at their estimates.
``bootstrap`` refits the model on a person bootstrap of the reference (needs it: the model
holds no rows). Works from a saved model directory (scenario.toml + fit.json) as from memory.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from trajectories.cohort import Cohort
from trajectories.errors import FitError
from trajectories.fit.baselines import BASELINES, PiecewiseBaseline
from trajectories.fit.covariates import positive_definite

DRAWS = ("none", "asymptotic", "bootstrap")
LABEL = re.compile(r"^(?P<name>[^\[\]]+)(\[(?P<level>.+)\])?$")
SITE = "site"


def draw_scenario(scenario: Mapping[str, Any], fit: Mapping[str, Any],
                  rng: np.random.Generator) -> dict[str, Any]:
    """An asymptotic draw of ``scenario`` (a fitted scenario as a dict, as
    ``MultiStateModel.scenario_dict`` or a loaded scenario.toml gives it) from the estimates
    and covariances of ``fit`` (``MultiStateModel.summary()``, the saved fit.json)."""
    drawn = copy.deepcopy(dict(scenario))
    n = int(fit.get("reference", {}).get("n_persons") or 0)
    if n < 2:
        raise FitError("parameter draws need the number of reference persons (fit.json "
                       "reference.n_persons)")
    by_key = {t["transition"]: t for t in fit.get("transitions", [])}
    sites = {s["name"]: s for s in drawn["sites"]}
    for transition in drawn["transitions"]:
        key = f"{transition['from']}->{transition['to']}"
        if key not in by_key:
            raise FitError(f"parameter draws: fit.json has no transition {key}")
        _draw_transition(transition, by_key[key], sites, rng)
    shares = np.array([s.get("share") or 0.0 for s in drawn["sites"]])
    if len(shares) > 1 and shares.sum() > 0:
        for site, share in zip(drawn["sites"], _dirichlet(n * shares, rng), strict=True):
            site["share"] = share
    initial = drawn.get("initial_state")
    if isinstance(initial, Mapping) and len(initial) > 1:
        values = _dirichlet(n * np.array(list(initial.values())), rng)
        drawn["initial_state"] = dict(zip(initial, values, strict=True))
    drawn["covariates"] = {name: _draw_marginal(spec, n, rng)
                           for name, spec in drawn.get("covariates", {}).items()}
    for site in drawn["sites"]:
        here = max(2, round(n * (site.get("share") or 1.0)))
        site["covariates"] = {name: _draw_marginal(spec, here, rng)
                              for name, spec in (site.get("covariates") or {}).items()}
    if drawn.get("copula"):
        drawn["copula"] = _draw_copula(drawn["copula"], n, rng)
    return drawn


def _draw_transition(transition: dict, fitted: Mapping[str, Any], sites: dict[str, dict],
                     rng: np.random.Generator) -> None:
    """Draw one transition's hazard, effects and site hazard ratios in place."""
    parameters = fitted["parameters"]
    names = [p["name"] for p in parameters]
    # a piece without events has log rate -inf (null in JSON): it keeps its rate 0
    mean = np.array([-np.inf if p["estimate"] is None else p["estimate"] for p in parameters],
                    dtype=float)
    cov = np.asarray(fitted.get("cov") or np.zeros((0, 0)), dtype=float)
    shrinkage = fitted.get("site_shrinkage") or {}
    columns = list(fitted.get("columns", []))
    k = len(names) - len(columns)
    for label, entry in shrinkage.items():
        mean[k + columns.index(label)] = entry["unshrunk"]
    ok = cov.shape == (mean.size, mean.size) and np.all(np.isfinite(cov))
    finite = np.isfinite(mean)
    value = mean.copy()
    if ok and finite.any():
        sub = np.ix_(finite, finite)
        value[finite] = rng.multivariate_normal(mean[finite], cov[sub], method="eigh")
    for label, entry in shrinkage.items():
        value[k + columns.index(label)] *= entry["factor"]
    theta, beta = value[:k], value[k:]
    family = fitted["family"]
    hazard = transition["hazard"]
    if family == "cox":
        rates = np.asarray(hazard["rates"], dtype=float)
        per_piece = max(1.0, fitted.get("n_events", 1) / max(rates.size, 1))
        factor = np.exp(rng.normal(0.0, math.sqrt(1.0 / per_piece), rates.size))
        transition["hazard"] = {**hazard, "rates": [float(r) for r in rates * factor]}
    elif family == "piecewise":
        baseline = PiecewiseBaseline(np.asarray(hazard["breakpoints"], dtype=float), 1.0)
        with np.errstate(over="ignore"):
            transition["hazard"] = baseline.hazard(theta).model_dump()
    else:
        transition["hazard"] = BASELINES[family]().hazard(theta).model_dump()
    effects: dict[str, Any] = {}
    for label, b in zip(columns, beta, strict=True):
        match = LABEL.match(label)
        name, level = match["name"], match["level"]
        if name == SITE:
            sites[level].setdefault("hazard_ratios", {})[
                f"{transition['from']}->{transition['to']}"] = float(math.exp(b))
        elif level is None:
            effects[name] = float(b)
        else:
            effects.setdefault(name, {})[level] = float(b)
    transition["effects"] = effects


def _draw_marginal(spec: Mapping[str, Any], n: int, rng: np.random.Generator) -> dict:
    """A covariate marginal from its sampling distribution given ``n`` persons."""
    spec = dict(spec)
    kind = spec.get("kind")
    if kind == "categorical":
        levels = spec["levels"]
        values = _dirichlet(n * np.array(list(levels.values()), dtype=float), rng)
        spec["levels"] = dict(zip(levels, values, strict=True))
    elif kind == "discrete":
        spec["probabilities"] = _dirichlet(n * np.asarray(spec["probabilities"], float), rng)
    elif kind == "quantiles":
        knots = np.asarray(spec["quantiles"], dtype=float)
        mids = (knots[:-1] + knots[1:]) / 2
        shift = rng.normal(0.0, float(np.std(mids)) / math.sqrt(n)) if mids.size else 0.0
        spec["quantiles"] = [float(q) for q in knots + shift]
        if knots[0] >= 0 and spec["quantiles"][0] < 0:  # a count or an age stays >= 0
            spec["quantiles"] = [float(q) for q in np.maximum(knots + shift, 0.0)]
    elif kind == "normal":
        spec["mean"] = float(spec["mean"] + rng.normal(0.0, spec["sd"] / math.sqrt(n)))
    return spec


def _draw_copula(copula: Mapping[str, Any], n: int, rng: np.random.Generator) -> dict:
    """Correlations drawn on Fisher's z scale (sd 1 / sqrt(n - 3)), made positive definite."""
    r = np.asarray(copula["correlation"], dtype=float)
    z = np.arctanh(np.clip(r, -0.999, 0.999))
    noise = np.triu(rng.normal(0.0, 1.0 / math.sqrt(max(n - 3, 1)), r.shape), 1)
    drawn = positive_definite(np.tanh(z + noise + noise.T))
    return {**copula, "correlation": drawn.tolist()}


def _dirichlet(counts: np.ndarray, rng: np.random.Generator) -> list[float]:
    """Shares from the Bayesian bootstrap of ``counts`` (a zero count stays at zero)."""
    counts = np.asarray(counts, dtype=float)
    out = np.zeros(counts.size)
    positive = counts > 0
    if positive.any():
        out[positive] = rng.dirichlet(counts[positive])
    out[-1] = max(0.0, 1.0 - out[:-1].sum())
    return [float(v) for v in out]


def bootstrap_cohort(cohort: Cohort, rng: np.random.Generator) -> Cohort:
    """A person bootstrap of ``cohort``: n persons drawn with replacement, each copy with its
    events under a new id (1..n) (Efron 1979)."""
    n = cohort.n_persons
    picks = rng.integers(0, n, n)
    ids = cohort.persons.get_column("person_id")
    mapping = pl.DataFrame({"person_id": ids.gather(picks),
                            "__new": pl.int_range(1, n + 1, eager=True)})
    persons = mapping.join(cohort.persons, on="person_id", how="left", maintain_order="left") \
        .with_columns(pl.col("__new").alias("person_id")).drop("__new") \
        .select(cohort.persons.columns)
    events = mapping.join(cohort.events, on="person_id", how="inner", maintain_order="left") \
        .with_columns(pl.col("__new").cast(cohort.events.schema["person_id"]).alias(
            "person_id")).drop("__new").select(cohort.events.columns)
    persons = persons.with_columns(pl.col("person_id").cast(cohort.persons.schema["person_id"]))
    return Cohort(persons, events, cohort.manifest, check=False)
