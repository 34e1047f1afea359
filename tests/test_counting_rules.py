"""Counting rules on synthetic tracks (normalised coordinates, 10 frames/s).

The door line runs top to bottom at x = 0.5; "in" is moving to smaller x.
People are 0.3 frame-heights tall, so the default band (0.1 body) is ±0.03.
"""

from dataclasses import replace

import pytest

from edge_agent.analytics.settings import AnalyticsSettings, line_rules
from edge_agent.counting import LineCounter, LineRules, Observation

RULES = line_rules(AnalyticsSettings())  # the agent's defaults
DT = 0.1
H = 0.3


def door(rules=RULES, **kw):
    return LineCounter("door", (0.5, 0.0), (0.5, 1.0), rules=rules, **kw)


def walk(xs, y=0.5, track=1, start=0.0, height=H, confidence=0.8, staff=False):
    """Observations of one track at x positions, one per frame."""
    return [(start + k * DT, [Observation(track, (x, y), height, confidence, staff)]) for k, x in enumerate(xs)]


def play(counter, *tracks, end_after=True):
    """Merge tracks by time, feed them frame by frame, end every track at the end."""
    frames: dict[float, list] = {}
    for track in tracks:
        for ts, observations in track:
            frames.setdefault(round(ts, 6), []).extend(observations)
    crossings = []
    last = 0.0
    for ts in sorted(frames):
        crossings += counter.update(frames[ts], ts)
        last = ts
    if end_after:
        crossings += counter.end_tracks(list(counter._tracks), last + 5)
    return crossings


def directions(crossings):
    return [c.direction for c in crossings]


def steady(a, b, steps):
    return [a + (b - a) * k / (steps - 1) for k in range(steps)]


def test_a_plain_walk_across_counts_once_at_the_time_it_crossed():
    crossings = play(door(), walk(steady(0.8, 0.2, 13)))
    assert directions(crossings) == ["in"]
    # counted when first seen beyond the band (x=0.45 at 0.7 s), stamped with that time
    assert crossings[0].ts == pytest.approx(0.7)
    assert crossings[0].kind == "visitor"


def test_standing_on_the_line_counts_nothing():
    jitter = [0.5 + d for d in (0.02, -0.02, 0.015, -0.025, 0.02, -0.02) * 5]
    assert play(door(), walk(jitter)) == []
    # ... while the same jitter with no rules counts every flicker
    assert len(play(door(LineRules()), walk(jitter))) == len(jitter) - 1


def test_flicker_across_the_line_within_the_cooldown_cancels_out():
    # outside the band on both sides, but back within 0.3 s: box flicker, not a person
    path = [0.8, 0.7, 0.6, 0.55, 0.45, 0.55, 0.6, 0.7, 0.8]
    assert play(door(), walk(path)) == []
    # the same path with no cooldown counts in and out
    assert directions(play(door(replace(RULES, cooldown=0.0)), walk(path))) == ["in", "out"]


def test_u_turn_inside_the_band_counts_nothing():
    path = [0.8, 0.7, 0.6, 0.52, 0.48, 0.52, 0.6, 0.7, 0.8]
    assert play(door(), walk(path)) == []
    assert directions(play(door(replace(RULES, band_body=0.0, cooldown=0.0)), walk(path))) == ["in", "out"]


def test_walk_in_out_and_in_again_counts_every_genuine_crossing():
    path = steady(0.8, 0.2, 12) + steady(0.2, 0.8, 12) + steady(0.8, 0.2, 12)
    assert directions(play(door(), walk(path))) == ["in", "out", "in"]


def test_crossing_beside_the_segment_counts_nothing():
    short = LineCounter("door", (0.5, 0.2), (0.5, 0.6), rules=RULES)
    assert play(short, walk(steady(0.8, 0.2, 13), y=0.9)) == []
    short = LineCounter("door", (0.5, 0.2), (0.5, 0.6), rules=RULES)
    assert directions(play(short, walk(steady(0.8, 0.2, 13), y=0.4))) == ["in"]


