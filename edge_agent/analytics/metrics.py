"""Pure store metrics over committed facts: dwell statistics, shelf
interactions, occupancy with drift correction, zone concurrency."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def dwell_summary(dwells: Sequence[float], passing_max: float, engaged_min: float) -> dict:
    """Median and p90 dwell (seconds; numpy's linear-interpolated percentiles) and
    the split: passing < ``passing_max`` ≤ browsing < ``engaged_min`` ≤ engaged."""
    values = np.asarray(list(dwells), dtype=float)
    if values.size == 0:
        return {"visits": 0, "dwell_median_s": None, "dwell_p90_s": None, "passing": 0, "browsing": 0, "engaged": 0}
    return {
        "visits": int(values.size),
        "dwell_median_s": round(float(np.percentile(values, 50)), 2),
        "dwell_p90_s": round(float(np.percentile(values, 90)), 2),
        "passing": int((values < passing_max).sum()),
        "browsing": int(((values >= passing_max) & (values < engaged_min)).sum()),
        "engaged": int((values >= engaged_min).sum()),
    }


def interaction_summary(visits: Iterable[tuple[int, bool, int]]) -> dict:
    """``visits``: (track id, interaction, reaches) of finished shelf visits.

    Passers-by are visits (a person stepping into the shelf area); an interaction
    is a visit that stayed long enough or reached in, so the rate is ≤ 1.
    """
    rows = list(visits)
    passers_by = len(rows)
    interactions = sum(1 for _, interaction, _ in rows if interaction)
    return {
        "passers_by": passers_by,
        "interactions": interactions,
        "unique_visitors": len({track for track, _, _ in rows}),
        "reaches": sum(reaches for _, _, reaches in rows),
        "interaction_rate": round(interactions / passers_by, 4) if passers_by else None,
    }


@dataclass(frozen=True)
class OccupancyFold:
    value: int  # occupancy at the end
    peak: int  # highest value reached inside the window (including its start value)
    clamped: int  # outs ignored because occupancy was already 0 (drift made visible)


def fold_occupancy(changes: Iterable[tuple[float, int]], resets: Iterable[float], window_start: float,
                   window_end: float) -> OccupancyFold:
    """Running occupancy from (ts, +1/−1) changes: never below zero (an out at
    zero is ignored and counted as ``clamped``), back to zero at every reset
    time. ``peak`` is the highest value during [window_start, window_end),
    starting from the value at window_start; changes after the window are ignored."""
    timeline = sorted([(ts, 0, 0) for ts in resets] + [(ts, 1, delta) for ts, delta in changes])
    value = clamped = 0
    peak: int | None = None
    for ts, is_change, delta in timeline:
        if ts >= window_end:
            break
        if peak is None and ts >= window_start:
            peak = value
        if not is_change:
            value = 0
            continue
        if delta < 0 and value == 0:
            clamped += 1
            continue
        value += delta
        if peak is not None:
            peak = max(peak, value)
    return OccupancyFold(value, value if peak is None else peak, clamped)


def concurrency(intervals: Iterable[tuple[float, float | None]], start: float, end: float) -> tuple[int, int]:
    """(people inside at ``end``, peak inside during [start, end)) from visit
    intervals (enter, exit or None while still inside)."""
    points: list[tuple[float, int]] = []
    at_end = 0
    for enter, leave in intervals:
        if enter >= end or (leave is not None and leave < start):
            continue
        if leave is None or leave >= end:
            at_end += 1
        points.append((max(enter, start), 1))
        if leave is not None and leave < end:
            points.append((leave, -1))
    current = peak = 0
    for _, delta in sorted(points, key=lambda p: (p[0], -p[1])):
        current += delta
        peak = max(peak, current)
    return at_end, peak
