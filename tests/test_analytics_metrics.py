"""Store metrics and zone rules on hand-computed examples (pure, no I/O)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge_agent.analytics.heatmap import HeatmapAccumulator
from edge_agent.analytics.metrics import concurrency, dwell_summary, fold_occupancy, interaction_summary
from edge_agent.analytics.pose import PoseResult, wrists_by_track
from edge_agent.analytics.sections import closing_times
from edge_agent.analytics.zones import ZoneObservation, ZoneSpec, ZoneTracker, wrists_inside

SQUARE = ((0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6))


def test_dwell_summary_hand_computed():
    # sorted: 2, 4, 10, 40 → median (4+10)/2 = 7; p90 = 10 + 0.7 * (40 - 10) = 31
    summary = dwell_summary([10, 2, 40, 4], passing_max=5, engaged_min=30)
    assert summary == {"visits": 4, "dwell_median_s": 7.0, "dwell_p90_s": 31.0,
                       "passing": 2, "browsing": 1, "engaged": 1}
    # thresholds are half-open: exactly 5 s is browsing, exactly 30 s engaged
    assert dwell_summary([5, 30], 5, 30)[("passing")] == 0
    assert dwell_summary([5, 30], 5, 30)["engaged"] == 1
    assert dwell_summary([], 5, 30)["dwell_median_s"] is None


def test_interaction_summary_hand_computed():
    visits = [(1, True, 2), (1, False, 0), (2, True, 0), (3, False, 0)]
    assert interaction_summary(visits) == {"passers_by": 4, "interactions": 2, "unique_visitors": 3,
                                           "reaches": 2, "interaction_rate": 0.5}
    assert interaction_summary([])["interaction_rate"] is None


def test_occupancy_never_goes_negative_and_counts_the_drift():
    changes = [(1, -1), (2, +1), (3, +1), (4, -1), (5, -1), (6, -1), (7, +1)]
    folded = fold_occupancy(changes, [], 0, 10)
    # 0 (out ignored) → 1 → 2 → 1 → 0 → 0 (out ignored) → 1
    assert (folded.value, folded.peak, folded.clamped) == (1, 2, 2)


def test_occupancy_resets_at_closing_time_and_peak_is_within_the_window():
    changes = [(1, 1), (2, 1), (3, 1), (11, 1), (12, -1)]
    folded = fold_occupancy(changes, resets=[10], window_start=10.5, window_end=20)
    # 3 people at 10 → reset to 0 → 1 → 0; the window starts after the reset at 0
    assert (folded.value, folded.peak) == (0, 1)
    assert fold_occupancy(changes, [10], 0, 20).peak == 3
    assert fold_occupancy(changes, [10], 0, 10.5).value == 0


def test_zone_concurrency():
    visits = [(0, 10), (5, None), (6, 8), (12, 20), (30, 40)]
    # at 9: first and second inside; peak 3 at 6-8; visit (30, 40) starts after the window
    assert concurrency(visits, start=0, end=9) == (2, 3)
    # from 9: two inside (0-10, 5-); at 10 one; at 12 two again (5-, 12-20)
    assert concurrency(visits, start=9, end=15) == (2, 2)


def test_closing_time_in_the_store_timezone():
    zone = ZoneInfo("Asia/Shanghai")
    start = datetime(2026, 11, 25, 9, 0, tzinfo=zone).timestamp()
    end = datetime(2026, 11, 27, 9, 0, tzinfo=zone).timestamp()
    first, later = closing_times(start, end, "22:30", "Asia/Shanghai")
    assert first == datetime(2026, 11, 24, 22, 30, tzinfo=zone).timestamp()
    assert later == [datetime(2026, 11, 25, 22, 30, tzinfo=zone).timestamp(),
                     datetime(2026, 11, 26, 22, 30, tzinfo=zone).timestamp()]


def obs(track, x, y, staff=False, wrists=None):
    return ZoneObservation(track, (x, y), (x, y - 0.1), staff, wrists)


def test_zone_visit_joins_short_gaps_and_closes_at_the_last_time_inside():
    zones = ZoneTracker([ZoneSpec("aisle", SQUARE)], exit_grace=1.0)
    events = []
    timeline = [(0, 0.3), (1, 0.5), (2, 0.5), (2.5, 0.7), (3, 0.5), (4, 0.5), (5, 0.7), (6, 0.7), (7, 0.7)]
    for ts, x in timeline:
        events += zones.update([obs(1, x, 0.5)], ts)
    assert [(e.event, e.enter_ts, e.exit_ts) for e in events] == [("enter", 1, None), ("exit", 1, 4)]
    assert events[1].dwell == 3


def test_unseen_track_closes_its_visit_after_the_grace_and_on_end():
    zones = ZoneTracker([ZoneSpec("aisle", SQUARE)], exit_grace=1.0)
    assert [e.event for e in zones.update([obs(1, 0.5, 0.5)], 0)] == ["enter"]
    assert zones.occupancy() == {"aisle": 1}
    assert zones.update([], 0.5) == []
    closed = zones.update([], 1.5)
    assert [(e.event, e.exit_ts) for e in closed] == [("exit", 0)]
    zones.update([obs(2, 0.5, 0.5)], 2)
    assert [e.track_id for e in zones.end_tracks([2])] == [2]


def test_shelf_interaction_by_stay_or_by_reach():
    shelf = ZoneSpec("snacks", SQUARE, kind="shelf", product="Snacks")
    zones = ZoneTracker([shelf], exit_grace=1.5, interaction_min_seconds=5)
    wrist_in, wrist_out = ((0.5, 0.5),), ((0.9, 0.9),)
    reaching = [wrist_out, wrist_in, wrist_out, wrist_in, wrist_in]
    events = []
    for ts in range(0, 7):
        seen = [obs(1, 0.5, 0.5)]  # stays 6 s
        if ts < 2:
            seen.append(obs(2, 0.45, 0.45))  # passes by in 1 s
        if ts < 5:  # stands in front (feet outside), reaches in twice with a wrist
            seen.append(obs(3, 0.5, 0.8, wrists=reaching[ts]))
        events += zones.update(seen, ts)
    events += zones.close_all("exit")
    closed = {e.track_id: e for e in events if e.event == "exit"}
    assert closed[1].interaction and closed[1].reaches == 0
    assert not closed[2].interaction
    assert closed[3].interaction and closed[3].reaches == 2


def test_plain_zone_never_counts_interactions_and_staff_zone_holds_no_visits():
    zones = ZoneTracker([ZoneSpec("aisle", SQUARE), ZoneSpec("backroom", SQUARE, kind="staff")],
                        interaction_min_seconds=0)
    zones.update([obs(1, 0.5, 0.5)], 0)
    closed = zones.close_all()
    assert [(e.zone_id, e.interaction) for e in closed] == [("aisle", False)]


def test_centre_anchored_zone_uses_the_box_centre():
    zones = ZoneTracker([ZoneSpec("face", SQUARE, anchor="centre")])
    # feet at y=0.65 (outside), centre at y=0.55 (inside)
    assert [e.event for e in zones.update([obs(1, 0.5, 0.65)], 0)] == ["enter"]


def test_wrist_keypoints_inside_a_polygon():
    assert wrists_inside([(0.9, 0.9), (0.5, 0.5)], SQUARE)
    assert not wrists_inside([(0.9, 0.9)], SQUARE)
    assert not wrists_inside(None, SQUARE)


def test_pose_boxes_are_matched_to_tracks_and_weak_wrists_dropped():
    keypoints = np.zeros((2, 17, 3))
    keypoints[0, 9] = (0.5, 0.5, 0.9)  # pose 0: left wrist confident
    keypoints[0, 10] = (0.1, 0.1, 0.2)  # right wrist too uncertain
    keypoints[1, 10] = (0.7, 0.7, 0.8)
    pose = PoseResult(np.array([[0, 0, 10, 30], [100, 0, 110, 30]], float), keypoints)
    tracks = np.array([[101, 1, 111, 31], [1, 1, 11, 31], [300, 0, 310, 30]], float)
    found = wrists_by_track(pose, tracks, np.array([7, 8, 9]), min_confidence=0.5)
    assert found == {8: ((0.5, 0.5),), 7: ((0.7, 0.7),)}


def test_heatmap_counts_feet_per_cell_without_pixels():
    heat = HeatmapAccumulator(cols=4, rows=2)
    heat.add([(0.1, 0.1), (0.99, 0.99), (1.0, 1.0)])
    heat.add([(0.1, 0.2)])
    chunk = heat.take(60.0)
    assert chunk.frames == 2 and chunk.cells.tolist() == [[2, 0, 0, 0], [0, 0, 0, 2]]
    assert heat.take(120.0) is None  # nothing since


@pytest.mark.parametrize("bad", ["24:00", "7:30", "noon"])
def test_closing_time_must_be_hh_mm(bad):
    from pydantic import ValidationError

    from edge_agent.analytics.settings import AnalyticsSettings

    with pytest.raises(ValidationError, match="HH:MM"):
        AnalyticsSettings(closing_time=bad)