def test_id_switch_right_after_crossing_is_not_counted_again():
    # track 1 crosses and vanishes at x=0.45; track 2 appears where it vanished,
    # its box first reaching back over the line, and walks on: the same person
    first = walk(steady(0.8, 0.45, 8), track=1)
    second = walk([0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2], track=2, start=8 * DT + 0.3)
    crossings = play(door(), first, second)
    assert directions(crossings) == ["in"]
    assert [c.track_id for c in crossings] == [1]
    # without the memory of recent counts the new track counts the person again
    assert len(play(door(replace(RULES, memory=0.0)), first, second)) == 2


def test_two_people_crossing_side_by_side_both_count():
    a = walk(steady(0.8, 0.2, 13), y=0.4, track=1)
    b = walk(steady(0.8, 0.2, 13), y=0.6, track=2)
    assert sorted(c.track_id for c in play(door(), a, b)) == [1, 2]


def test_a_new_track_far_from_the_vanished_one_still_counts():
    first = walk(steady(0.8, 0.45, 8), track=1, y=0.2)
    second = walk([0.55, 0.5, 0.45, 0.4, 0.3, 0.2], track=2, y=0.8, start=8 * DT + 0.3)
    assert sorted(c.track_id for c in play(door(), first, second)) == [1, 2]


def test_young_track_does_not_count_until_it_is_confirmed():
    # seen in 2 frames only: a detector blip across the line
    assert play(door(), walk([0.6, 0.4])) == []
    assert len(play(door(replace(RULES, min_track_frames=1)), walk([0.6, 0.4]))) == 1
    # seen long enough: its crossing counts, with the time it crossed
    crossings = play(door(), walk([0.6, 0.4, 0.35, 0.3, 0.25]))
    assert directions(crossings) == ["in"] and crossings[0].ts == pytest.approx(DT)


def test_low_confidence_track_does_not_count():
    assert play(door(), walk(steady(0.8, 0.2, 13), confidence=0.15)) == []
    assert len(play(door(replace(RULES, min_track_confidence=0.0)), walk(steady(0.8, 0.2, 13), confidence=0.15))) == 1
    assert directions(play(door(), walk(steady(0.8, 0.2, 13), confidence=0.3))) == ["in"]


def test_band_scales_with_body_size():
    jitter = [0.5 + d for d in (0.02, -0.02) * 10]  # ±0.02, slow (0.2 s between flips)
    slow = [x for x in jitter for _ in range(2)]
    no_cooldown = replace(RULES, cooldown=0.0)
    assert play(door(no_cooldown), walk(slow, height=0.3)) == []  # band ±0.03 covers it
    assert len(play(door(no_cooldown), walk(slow, height=0.1))) > 0  # band ±0.01 does not


def test_band_is_measured_in_frame_heights_on_wide_frames():
    # on a 2:1 frame, x units are twice as long as y units: 0.01 in x is 0.02 heights
    wide = door(replace(RULES, cooldown=0.0), aspect=2.0)
    path = [0.5 + d for d in (0.02, -0.02) * 4 for _ in range(3)]  # ±0.04 heights: outside ±0.03
    assert len(play(wide, walk(path))) > 0
    assert play(door(replace(RULES, cooldown=0.0), aspect=1.0), walk(path)) == []


def test_first_seen_inside_the_band_starts_on_the_side_it_appeared():
    crossings = play(door(), walk([0.51, 0.49, 0.45, 0.4, 0.35, 0.3]))
    assert directions(crossings) == ["in"]


def test_count_on_exit_decides_when_the_track_leaves():
    exit_rules = replace(RULES, count_on_exit=True)
    back_and_forth = steady(0.8, 0.2, 12) + steady(0.2, 0.8, 12) + steady(0.8, 0.2, 12)
    counter = door(exit_rules)
    assert play(counter, walk(back_and_forth), end_after=False) == []  # nothing while on screen
    crossings = counter.end_tracks([1], 10.0)
    assert directions(crossings) == ["in"]  # in, out, in → net one in
    assert play(door(exit_rules), walk(steady(0.8, 0.2, 12) + steady(0.2, 0.8, 12))) == []


def test_staff_tracks_count_as_staff():
    crossings = play(door(), walk(steady(0.8, 0.2, 13), staff=True))
    assert [(c.direction, c.kind) for c in crossings] == [("in", "staff")]


def test_in_side_left_flips_direction():
    assert directions(play(door(in_side="left"), walk(steady(0.8, 0.2, 13)))) == ["out"]
