"""The mapping file (TOML): which concepts or source values become which cohort codes, where
the index is, how person fields and deaths are filled, and what to do with unmapped rows; also
the mapping that undoes an export, and the mapping written back as TOML."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trajectories.cohort import CODE_PATTERN, EXITS, Cohort
from trajectories.errors import OmopImportError
from trajectories.io.omop.concepts import DOMAIN_TABLES, concept_table
from trajectories.io.omop.read.rows import EVENT_TABLES

Policy = Literal["drop", "error"]


class ConceptRule(BaseModel):
    """Rows of ``table`` with this concept id and/or source value become events ``code``."""

    model_config = ConfigDict(extra="forbid")

    table: str
    concept_id: int | None = None
    source_value: str | None = None
    code: str

    @field_validator("table")
    @classmethod
    def _known_table(cls, table: str) -> str:
        if table not in EVENT_TABLES:
            raise ValueError(f"table {table!r} is not one of {sorted(EVENT_TABLES)}")
        return table

    @field_validator("code")
    @classmethod
    def _namespaced(cls, code: str) -> str:
        import re

        if not re.match(CODE_PATTERN, code):
            raise ValueError(
                f"code {code!r} must be namespaced like 'state:progressed' or 'visit:outpatient'"
            )
        return code


class IndexSpec(BaseModel):
    """Where follow-up starts and the state every person is in at the start."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["observation_period", "concept"] = "observation_period"
    table: str | None = None
    concept_id: int | None = None
    source_value: str | None = None
    initial_state: str | None = None
    before_index: Policy = "drop"


class PersonsSpec(BaseModel):
    """How person fields the CDM lacks are filled."""

    model_config = ConfigDict(extra="forbid")

    default_site: str = "unknown"
    alive_exit: str = "censored"
    absorbing_states: list[str] = Field(default_factory=list)

    @field_validator("alive_exit")
    @classmethod
    def _known_exit(cls, exit_: str) -> str:
        if exit_ not in EXITS or exit_ in ("death", "absorbed"):
            raise ValueError(f"alive_exit {exit_!r} must be a censoring exit: {list(EXITS[2:])}")
        return exit_


class DeathSpec(BaseModel):
    """The DEATH table: exit 'death' at the death date, and optionally an event ``code``."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = None
    after_death: Policy = "drop"

    @field_validator("code")
    @classmethod
    def _namespaced(cls, code: str | None) -> str | None:
        return None if code is None else ConceptRule._namespaced(code)


class UnmappedSpec(BaseModel):
    """Rows no rule maps: ``keep`` them as ``<domain>:<concept>`` events, or ``error``."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["keep", "error"] = "keep"


class OmopMapping(BaseModel):
    """The whole mapping file."""

    model_config = ConfigDict(extra="forbid")

    index: IndexSpec = Field(default_factory=IndexSpec)
    persons: PersonsSpec = Field(default_factory=PersonsSpec)
    death: DeathSpec = Field(default_factory=DeathSpec)
    unmapped: UnmappedSpec = Field(default_factory=UnmappedSpec)
    concepts: list[ConceptRule] = Field(default_factory=list)


def _check_rules(mapping: OmopMapping, where: str) -> None:
    """Every rule names a concept or a source value; no two rules share a key."""
    seen: dict[tuple, int] = {}
    for k, rule in enumerate(mapping.concepts):
        if rule.concept_id is None and rule.source_value is None:
            raise OmopImportError(
                f"{where}: concepts[{k}] ({rule.code}) needs concept_id or source_value"
            )
        key = (rule.table, rule.concept_id, rule.source_value)
        if key in seen:
            raise OmopImportError(
                f"{where}: concepts[{seen[key]}] and concepts[{k}] both match {rule.table} "
                f"concept_id={rule.concept_id} source_value={rule.source_value!r}"
            )
        seen[key] = k
    index = mapping.index
    if index.source == "concept" and (
        index.table not in EVENT_TABLES or (index.concept_id is None and index.source_value is None)
    ):
        raise OmopImportError(
            f"{where}: index.source = 'concept' needs index.table (one of "
            f"{sorted(EVENT_TABLES)}) and index.concept_id or index.source_value"
        )


def load_mapping(mapping: str | Path | Mapping[str, Any] | OmopMapping) -> OmopMapping:
    """The mapping from a TOML file path, a dict of the same shape, or a model."""
    if isinstance(mapping, OmopMapping):
        _check_rules(mapping, "mapping")
        return mapping
    where = "mapping"
    if isinstance(mapping, str | Path):
        where = str(mapping)
        try:
            data = tomllib.loads(Path(mapping).read_text(encoding="utf-8"))
        except OSError as error:
            raise OmopImportError(f"{where}: cannot read mapping: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise OmopImportError(f"{where}: invalid TOML: {error}") from None
    else:
        data = dict(mapping)
    try:
        model = OmopMapping.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise OmopImportError(f"{where}: {field}: {first['msg']}") from None
    _check_rules(model, where)
    return model


def mapping_from_concepts(
    concepts: Mapping[str, Any] | None, codes: Sequence[str] | None = None
) -> OmopMapping:
    """The mapping that undoes the OMOP export of codes described by ``concepts``.

    ``concepts`` is a cohort manifest's ``concepts`` (code -> domain, concept_id, source_value);
    ``codes`` adds codes it lacks (they export with their namespace's defaults). Each code gets
    a rule on its exported table, concept id (when not 0) and source value; the first
    death-domain code becomes the DEATH table's event, and every death-domain code also gets an
    OBSERVATION rule for the extra death events the exporter re-routes there.
    """
    table = concept_table(sorted({*(concepts or {}), *(codes or ())}), concepts)
    rules, death_code = [], None
    for row in table.iter_rows(named=True):  # distinct codes: a handful
        concept_id = row["concept_id"] or None
        if row["domain"] == "death":
            death_code = death_code or row["code"]
            targets = ["observation"]
        else:
            targets = [DOMAIN_TABLES[row["domain"]]]
        rules += [
            ConceptRule(table=t, concept_id=concept_id, source_value=row["source_value"],
                        code=row["code"])
            for t in targets
        ]
    mapping = OmopMapping(death=DeathSpec(code=death_code), concepts=rules)
    _check_rules(mapping, "concepts")
    return mapping


def mapping_from_cohort(cohort: Cohort) -> OmopMapping:
    """:func:`mapping_from_concepts` for a cohort's manifest concepts and event codes."""
    return mapping_from_concepts(
        getattr(cohort.manifest, "concepts", None),
        cohort.events.get_column("code").unique().to_list(),
    )


def _toml_value(value: Any) -> str:
    """A TOML literal for the plain values a mapping holds (text, numbers, booleans, lists)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def mapping_to_toml(mapping: OmopMapping) -> str:
    """The mapping as TOML text that :func:`load_mapping` reads back to an equal model (unset
    optional fields are left out)."""
    data = mapping.model_dump(exclude_none=True)
    lines = []
    for section in ("index", "persons", "death", "unmapped"):
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in data[section].items()]
        lines.append("")
    for rule in data["concepts"]:
        lines.append("[[concepts]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in rule.items()]
        lines.append("")
    return "\n".join(lines)
