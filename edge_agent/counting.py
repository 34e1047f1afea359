"""Line-crossing rules: tracks in, crossings out. Pure: no frames, no I/O.

A track counts when its anchor (the bottom centre of its box, where the feet
are) moves from one side of a counting line to the other *through the segment*.
On top of that geometry, :class:`LineRules` handles what inflates open-source
counters (each rule is off in ``LineRules()`` and on in the agent's defaults,
see ``edge_agent.analytics.settings``):

* **band** — positions within a band around the line belong to neither side,
  so a person standing on the line, or box jitter on it, counts nothing, and a
  U-turn inside the band counts nothing (a track first seen inside the band
  starts on the side it appeared on). The band is absolute (``band``) or
  relative to the person's box height (``band_body``), so it scales with how
  big people look on that camera;
* **cooldown** — a crossing is held for ``cooldown`` seconds; crossing back
  within that time cancels both (flicker), a later crossing back is a genuine
  second crossing (in, out, in again = 2 in, 1 out);
* **track quality** — a track's crossings are held until it has been seen in
  ``min_track_frames`` frames with a mean confidence ≥ ``min_track_confidence``;
  a track that ends before that counts nothing;
* **memory** — a crossing by a *new* track that appears where a track that
  just counted the same direction vanished (within ``memory`` seconds and
  ``memory_distance`` box heights) is an ID switch, not a second person;
* **count on exit** — optionally decide a track's direction only when it
  leaves: back-and-forth motion cancels out, each track counts at most once;
* **staff** — observations flagged ``staff`` produce crossings of kind
  ``"staff"``, stored apart from visitors.

Distances are measured in frame-height units (x is scaled by the aspect ratio)
so that a band of 0.1 box heights is the same physical band in x and y.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from .geometry import Point, segments_intersect

Direction = Literal["in", "out"]
Kind = Literal["visitor", "staff"]


@dataclass(frozen=True, slots=True)
class Crossing:
    """One counted crossing of one line by one track (``ts``: when it crossed)."""

    line_id: str
    track_id: int
    direction: Direction
    ts: float
    kind: Kind = "visitor"


@dataclass(frozen=True, slots=True)
class Observation:
    """One track in one frame: anchor in 0–1 coordinates, box height as a
    fraction of the frame height, detection confidence, staff flag."""

    track_id: int
    anchor: Point
    height: float = 0.0
    confidence: float = 1.0
    staff: bool = False


@dataclass(frozen=True)
class LineRules:
    band: float = 0.0  # half-width of the dead band, frame-height units
    band_body: float = 0.0  # ... or this fraction of the track's box height, whichever is larger
    cooldown: float = 0.0  # seconds a crossing waits; crossing back within it cancels both
    min_track_frames: int = 1
    min_track_confidence: float = 0.0
    memory: float = 0.0  # seconds an ID-switch re-count is looked for
    memory_distance: float = 1.0  # box heights between the vanished track and the new one
    count_on_exit: bool = False


@dataclass(slots=True)
class _Pending:
    direction: Direction
    ts: float


@dataclass(slots=True)
class _Track:
    first_ts: float
    first_anchor: Point
    last_ts: float
    last_anchor: Point
    height: float
    frames: int = 0
    confidence_sum: float = 0.0
    staff: bool = False
    side: int = 0  # last side seen outside the band, 0 until there is one
    side_anchor: Point = (0.0, 0.0)  # where it was last seen on that side
    pending: list[_Pending] = field(default_factory=list)
    net: int = 0  # count-on-exit: +1 per in, −1 per out
    last_ts_by_direction: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Counted:
    """A recent count, kept ``memory`` seconds to recognise an ID switch."""

    direction: Direction
    ts: float
    track_id: int


@dataclass
class LineCounter:
    """State for one line: each track's side, held crossings and recent counts."""

    line_id: str
    p1: Point
    p2: Point
    in_side: Literal["left", "right"] = "right"
    hysteresis: float = 0.0  # kept for callers of the first version: same as rules.band
    rules: LineRules = field(default_factory=LineRules)
    aspect: float = 1.0  # frame width / height
    _tracks: dict[int, _Track] = field(default_factory=dict)
    _recent: list[_Counted] = field(default_factory=list)
    _ended: dict[int, tuple[float, Point, float]] = field(default_factory=dict)  # id → last ts, anchor, height
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.hysteresis and not self.rules.band:
            self.rules = replace(self.rules, band=self.hysteresis)
        self.set_aspect(self.aspect)

    def set_aspect(self, aspect: float) -> None:
        """Frame width / height: distances are measured in frame heights."""
        self.aspect = aspect
        a, b = self._scaled(self.p1), self._scaled(self.p2)
        self._length = ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5

    @property
    def _in_sign(self) -> int:
        return 1 if self.in_side == "right" else -1

    def _scaled(self, point: Point) -> Point:
        return (point[0] * self.aspect, point[1])

    def _distance(self, point: Point) -> float:
        """Signed distance from the line, frame-height units; > 0 is the right-hand side."""
        a, b, p = self._scaled(self.p1), self._scaled(self.p2), self._scaled(point)
        return ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])) / self._length

    def _gap(self, p: Point, q: Point) -> float:
        a, b = self._scaled(p), self._scaled(q)
        return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5

    # -- per frame -----------------------------------------------------------------
    def update(self, observations: Iterable[Observation | tuple[int, Point]], ts: float) -> list[Crossing]:
        rules = self.rules
        for item in observations:
            obs = item if isinstance(item, Observation) else Observation(int(item[0]), item[1])
            track = self._tracks.get(obs.track_id)
            if track is None:
                track = self._tracks[obs.track_id] = _Track(ts, obs.anchor, ts, obs.anchor, obs.height)
            track.frames += 1
            track.confidence_sum += obs.confidence
            track.last_ts, track.last_anchor = ts, obs.anchor
            track.height = obs.height if track.frames == 1 else 0.7 * track.height + 0.3 * obs.height
            track.staff = track.staff or obs.staff
            band = max(rules.band, rules.band_body * track.height)
            distance = self._distance(obs.anchor)
            side = 1 if distance > max(band, 1e-12) else -1 if distance < -max(band, 1e-12) else 0
            if side == 0:
                if track.side == 0 and distance:
                    # First seen inside the band (people are often first detected right at a
                    # door): the side it appeared on is where it starts.
                    track.side, track.side_anchor = (1 if distance > 0 else -1), obs.anchor
                continue
            if track.side != 0 and side != track.side and segments_intersect(
                track.side_anchor, obs.anchor, self.p1, self.p2
            ):
                self._crossed(track, "in" if side == self._in_sign else "out", ts)
            track.side, track.side_anchor = side, obs.anchor
        return self._release(ts)

    def _crossed(self, track: _Track, direction: Direction, ts: float) -> None:
        if self.rules.count_on_exit:
            track.net += 1 if direction == "in" else -1
            track.last_ts_by_direction[direction] = ts
            return
        if track.pending and track.pending[-1].direction != direction and ts - track.pending[-1].ts < self.rules.cooldown:
            track.pending.pop()  # crossed back within the cooldown: flicker, neither counts
            self.stats["flicker"] += 2
            return
        track.pending.append(_Pending(direction, ts))

    def _qualified(self, track: _Track) -> bool:
        return (track.frames >= self.rules.min_track_frames
                and track.confidence_sum / track.frames >= self.rules.min_track_confidence)

    def _release(self, ts: float) -> list[Crossing]:
        released: list[Crossing] = []
        for track_id, track in self._tracks.items():
            while track.pending and ts - track.pending[0].ts >= self.rules.cooldown and self._qualified(track):
                self._emit(track_id, track, track.pending.pop(0), released)
        self._recent = [c for c in self._recent if ts - c.ts <= self.rules.memory]
        return released

    def _emit(self, track_id: int, track: _Track, pending: _Pending, out: list[Crossing]) -> None:
        if self._is_id_switch(track_id, track, pending):
            self.stats["id switch"] += 1
            return
        out.append(Crossing(self.line_id, track_id, pending.direction, pending.ts,
                            "staff" if track.staff else "visitor"))
        if self.rules.memory > 0:
            self._recent.append(_Counted(pending.direction, pending.ts, track_id))

    def _is_id_switch(self, track_id: int, track: _Track, pending: _Pending) -> bool:
        """True when a track that counted the same direction moments ago vanished
        where this one appeared, before it appeared."""
        for counted in self._recent:
            if counted.track_id == track_id or counted.direction != pending.direction:
                continue
            if not 0 <= pending.ts - counted.ts <= self.rules.memory:
                continue
            last = self._last_seen(counted.track_id)
            if last is None:
                continue
            last_ts, last_anchor, height = last
            if last_ts > track.first_ts:  # both on screen together: two people
                continue
            if self._gap(last_anchor, track.first_anchor) <= self.rules.memory_distance * max(height, track.height):
                self._recent.remove(counted)
                return True
        return False

    def _last_seen(self, track_id: int) -> tuple[float, Point, float] | None:
        track = self._tracks.get(track_id)
        if track is not None:
            return track.last_ts, track.last_anchor, track.height
        return self._ended.get(track_id)

    # -- tracks that left --------------------------------------------------------------
    def end_tracks(self, track_ids: Iterable[int], ts: float) -> list[Crossing]:
        """Tracks that are gone for good: held crossings are decided now."""
        released: list[Crossing] = []
        for track_id in track_ids:
            track = self._tracks.pop(track_id, None)
            if track is None:
                continue
            if self.rules.count_on_exit and track.net:
                direction: Direction = "in" if track.net > 0 else "out"
                track.pending = [_Pending(direction, track.last_ts_by_direction[direction])]
            if track.pending and not self._qualified(track):
                self.stats["weak track"] += len(track.pending)
                track.pending.clear()
            for pending in track.pending:
                self._emit(track_id, track, pending, released)
            if self.rules.memory > 0:
                self._ended[track_id] = (track.last_ts, track.last_anchor, track.height)
        horizon = ts - self.rules.memory
        self._ended = {tid: v for tid, v in self._ended.items() if v[0] >= horizon}
        released.sort(key=lambda c: c.ts)
        return released

    def end_tracks_older_than(self, ts: float, now: float | None = None) -> list[Crossing]:
        stale = [tid for tid, track in self._tracks.items() if track.last_ts < ts]
        return self.end_tracks(stale, ts if now is None else now)

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop tracks without deciding their held crossings (first-version API)."""
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    def forget_older_than(self, ts: float) -> None:
        stale = [tid for tid, state in self._tracks.items() if state.last_ts < ts]
        self.forget(stale)

    @property
    def track_count(self) -> int:
        return len(self._tracks)
