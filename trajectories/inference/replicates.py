"""Finding the cohorts to analyse: one cohort directory, or a folder of ``replicate-<i>``
cohorts written by one ``trajectories simulate --replicates m`` run, with the ``replicate``
manifest key that says how they were made (index, m, draws, n_reference)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajectories.cohort import MANIFEST_FILE, Cohort, is_partitioned
from trajectories.errors import InferenceError
from trajectories.inference.rules import DRAWS, NEEDS_BETWEEN, RULE_FOR_DRAWS, RULES

REPLICATE_KEY = "replicate"
"""Manifest key of a synthetic cohort made from a fitted model: {"index", "m", "draws",
"n_reference"}."""

REPLICATE_DIR = re.compile(r"replicate-(\d+)")


@dataclass(frozen=True)
class ReplicateInfo:
    """A manifest's ``replicate`` key, checked."""

    index: int
    m: int
    draws: str
    n_reference: int


@dataclass(frozen=True)
class Replicates:
    """The cohorts of one analysis: m synthetic replicates of one run, or one real cohort
    (``draws`` and ``n_reference`` None)."""

    source: Path
    cohorts: list[Cohort]
    names: list[str]
    draws: str | None
    n_reference: int | None
    folder: bool  # a folder of replicate-* directories, not one cohort directory

    @property
    def m(self) -> int:
        return len(self.cohorts)

    @property
    def real(self) -> bool:
        return self.draws is None

    @property
    def n_synthetic(self) -> float:
        """Mean persons per replicate."""
        return sum(c.n_persons for c in self.cohorts) / self.m


def replicate_info(manifest_extra: dict[str, Any] | None, where: str) -> ReplicateInfo | None:
    """The checked ``replicate`` key of a manifest's extra keys, or None without one."""
    value = (manifest_extra or {}).get(REPLICATE_KEY)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InferenceError(f"{where}: '{REPLICATE_KEY}' must be an object with index, m, "
                             f"draws and n_reference, got {value!r}")
    for key in ("index", "m", "n_reference"):
        number = value.get(key)
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise InferenceError(f"{where}: '{REPLICATE_KEY}.{key}' must be a whole number "
                                 f">= 1, got {number!r}")
    if value.get("draws") not in DRAWS:
        raise InferenceError(f"{where}: '{REPLICATE_KEY}.draws' must be one of {list(DRAWS)}, "
                             f"got {value.get('draws')!r}")
    if value["index"] > value["m"]:
        raise InferenceError(f"{where}: '{REPLICATE_KEY}.index' {value['index']} exceeds m = "
                             f"{value['m']}")
    return ReplicateInfo(value["index"], value["m"], value["draws"], value["n_reference"])


def read_replicates(directory: str | Path) -> Replicates:
    """One cohort directory (real, or synthetic with a ``replicate`` key), or a folder of
    ``replicate-<i>`` cohorts; replicates must agree on m, draws, n_reference and reference
    fingerprint, and be all there (indices 1..m)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InferenceError(f"{directory}: no such directory")
    if (directory / MANIFEST_FILE).is_file() or is_partitioned(directory):
        cohort = Cohort.read(directory)
        info = replicate_info(cohort.manifest.model_extra, str(directory / MANIFEST_FILE))
        return Replicates(directory, [cohort], [directory.name],
                          None if info is None else info.draws,
                          None if info is None else info.n_reference, folder=False)
    found = sorted(((int(match.group(1)), path) for path in directory.iterdir()
                    if path.is_dir() and (match := REPLICATE_DIR.fullmatch(path.name))),
                   key=lambda pair: pair[0])
    if not found:
        raise InferenceError(f"{directory}: no cohort here ({MANIFEST_FILE} missing) and no "
                             "replicate-* cohort directories in it")
    cohorts, infos = [], []
    for _, path in found:
        cohort = Cohort.read(path)
        info = replicate_info(cohort.manifest.model_extra, str(path / MANIFEST_FILE))
        if info is None:
            raise InferenceError(
                f"{path / MANIFEST_FILE}: no '{REPLICATE_KEY}' key; every cohort of a folder of "
                "replicates carries one (trajectories simulate --model M --replicates m)")
        cohorts.append(cohort)
        infos.append(info)
    names = [path.name for _, path in found]
    for field in ("m", "draws", "n_reference"):
        _agree(directory, names, [getattr(i, field) for i in infos], field)
    _agree(directory, names, [c.manifest.reference_fingerprint for c in cohorts],
           "reference_fingerprint")
    m, indices = infos[0].m, sorted(i.index for i in infos)
    if indices != list(range(1, m + 1)):
        missing = sorted(set(range(1, m + 1)) - set(indices))
        repeated = sorted({i for i in indices if indices.count(i) > 1})
        raise InferenceError(
            f"{directory}: the manifests say m = {m} replicates but their indices are "
            f"{indices}" + (f"; missing {missing}" if missing else "")
            + (f"; repeated {repeated}" if repeated else "")
            + ": analyse the whole set of one run")
    return Replicates(directory, cohorts, names, infos[0].draws, infos[0].n_reference,
                      folder=True)


def _agree(directory: Path, names: list[str], values: list, field: str) -> None:
    if len(set(values)) > 1:
        shown = ", ".join(f"{n} has {v!r}" for n, v in zip(names, values, strict=True))
        raise InferenceError(f"{directory}: replicates disagree on {field} ({shown}); combine "
                             "only the replicates of one simulate run")


def choose_rule(replicates: Replicates, rule: str | None) -> str:
    """The combining rule: ``rule`` if given (checked against what the cohorts allow), else
    ``real`` for a real cohort and the rule of the manifests' draws (none -> simple,
    asymptotic or bootstrap -> proper)."""
    where = str(replicates.source)
    if rule is not None and rule not in RULES and rule != "auto":
        raise InferenceError(f"unknown combining rule {rule!r}; choose auto or one of "
                             f"{', '.join(RULES)}")
    if rule in (None, "auto"):
        return "real" if replicates.real else RULE_FOR_DRAWS[str(replicates.draws)]
    if replicates.real:
        if rule != "real":
            raise InferenceError(
                f"{where}: a real cohort (no '{REPLICATE_KEY}' key in {MANIFEST_FILE}) is "
                f"analysed as real data; rule {rule!r} is for synthetic replicates")
        return rule
    if rule == "real":
        raise InferenceError(f"{where}: rule 'real' would treat synthetic persons as real (the "
                             "naive interval, shown beside every result); choose a synthetic "
                             "rule or auto")
    if rule in NEEDS_BETWEEN and replicates.m < 2:
        if not replicates.folder:
            raise InferenceError(
                f"{where}: one cohort, no replicates; rule {rule!r} needs m >= 2 replicates "
                "(trajectories simulate --model M --replicates m), or use rule auto")
        raise InferenceError(f"{where}: m = 1 replicate; rule {rule!r} needs m >= 2 (it "
                             "estimates the between-replicate variance), or use rule auto")
    if rule == "fully_synthetic" and replicates.draws == "none":
        raise InferenceError(f"{where}: rule 'fully_synthetic' needs parameter draws (draws "
                             "'asymptotic' or 'bootstrap'); these replicates have draws 'none' "
                             "(use rule simple)")
    return rule
