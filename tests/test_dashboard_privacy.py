"""No identifiable person is stored or shown: Setup snapshots pixelate every person
the real detector finds on the very frame, before encoding; failure keeps nothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.config import load_config
from edge_agent.dashboard.snapshots import Snapshots, pixelate
from edge_agent.detect import load_detector


def fine_detail_kept(original: np.ndarray, shown: np.ndarray) -> float:
    """Correlation of the fine detail (what makes a face recognisable) of two pictures
    of the same region: about 1 for a plain JPEG of it, about 0 when none is left."""
    def high_pass(image):
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
        return grey - cv2.GaussianBlur(grey, (0, 0), 2)

    a, b = high_pass(original), high_pass(shown)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def jpeg_roundtrip(image: np.ndarray) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_COLOR)


def test_pixelate_turns_each_padded_box_into_big_blocks_and_leaves_the_rest():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    original = image.copy()
    out = pixelate(image, np.array([[100, 50, 180, 290]]))
    # Padded by 12 %: x 90.4-189.6, y 21.2-318.8; blocks of about 300/8 px.
    region = out[22:318, 91:189]
    blocks = {tuple(px) for px in region.reshape(-1, 3)}
    assert len(blocks) <= 3 * 9, "a box keeps only a handful of flat blocks"
    assert np.array_equal(out[:, 200:], image[:, 200:]), "outside the box nothing changes"
    assert np.array_equal(image, original), "the frame the pipeline counts on is not modified"


def test_a_snapshot_is_not_kept_when_people_cannot_be_detected(tmp_path):
    def broken(camera_id, image):
        raise RuntimeError("detector died")

    snapshots = Snapshots(tmp_path, every=10, detect=broken)
    image = np.full((360, 640, 3), 200, np.uint8)
    assert snapshots.take("door", image, np.empty((0, 4)), 0.0) is None
    assert snapshots.latest("door") is None
    assert list(tmp_path.iterdir()) == []


def test_track_boxes_are_pixelated_even_when_the_fresh_detection_misses_them(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    snapshots = Snapshots(tmp_path, every=10, detect=lambda camera, img: np.empty((0, 4)))
    snapshot = snapshots.take("door", image, np.array([[300, 40, 400, 330]]), 0.0)
    stored = cv2.imdecode(np.frombuffer(snapshot.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert fine_detail_kept(image[60:300, 310:390], stored[60:300, 310:390]) < 0.2
    assert fine_detail_kept(image[:, :250], stored[:, :250]) > 0.8  # the store stays readable


def test_real_people_on_the_clip_are_unrecognisable_in_the_stored_snapshot(tmp_path, clip, model_path):
    config = load_config()
    detector = load_detector(Path(model_path), config.detector)
    capture = cv2.VideoCapture(str(clip))
    for _ in range(90):
        ok, frame = capture.read()
    assert ok
    people = detector.detect([frame])[0]
    confident = people[people.confidence > 0.5]
    assert len(confident) >= 3, "the clip shows people at this frame"

    snapshots = Snapshots(tmp_path, every=10, detect=lambda camera, img: detector.detect([img])[0].xyxy)
    snapshot = snapshots.take("street", frame, np.empty((0, 4)), 0.0)  # no tracks: the detector alone
    stored = cv2.imdecode(np.frombuffer(snapshot.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert stored.shape == frame.shape
    for x1, y1, x2, y2 in confident.xyxy.astype(int):
        # The upper part of the box, where the head is.
        head = (slice(y1, y1 + max(8, (y2 - y1) // 4)), slice(x1, x2))
        assert fine_detail_kept(frame[head], jpeg_roundtrip(frame)[head]) > 0.9  # the measure sees a face
        assert fine_detail_kept(frame[head], stored[head]) < 0.2, (x1, y1, x2, y2)
    # Only the pixelated JPEG is on disk, and it is what the dashboard serves.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street.snapshot.jpg"]
    assert (tmp_path / "street.snapshot.jpg").read_bytes() == snapshot.jpeg
    reference = cv2.imdecode(np.frombuffer(snapshots.reference("street"), np.uint8), cv2.IMREAD_COLOR)
    assert reference is not None and reference.shape[1] <= 480


@pytest.mark.parametrize("every, frames, expected", [(10.0, 5, 1), (0.0, 3, 3)])
def test_observer_takes_one_snapshot_per_interval(tmp_path, every, frames, expected):
    from types import SimpleNamespace

    import supervision as sv

    taken = []
    snapshots = Snapshots(tmp_path, every=every, detect=lambda camera, img: taken.append(camera) or np.empty((0, 4)))
    image = np.zeros((90, 160, 3), np.uint8)
    for index in range(frames):
        snapshots.observe(SimpleNamespace(camera_id="door", image=image, ts=float(index)),
                          SimpleNamespace(tracks=sv.Detections.empty()))
    assert len(taken) == expected
