"""Pure plane geometry for counting lines and zones (no I/O, no numpy state).

Coordinates are normalised image coordinates: x right, y down, 0–1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]

EPSILON = 1e-12


def cross(origin: Point, a: Point, b: Point) -> float:
    """z of (a − origin) × (b − origin). With y pointing down, > 0 means b lies to
    the right of the direction origin → a as seen on the picture."""
    return (a[0] - origin[0]) * (b[1] - origin[1]) - (a[1] - origin[1]) * (b[0] - origin[0])


def side_of_line(p1: Point, p2: Point, point: Point, band: float = 0.0) -> int:
    """+1 right of p1→p2 (as seen on the picture), −1 left, 0 on the line or
    within ``band`` (a distance in normalised units) of it."""
    length = ((p2[0] - p1[0]) ** 2 + (p2[1] - p1[1]) ** 2) ** 0.5
    distance = cross(p1, p2, point) / length
    if distance > max(band, EPSILON):
        return 1
    if distance < -max(band, EPSILON):
        return -1
    return 0


def segments_intersect(a1: Point, a2: Point, b1: Point, b2: Point) -> bool:
    """True when segment a1–a2 meets segment b1–b2, end points included."""
    d1 = cross(b1, b2, a1)
    d2 = cross(b1, b2, a2)
    d3 = cross(a1, a2, b1)
    d4 = cross(a1, a2, b2)
    if ((d1 > EPSILON and d2 < -EPSILON) or (d1 < -EPSILON and d2 > EPSILON)) and (
        (d3 > EPSILON and d4 < -EPSILON) or (d3 < -EPSILON and d4 > EPSILON)
    ):
        return True
    return (
        (abs(d1) <= EPSILON and _on_segment(b1, b2, a1))
        or (abs(d2) <= EPSILON and _on_segment(b1, b2, a2))
        or (abs(d3) <= EPSILON and _on_segment(a1, a2, b1))
        or (abs(d4) <= EPSILON and _on_segment(a1, a2, b2))
    )


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    return min(p[0], q[0]) - EPSILON <= r[0] <= max(p[0], q[0]) + EPSILON and (
        min(p[1], q[1]) - EPSILON <= r[1] <= max(p[1], q[1]) + EPSILON
    )


def point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule; points exactly on an edge may fall either way."""
    x, y = point
    inside = False
    count = len(polygon)
    j = count - 1
    for i in range(count):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y):
            x_cross = xi + (y - yi) * (xj - xi) / (yj - yi)
            if x < x_cross:
                inside = not inside
        j = i
    return inside


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of two sets of pixel xyxy boxes (zero-area pairs give 0, not NaN)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
