"""The one exception family users can cause; the CLI prints these without a traceback."""

from __future__ import annotations


class TrajectoriesError(Exception):
    """Base class for every error a user can cause with bad input."""


class ScenarioError(TrajectoriesError):
    """A scenario file is unreadable or declares something impossible."""


class CohortSchemaError(TrajectoriesError):
    """A cohort's tables break the data model (column, type, or a temporal rule)."""


class ReferenceDataError(TrajectoriesError):
    """Reference data handed to a loader cannot be turned into a cohort."""


class ShardedRunError(TrajectoriesError):
    """A partitioned cohort directory cannot be written, resumed or read as asked."""


class ExecutorError(TrajectoriesError):
    """An executor cannot be set up or lost a worker (bad option, unreachable scheduler...)."""


class OmopError(TrajectoriesError):
    """An OMOP export or check cannot proceed: a cohort the CDM cannot hold, a refused output
    path, an unreadable database or specification file."""


class OmopImportError(OmopError):
    """An OMOP database or a mapping cannot be turned into a cohort."""


class MedsError(TrajectoriesError):
    """A cohort cannot be written as MEDS, or a MEDS directory cannot be read as a cohort."""


class FitError(TrajectoriesError):
    """A model cannot be fitted to the reference (too few events, unknown family, no data)."""


class CovariateError(TrajectoriesError):
    """A reference covariate cannot be modelled (missing values, unusable level names)."""


class EndpointError(TrajectoriesError):
    """An endpoint definition is invalid or cannot be applied to a cohort."""


class SurvivalDataError(TrajectoriesError):
    """Survival data handed to an estimator is unusable (negative time, bad codes, ...)."""


class CoxConvergenceError(SurvivalDataError):
    """A Cox model could not be fitted (collinear covariates, perfect separation...): the
    checks resting on it are not evaluable, the rest of a validation goes on."""


class CalibrationError(TrajectoriesError):
    """Targets or parameters that cannot be calibrated (unknown endpoint, state, covariate)."""


class InferenceError(TrajectoriesError):
    """An analysis of synthetic replicates (or of a real cohort augmented with a synthetic one)
    cannot be run as asked: unknown covariate or endpoint, replicates that disagree, a combining
    rule that needs more replicates than there are."""


class PrivacyWarning(UserWarning):
    """An output that discloses more about real persons than the defaults would (e.g. whole
    reference rows resampled into synthetic persons)."""


class PrivateTrainingError(TrajectoriesError):
    """Differentially private (DP-SGD) training cannot proceed as asked: a budget that cannot
    be reached, or a network opacus cannot compute per-sample gradients for."""
