"""Line-crossing rules: tracks in, crossings out. Pure: no frames, no I/O.

A track counts when its anchor (the bottom centre of its box, where the feet
are) moves from one side of a counting line to the other *through the segment*.
Touching the line and turning back counts nothing; passing beside the segment's
ends counts nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .geometry import Point, segments_intersect, side_of_line

Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class Crossing:
    """One counted crossing of one line by one track."""

    line_id: str
    track_id: int
    direction: Direction
    ts: float


@dataclass(slots=True)
class _TrackSide:
    side: int  # last side seen, never 0
    anchor: Point  # where the track was when last seen on that side
    last_seen: float


@dataclass
class LineCounter:
    """State for one line: each track's last known side.

    ``hysteresis`` is a band (normalised distance) around the line; positions
    inside it belong to neither side, so box jitter on the line counts nothing.
    """

    line_id: str
    p1: Point
    p2: Point
    in_side: Literal["left", "right"] = "right"
    hysteresis: float = 0.0
    _tracks: dict[int, _TrackSide] = field(default_factory=dict)

    @property
    def _in_sign(self) -> int:
        return 1 if self.in_side == "right" else -1

    def update(self, anchors: Iterable[tuple[int, Point]], ts: float) -> list[Crossing]:
        crossings: list[Crossing] = []
        for track_id, anchor in anchors:
            side = side_of_line(self.p1, self.p2, anchor, self.hysteresis)
            state = self._tracks.get(track_id)
            if side == 0:
                if state is not None:
                    state.last_seen = ts
                continue
            if state is None:
                self._tracks[track_id] = _TrackSide(side, anchor, ts)
                continue
            if side != state.side and segments_intersect(state.anchor, anchor, self.p1, self.p2):
                direction: Direction = "in" if side == self._in_sign else "out"
                crossings.append(Crossing(self.line_id, track_id, direction, ts))
            state.side, state.anchor, state.last_seen = side, anchor, ts
        return crossings

    def forget(self, track_ids: Iterable[int]) -> None:
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    def forget_older_than(self, ts: float) -> None:
        stale = [tid for tid, state in self._tracks.items() if state.last_seen < ts]
        self.forget(stale)

    @property
    def track_count(self) -> int:
        return len(self._tracks)
