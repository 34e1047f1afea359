"""Zone visits: when a person's anchor is inside a polygon, for how long, and
whether a stay at a shelf was a product interaction. Pure: no frames, no I/O.

A visit opens on the first frame a track is inside. Gaps shorter than
``exit_grace`` (box flicker at the edge, a missed detection) join into one
visit; the visit closes at the last moment the track was seen inside. With a
pose model, a wrist keypoint inside a shelf polygon also counts as inside, and
each wrist entering the polygon is one *reach*.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..geometry import Point, point_in_polygon


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    zone_id: str
    polygon: tuple[Point, ...]
    kind: Literal["zone", "shelf", "staff"] = "zone"
    anchor: Literal["feet", "centre"] = "feet"
    product: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneObservation:
    track_id: int
    feet: Point  # box bottom centre, 0–1
    centre: Point  # box centre, 0–1
    staff: bool = False
    wrists: tuple[Point, ...] | None = None  # wrist keypoints (0–1) when a pose model ran


@dataclass(frozen=True, slots=True)
class ZoneEvent:
    """``enter`` when a visit opens; ``exit`` when it closes (with its totals)."""

    event: Literal["enter", "exit"]
    zone_id: str
    track_id: int
    enter_ts: float
    exit_ts: float | None = None
    staff: bool = False
    interaction: bool = False
    reaches: int = 0
    closed_by: str = "exit"

    @property
    def dwell(self) -> float | None:
        return None if self.exit_ts is None else self.exit_ts - self.enter_ts


def wrists_inside(wrists: Iterable[Point] | None, polygon: Sequence[Point]) -> bool:
    """True when any given wrist keypoint lies inside the polygon."""
    return any(point_in_polygon(w, polygon) for w in wrists or ())


@dataclass(slots=True)
class _Visit:
    enter_ts: float
    last_inside_ts: float
    staff: bool
    reaches: int = 0
    wrist_was_inside: bool = False


@dataclass
class ZoneTracker:
    zones: list[ZoneSpec]
    exit_grace: float = 1.0
    interaction_min_seconds: float = 5.0
    _open: dict[tuple[str, int], _Visit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Staff-only areas decide who is staff (see the pipeline); they hold no visits.
        self._visited = [zone for zone in self.zones if zone.kind != "staff"]

    def update(self, observations: Iterable[ZoneObservation], ts: float) -> list[ZoneEvent]:
        events: list[ZoneEvent] = []
        seen: set[tuple[str, int]] = set()
        for obs in observations:
            for zone in self._visited:
                key = (zone.zone_id, obs.track_id)
                point = obs.feet if zone.anchor == "feet" else obs.centre
                inside = point_in_polygon(point, zone.polygon)
                wrist_inside = zone.kind == "shelf" and wrists_inside(obs.wrists, zone.polygon)
                visit = self._open.get(key)
                if not (inside or wrist_inside):
                    if visit is not None:
                        visit.wrist_was_inside = False
                    continue
                seen.add(key)
                if visit is None:
                    visit = self._open[key] = _Visit(ts, ts, obs.staff)
                    events.append(ZoneEvent("enter", zone.zone_id, obs.track_id, ts, staff=obs.staff))
                visit.last_inside_ts = ts
                visit.staff = visit.staff or obs.staff
                if wrist_inside and not visit.wrist_was_inside:
                    visit.reaches += 1
                visit.wrist_was_inside = wrist_inside
        for key, visit in list(self._open.items()):
            if key not in seen and ts - visit.last_inside_ts >= self.exit_grace:
                events.append(self._close(key, "exit"))
        return events

    def _close(self, key: tuple[str, int], how: str) -> ZoneEvent:
        visit = self._open.pop(key)
        dwell = visit.last_inside_ts - visit.enter_ts
        interaction = self._is_shelf(key[0]) and (dwell >= self.interaction_min_seconds or visit.reaches > 0)
        return ZoneEvent("exit", key[0], key[1], visit.enter_ts, visit.last_inside_ts, visit.staff,
                         interaction, visit.reaches, how)

    def _is_shelf(self, zone_id: str) -> bool:
        return any(z.zone_id == zone_id and z.kind == "shelf" for z in self.zones)

    def end_tracks(self, track_ids: Iterable[int], how: str = "exit") -> list[ZoneEvent]:
        """Tracks that are gone for good: close their visits at their last time inside."""
        ids = set(track_ids)
        return [self._close(key, how) for key in list(self._open) if key[1] in ids]

    def close_all(self, how: str = "shutdown") -> list[ZoneEvent]:
        return [self._close(key, how) for key in list(self._open)]

    def occupancy(self) -> dict[str, int]:
        counts = {zone.zone_id: 0 for zone in self._visited}
        for zone_id, _ in self._open:
            counts[zone_id] += 1
        return counts


def starts_in_staff_zone(point: Point, zones: Iterable[ZoneSpec]) -> bool:
    return any(zone.kind == "staff" and point_in_polygon(point, zone.polygon) for zone in zones)
