"""Real reference cohorts shipped inside lifelines, loaded through the package's loaders.

- ``stanford_heart``: Stanford heart transplant programme (Crowley and Hu 1977, JASA 72:27-36;
  lifelines ``load_stanford_heart_transplants``): 103 patients accepted for transplant, states
  waiting -> transplanted -> dead and waiting -> dead, days since acceptance; covariates age
  (years), year (of acceptance, years since 1 Nov 1967) and surgery (prior bypass, 0/1).
- ``gbsg2``: German Breast Cancer Study Group 2 (Schumacher et al. 1994, JCO 12:2086-2093;
  lifelines ``load_gbsg2``): 686 patients, recurrence-free survival in days with hormone therapy
  (horTh) and tumour covariates, as the one transition disease_free -> recurrence_or_death.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from trajectories.cohort import Cohort
from trajectories.errors import TrajectoriesError
from trajectories.io import from_mstate, from_survival_table

STANFORD_STATES = ["waiting", "transplanted", "dead"]
STANFORD_AGE_CENTER = 48.0
"""lifelines (like R's survival::jasa1) stores age minus 48 years."""
GBSG2_COVARIATES = ["horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec", "estrec"]


def stanford_mstate() -> pl.DataFrame:
    """The Stanford counting-process rows (start, stop, event, transplant) in mstate's long
    format: a waiting row at risk of transplant (1 -> 2) and death (1 -> 3), a transplanted
    row at risk of death (2 -> 3)."""
    from lifelines.datasets import load_stanford_heart_transplants

    rows = pl.from_pandas(load_stanford_heart_transplants()).with_columns(
        (pl.col("age") + STANFORD_AGE_CENTER).alias("age"))
    transplanted_ids = rows.filter(pl.col("transplant") == 1).get_column("id").unique()
    waiting = rows.filter(pl.col("transplant") == 0)
    common = [pl.col("id"), pl.col("start").alias("Tstart"), pl.col("stop").alias("Tstop"),
              pl.col("age"), pl.col("year"), pl.col("surgery")]
    to_transplant = waiting.select(
        *common, pl.lit(1).alias("from"), pl.lit(2).alias("to"),
        pl.col("id").is_in(transplanted_ids.implode()).cast(pl.Int64).alias("status"))
    waiting_death = waiting.select(*common, pl.lit(1).alias("from"), pl.lit(3).alias("to"),
                                   pl.col("event").cast(pl.Int64).alias("status"))
    after_death = rows.filter(pl.col("transplant") == 1).select(
        *common, pl.lit(2).alias("from"), pl.lit(3).alias("to"),
        pl.col("event").cast(pl.Int64).alias("status"))
    return pl.concat([to_transplant, waiting_death, after_death]).sort("id", "Tstart", "to")


def stanford_heart() -> Cohort:
    """The Stanford heart transplant cohort (103 persons, three states)."""
    return from_mstate(stanford_mstate(), state_names=STANFORD_STATES, death_states=["dead"],
                       covariates=["age", "year", "surgery"], age_col="age",
                       time_unit="days")


def gbsg2() -> Cohort:
    """The GBSG2 cohort: disease_free -> recurrence_or_death (absorbing, not death)."""
    from lifelines.datasets import load_gbsg2

    return from_survival_table(load_gbsg2(), "time", "cens", covariates=GBSG2_COVARIATES,
                               age_col="age", time_unit="days", initial_state="disease_free",
                               event_state="recurrence_or_death", event_is_death=False)


REFERENCES: dict[str, Callable[[], Cohort]] = {"stanford_heart": stanford_heart,
                                               "gbsg2": gbsg2}
"""Built-in reference datasets by name (for ``trajectories fit NAME``)."""


def load_reference(name: str) -> Cohort:
    """A built-in reference cohort by name."""
    if name not in REFERENCES:
        raise TrajectoriesError(f"no built-in reference {name!r}; available: {sorted(REFERENCES)}")
    return REFERENCES[name]()


def transplant_hazard_ratio(cohort: Cohort, adjust: tuple[str, ...] = ()) -> dict[str, float]:
    """Hazard ratio of death after versus before transplant (transplant as a time-varying
    covariate, lifelines CoxTimeVaryingFitter), optionally adjusted for person covariates.

    Returns log_hr, std_error, hazard_ratio and its 95% interval (lower, upper).
    """
    from lifelines import CoxTimeVaryingFitter

    spells = (cohort.state_spells().filter(pl.col("state").is_in(["waiting", "transplanted"]))
              .filter(pl.col("stop") > pl.col("start"))
              .join(cohort.persons.select("person_id", *adjust), on="person_id"))
    frame = spells.select(
        "person_id", "start", "stop", *adjust,
        (pl.col("state") == "transplanted").cast(pl.Int64).alias("transplant"),
        (pl.col("next_state") == "dead").fill_null(False).cast(pl.Int64).alias("death"),
    ).to_pandas()
    fitted = CoxTimeVaryingFitter().fit(frame, id_col="person_id", event_col="death",
                                        start_col="start", stop_col="stop")
    log_hr = float(fitted.params_["transplant"])
    se = float(fitted.standard_errors_["transplant"])
    return {"log_hr": log_hr, "std_error": se, "hazard_ratio": float(np.exp(log_hr)),
            "lower": float(np.exp(log_hr - 1.959963984540054 * se)),
            "upper": float(np.exp(log_hr + 1.959963984540054 * se))}
