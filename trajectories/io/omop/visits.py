"""Which visit an OMOP event row belongs to: the visit of the same person covering its time,
found with a running maximum and one vectorised binary search (no Python loops)."""

from __future__ import annotations

import numpy as np
import polars as pl


def _running_max(segment: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` that restarts where ``segment`` changes (each segment's
    rows consecutive): a doubling scan, one vectorised step per power of two up to the
    longest segment."""
    out = values.copy()
    step = 1
    while step < out.size:
        same = segment[step:] == segment[:-step]
        if not same.any():
            break
        out[step:] = np.maximum(out[step:], np.where(same, out[:-step], -np.inf))
        step *= 2
    return out


def _last_at_or_before(
    segment: np.ndarray, keys: np.ndarray, query_segment: np.ndarray, query_keys: np.ndarray
) -> np.ndarray:
    """For each query, the index of the last row of its segment whose key is <= the query's
    key, or -1 (rows sorted by segment, then key).

    One binary search per query on (segment, key) pairs packed as complex numbers, which
    numpy orders by real part, then imaginary part: exact for integer segments below 2**53.
    """
    def pack(segments: np.ndarray, values: np.ndarray) -> np.ndarray:
        packed = np.empty(segments.size, dtype=np.complex128)
        packed.real, packed.imag = segments, values
        return packed

    found = np.searchsorted(pack(segment, keys), pack(query_segment, query_keys),
                            side="right") - 1
    same = segment[np.maximum(found, 0)] == query_segment
    return np.where((found >= 0) & same, found, -1)


def link_visits(others: pl.DataFrame, visits: pl.DataFrame, first_id: int) -> pl.Series:
    """visit_occurrence_id of the visit of the same person covering each event's time
    (visits numbered from ``first_id`` in row order).

    Among covering visits the one that started last wins; if it does not cover, the visit
    ending last among those already started is the only candidate. Both frames are in
    (person, time) order: a running maximum and one vectorised binary search, no loops.
    """
    if visits.height == 0 or others.height == 0:
        return pl.Series("visit_occurrence_id", [None] * others.height, dtype=pl.Int64)
    person = visits.get_column("_person").to_numpy()
    start = visits.get_column("time").to_numpy()
    end = visits.select(pl.coalesce("end_time", "time")).to_series().to_numpy()
    longest_end = _running_max(person, end)
    position = np.arange(visits.height)
    longest = np.maximum.accumulate(np.where(end == longest_end, position, -1))
    time = others.get_column("time").to_numpy()
    last = _last_at_or_before(person, start, others.get_column("_person").to_numpy(), time)
    found = last >= 0
    last = np.where(found, last, 0)
    chosen = np.where(
        found & (end[last] >= time),
        last,
        np.where(found & (longest_end[last] >= time), longest[last], -1),
    )
    ids = pl.Series("visit_occurrence_id", chosen + first_id, dtype=pl.Int64)
    return ids.set(pl.Series(chosen < 0), None)
