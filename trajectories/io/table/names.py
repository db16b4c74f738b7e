"""Valid scenario names for whatever real data calls its sites, levels, states and columns.

Scenario names start with a letter and hold letters, digits, ``_``, ``.`` and ``-`` (at most
64 characters). Real data has "Univ. of Zurich", institution ``1``, level ``"ECOG 2"``: a
loader maps each such value to a valid name once, the same way everywhere, keeps the mapping
in the cohort's manifest (``name_mapping``) and never merges two values into one name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

VALID_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
MAX_LENGTH = 64
_INVALID_RUN = re.compile(r"[^A-Za-z0-9_.\-]+")
_SYMBOLS = (("<=", "le"), (">=", "ge"), ("<", "lt"), (">", "gt"), ("+", "plus"), ("%", "pct"),
            ("=", "eq"))
"""Symbols that carry meaning in levels such as '<=20', '>40', 'Lev+5FU': spelt out."""


def is_valid_name(value: Any) -> bool:
    """Whether ``value`` can be used as is in a scenario (state, site, level, covariate)."""
    return isinstance(value, str) and len(value) <= MAX_LENGTH and bool(VALID_NAME.match(value))


def _candidate(value: Any, prefix: str) -> str:
    text = value if isinstance(value, str) else _number_text(value)
    # accents dropped, not the letters: 'Hôpital Cochin' -> 'Hopital_Cochin'
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    for symbol, word in _SYMBOLS:
        text = text.replace(symbol, f" {word} ")
    text = _INVALID_RUN.sub("_", text.strip()).strip("_")
    if not text or not text[0].isalpha():
        text = f"{prefix}_{text}" if text else prefix
    return text[:MAX_LENGTH]


def _number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def valid_names(values: Iterable[Any], prefix: str, taken: Iterable[str] = ()) -> dict[Any, str]:
    """Each distinct value -> a valid name: itself when valid, else its characters outside
    the allowed set folded to ``_`` and ``prefix`` put before one that does not start with a
    letter (site ``1`` -> ``site_1``; ``'<=20'`` -> ``le_20``, ``'Lev+5FU'`` ->
    ``Lev_plus_5FU``); a name already used gets ``_2``, ``_3``... Valid values
    keep their names, so mapping a valid set changes nothing."""
    values = list(dict.fromkeys(values))
    used = set(taken) | {v for v in values if is_valid_name(v)}
    mapping: dict[Any, str] = {}
    for value in values:
        if is_valid_name(value):
            mapping[value] = value
            continue
        base = _candidate(value, prefix)
        name, k = base, 2
        while name in used:
            suffix = f"_{k}"
            name, k = base[: MAX_LENGTH - len(suffix)] + suffix, k + 1
        used.add(name)
        mapping[value] = name
    return mapping


def changed(mapping: dict[Any, str]) -> dict[str, str]:
    """Only the entries whose name differs from the value, as text (for the manifest)."""
    return {_number_text(k) if not isinstance(k, str) else k: v
            for k, v in mapping.items() if k != v}
