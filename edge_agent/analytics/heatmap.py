"""Coarse occupancy grid per camera: how many person-frames each cell held.

Only counts of feet positions on a grid (e.g. 32×18 over the picture): no
pixels and no identities, so it can be kept and sent anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..geometry import Point


@dataclass(frozen=True, slots=True)
class HeatmapChunk:
    """What one camera accumulated between two flushes (one minute, normally)."""

    start_ts: float  # start of the minute it was accumulated in
    cols: int
    rows: int
    frames: int
    cells: np.ndarray  # (rows, cols) int64 person-frames


@dataclass
class HeatmapAccumulator:
    cols: int = 32
    rows: int = 18
    frames: int = 0
    cells: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.cells = np.zeros((self.rows, self.cols), dtype=np.int64)

    def add(self, points: Iterable[Point]) -> None:
        """One processed frame and the feet positions (0–1) of the people in it."""
        self.frames += 1
        for x, y in points:
            col = min(max(int(x * self.cols), 0), self.cols - 1)
            row = min(max(int(y * self.rows), 0), self.rows - 1)
            self.cells[row, col] += 1

    def take(self, start_ts: float) -> HeatmapChunk | None:
        """Hand over what was accumulated and start again (None if nothing was)."""
        if self.frames == 0:
            return None
        chunk = HeatmapChunk(start_ts, self.cols, self.rows, self.frames, self.cells.copy())
        self.frames = 0
        self.cells[:] = 0
        return chunk
