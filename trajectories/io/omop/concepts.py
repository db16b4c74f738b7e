"""OMOP concepts for cohort codes, shared by the exporter, the importer and the MEDS writer:
default domains by namespace, the CDM table of each domain, standard visit and gender concepts,
and :func:`concept_table`."""

from __future__ import annotations

from typing import Any

import polars as pl

from trajectories.errors import OmopError

EHR = 32817
"""Type concept 'EHR': the default provenance of every record."""
GENDER_CONCEPTS = {"M": 8507, "F": 8532}
"""Sex -> OMOP gender concept (export); :data:`GENDERS` reads it back (import)."""
GENDERS = {concept: sex for sex, concept in GENDER_CONCEPTS.items()}
VISIT_CONCEPTS = {
    "inpatient": 9201,
    "ip": 9201,
    "hospitalisation": 9201,
    "hospitalization": 9201,
    "outpatient": 9202,
    "op": 9202,
    "ambulatory": 9202,
    "clinic": 9202,
    "emergency": 9203,
    "emergency_room": 9203,
    "er": 9203,
    "ed": 9203,
    "er_inpatient": 262,
    "home": 581476,
    "telehealth": 5083,
    "laboratory": 32036,
    "lab": 32036,
    "pharmacy": 581458,
}
"""Visit concept by visit type name, used when the scenario maps a visit to concept 0."""
NAMESPACE_DOMAINS = {
    "state": "condition",
    "condition": "condition",
    "visit": "visit",
    "measurement": "measurement",
    "drug": "drug",
    "procedure": "procedure",
    "observation": "observation",
    "death": "death",
}
"""Default domain of an event code by its namespace; any other namespace -> observation."""
DOMAIN_TABLES = {
    "condition": "condition_occurrence",
    "observation": "observation",
    "procedure": "procedure_occurrence",
    "measurement": "measurement",
    "drug": "drug_exposure",
    "visit": "visit_occurrence",
    "death": "death",
}
CONCEPT_SCHEMA = {
    "code": pl.String(),
    "domain": pl.String(),
    "concept_id": pl.Int64(),
    "source_value": pl.String(),
    "unit_concept_id": pl.Int64(),
    "unit_source_value": pl.String(),
    "type_concept_id": pl.Int64(),
}


def concept_table(codes: list[str], concepts: dict[str, Any] | None) -> pl.DataFrame:
    """One row per event code: domain, concept and source value, units, type concept.

    ``concepts`` is the manifest's ``concepts`` entry (code -> mapping); codes it lacks, or a
    cohort without one, default by namespace with concept 0 and the code's name as source value.
    Visits mapped to concept 0 get the standard visit concept of their type name if known.
    """
    concepts = concepts or {}
    rows = []
    for code in sorted(set(codes)):  # distinct codes: a handful, not rows
        namespace, _, name = code.partition(":")
        mapping = concepts.get(code) or {}
        if not isinstance(mapping, dict):
            raise OmopError(f"manifest concepts[{code!r}]: expected a table, got {mapping!r}")
        domain = mapping.get("domain") or NAMESPACE_DOMAINS.get(namespace, "observation")
        if domain not in DOMAIN_TABLES:
            raise OmopError(
                f"manifest concepts[{code!r}].domain: {domain!r} is not one of "
                f"{sorted(DOMAIN_TABLES)}"
            )
        concept_id = int(mapping.get("concept_id") or 0)
        if domain == "visit" and concept_id == 0:
            concept_id = VISIT_CONCEPTS.get(name.lower().replace("-", "_").replace(" ", "_"), 0)
        unit_source = mapping.get("unit_source_value")
        unit_concept = mapping.get("unit_concept_id")
        if unit_concept is None and unit_source is not None:
            unit_concept = 0  # a unit is known but not mapped
        rows.append(
            {
                "code": code,
                "domain": domain,
                "concept_id": concept_id,
                "source_value": mapping.get("source_value") or name or code,
                "unit_concept_id": unit_concept,
                "unit_source_value": unit_source,
                "type_concept_id": int(mapping.get("type_concept_id") or EHR),
            }
        )
    return pl.DataFrame(rows, schema=CONCEPT_SCHEMA)
