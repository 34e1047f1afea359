"""CameraAnalytics with the real default tracker on synthetic detections:
crossings, staff, zone visits and heatmap minutes come out of one process() call."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from edge_agent.analytics.pose import PoseEstimator, PoseModelError
from edge_agent.config import CameraConfig, TrackerConfig
from edge_agent.pipeline import CameraAnalytics

W, H = 640, 480


def box(cx, bottom, height=120):
    """A person box in pixels from normalised feet position."""
    x, y = cx * W, bottom * H
    return [x - height / 6, y - height, x + height / 6, y]


def detections(boxes):
    if not boxes:
        return sv.Detections.empty()
    return sv.Detections(xyxy=np.array(boxes, dtype=np.float32), confidence=np.full(len(boxes), 0.9, np.float32),
                         class_id=np.zeros(len(boxes), int))


def camera():
    return CameraConfig(
        id="cam", source="rtsp://x",
        lines=[{"id": "door", "points": [[0.5, 0.0], [0.5, 1.0]]}],
        zones=[{"id": "shelf", "polygon": [[0.6, 0.5], [0.9, 0.5], [0.9, 0.9], [0.6, 0.9]], "kind": "shelf",
                "product": "Tea"},
               {"id": "backroom", "polygon": [[0.0, 0.0], [0.2, 0.0], [0.2, 0.3], [0.0, 0.3]], "kind": "staff"}],
    )


def test_visitor_and_staff_crossings_zone_visit_and_heatmap_minutes():
    analytics = CameraAnalytics(camera(), TrackerConfig(), frame_rate=10.0)
    start = 1_000_000 * 60.0 - 3.0  # three seconds before a minute boundary
    results = []
    for k in range(80):
        ts = start + k / 10
        visitor_x = 0.95 - 0.01 * k  # walks right → left across the door: "in"
        people = [box(visitor_x, 0.7)]
        if k >= 5:  # a staff member appears in the back room and walks out across the door, left → right
            people.append(box(0.1 + 0.01 * (k - 5), 0.25))
        results.append(analytics.process(detections(people), (H, W, 3), ts))
    results.append(analytics.finish(start + 8.0))
    crossings = [c for r in results for c in r.crossings]
    assert sorted((c.direction, c.kind) for c in crossings) == [("in", "visitor"), ("out", "staff")]
    visits = [e for r in results for e in r.zone_events if e.zone_id == "shelf"]
    assert [e.event for e in visits] == ["enter", "exit"]
    # the visitor's feet are inside the shelf area from x=0.9 to x=0.6: about 3 s
    assert visits[1].dwell == pytest.approx(3.0, abs=0.35) and not visits[1].staff
    chunks = [r.heatmap for r in results if r.heatmap is not None]
    assert [c.start_ts for c in chunks] == [start + 3.0 - 60, start + 3.0]
    assert sum(c.frames for c in chunks) == 80
    # visitors only: the staff member's feet are not in the heatmap
    assert sum(int(c.cells.sum()) for c in chunks) < 80 + 10


def test_long_stay_makes_a_track_staff():
    from edge_agent.analytics.settings import AnalyticsSettings

    analytics = CameraAnalytics(camera(), TrackerConfig(), 10.0, settings=AnalyticsSettings(staff_after_seconds=2.0))
    crossings = []
    for k in range(60):  # stands still for 3 s, then walks across the door
        x = 0.8 if k < 30 else 0.8 - 0.02 * (k - 30)
        crossings += analytics.process(detections([box(x, 0.4)]), (H, W, 3), k / 10).crossings
    crossings += analytics.finish(6.0).crossings
    assert [(c.direction, c.kind) for c in crossings] == [("in", "staff")]


def test_pose_model_errors_are_clear(tmp_path, model_path):
    with pytest.raises(PoseModelError, match="does not exist"):
        PoseEstimator(tmp_path / "missing-pose.pt")
    with pytest.raises(PoseModelError, match="'detect' model, not a pose model"):
        PoseEstimator(model_path)
