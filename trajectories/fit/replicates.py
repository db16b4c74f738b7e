"""Synthetic replicates of a saved model: ``m`` cohorts ``replicate-1`` ... ``replicate-m``,
each simulated from its own parameter draw (:mod:`trajectories.fit.draws`), each manifest
saying which draw it is, so that ``trajectories analyze`` can combine them by the rule that
fits how they were made."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from trajectories.cohort import Cohort, fit_part, prepare_output_directory
from trajectories.errors import FitError, PrivacyWarning
from trajectories.fit.draws import DRAWS, bootstrap_cohort, draw_scenario
from trajectories.fit.model import FIT_FILE, SCENARIO_FILE, MultiStateModel, saved_provenance
from trajectories.progress import track
from trajectories.scenario import load_scenario, scenario_from_dict
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.blocks import DEFAULT_BLOCK_SIZE

REPLICATE_PREFIX = "replicate-"


def simulate_replicates(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    m: int,
    draws: str = "asymptotic",
    n: int | None = None,
    seed: int = 0,
    reference: Cohort | None = None,
    overwrite: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> list[Path]:
    """Write ``m`` replicates of the model in ``model_dir`` under ``out_dir``; replicate i
    draws its parameters from ``np.random.default_rng([seed, i])`` and simulates with a seed
    derived from (seed, i). ``bootstrap`` draws refit on a person bootstrap of ``reference``
    (its train part, when the model was fitted with a holdout split)."""
    model_dir = Path(model_dir)
    if draws not in DRAWS:
        raise FitError(f"--draws must be one of {list(DRAWS)}, got {draws!r}")
    if m < 1:
        raise FitError(f"--replicates must be at least 1, got {m}")
    fit_file = model_dir / FIT_FILE
    if not fit_file.is_file():
        raise FitError(f"{model_dir}: no {FIT_FILE}; replicates need a model written by "
                       "`trajectories fit` (its estimates and their covariances)")
    summary = json.loads(fit_file.read_text(encoding="utf-8"))
    if draws == "bootstrap" and summary.get("privacy"):
        raise FitError("--draws bootstrap would refit a differentially private model once per "
                       "replicate, spending its budget again each time; use --draws "
                       "asymptotic (post-processing: free)")
    if draws == "bootstrap" and reference is None:
        raise FitError("--draws bootstrap refits the model on a person bootstrap of its "
                       "reference: give --reference (the model keeps no rows)")
    split = summary.get("reference", {}).get("split")
    if reference is not None and split:  # refit on what the model saw, not its holdout
        reference, _, _ = fit_part(reference, float(split["fraction"]), int(split["seed"]))
    scenario = load_scenario(model_dir / SCENARIO_FILE)
    provenance = saved_provenance(model_dir)
    n_reference = summary.get("reference", {}).get("n_persons")
    out_dir = prepare_output_directory(out_dir, overwrite)
    written = []
    for i in track(range(1, m + 1), total=m, description="simulating replicates",
                   unit="replicates"):
        rng = np.random.default_rng([seed, i])
        if draws == "none":
            drawn = scenario
        elif draws == "asymptotic":
            data = draw_scenario(scenario.model_dump(mode="json", by_alias=True), summary, rng)
            drawn = scenario_from_dict(data, source=f"<draw {i} of {model_dir}>")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PrivacyWarning)  # said when it was fitted
                drawn = _bootstrap_model(summary).fit(bootstrap_cohort(reference, rng)) \
                    .to_scenario()
        replicate = {"index": i, "m": m, "draws": draws, "n_reference": n_reference}
        simulator = MarkovSimulator(drawn, block_size=block_size,
                                    provenance={**provenance, "replicate": replicate})
        simulation_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        written.append(simulator.simulate_to(out_dir / f"{REPLICATE_PREFIX}{i}", n=n,
                                              seed=simulation_seed))
    return written


def _bootstrap_model(summary: dict[str, Any]) -> MultiStateModel:
    """An unfitted model with the saved model's options (what a bootstrap refit repeats)."""
    options = dict(summary.get("options", {}))
    names = [c["name"] for c in summary.get("covariates", [])]
    allowed = ("families", "clock", "covariate_draw", "site_effects", "censoring", "epsilon",
               "delta")
    return MultiStateModel(covariates=names, **{k: options[k] for k in allowed if k in options})
