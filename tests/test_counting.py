"""Line-crossing rules on synthetic anchor paths (normalised coordinates)."""

from edge_agent.counting import LineCounter


def run(counter, path, track_id=1):
    crossings = []
    for step, point in enumerate(path):
        crossings += counter.update([(track_id, point)], ts=float(step))
    return [c.direction for c in crossings]


def vertical(**kw):
    # Top to bottom at x=0.5; "right" of that direction on the picture is smaller x.
    return LineCounter("door", (0.5, 0.0), (0.5, 1.0), **kw)


def test_crossing_counts_once_with_direction():
    assert run(vertical(), [(0.7, 0.5), (0.6, 0.5), (0.4, 0.5), (0.3, 0.5)]) == ["in"]
    assert run(vertical(), [(0.3, 0.5), (0.45, 0.5), (0.55, 0.5), (0.7, 0.5)]) == ["out"]


def test_in_side_left_flips_direction():
    assert run(vertical(in_side="left"), [(0.7, 0.5), (0.3, 0.5)]) == ["out"]


def test_touch_and_turn_back_counts_nothing():
    assert run(vertical(), [(0.7, 0.5), (0.6, 0.5), (0.5, 0.5), (0.6, 0.5), (0.7, 0.5)]) == []


def test_touch_then_continue_counts_once():
    assert run(vertical(), [(0.7, 0.5), (0.5, 0.5), (0.5, 0.5), (0.3, 0.5)]) == ["in"]


def test_crossing_outside_segment_ends_counts_nothing():
    short = LineCounter("door", (0.5, 0.2), (0.5, 0.6))
    assert run(short, [(0.7, 0.9), (0.3, 0.9)]) == []
    # ... and coming back through the segment afterwards is a real crossing.
    assert run(short, [(0.7, 0.9), (0.3, 0.9), (0.3, 0.4), (0.7, 0.4)]) == ["out"]


def test_walk_in_out_in_counts_every_crossing():
    path = [(0.7, 0.5), (0.3, 0.5), (0.7, 0.5), (0.3, 0.5)]
    assert run(vertical(), path) == ["in", "out", "in"]


def test_hysteresis_band_ignores_jitter_on_the_line():
    jitter = [(0.7, 0.5), (0.51, 0.5), (0.49, 0.5), (0.51, 0.5), (0.49, 0.5), (0.7, 0.5)]
    assert run(vertical(), jitter) == ["in", "out", "in", "out"]
    assert run(vertical(hysteresis=0.03), jitter) == []


def test_tracks_are_independent():
    counter = vertical()
    counter.update([(1, (0.7, 0.5)), (2, (0.3, 0.5))], 0.0)
    crossings = counter.update([(1, (0.3, 0.5)), (2, (0.3, 0.6))], 1.0)
    assert [(c.track_id, c.direction) for c in crossings] == [(1, "in")]


def test_forgotten_tracks_are_dropped():
    counter = vertical()
    counter.update([(1, (0.7, 0.5))], 0.0)
    counter.update([(2, (0.7, 0.5))], 20.0)
    counter.forget_older_than(10.0)
    assert counter.track_count == 1
