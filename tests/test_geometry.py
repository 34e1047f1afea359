from edge_agent.geometry import point_in_polygon, segments_intersect, side_of_line


def test_side_of_line_uses_picture_orientation():
    # Walking right along y=0.5 on the picture, "below" (larger y) is on the right hand.
    assert side_of_line((0, 0.5), (1, 0.5), (0.5, 0.9)) == 1
    assert side_of_line((0, 0.5), (1, 0.5), (0.5, 0.1)) == -1
    assert side_of_line((0, 0.5), (1, 0.5), (0.3, 0.5)) == 0


def test_side_of_line_band():
    assert side_of_line((0, 0.5), (1, 0.5), (0.5, 0.52), band=0.05) == 0
    assert side_of_line((0, 0.5), (1, 0.5), (0.5, 0.56), band=0.05) == 1


def test_segments_intersect_proper_and_disjoint():
    assert segments_intersect((0.4, 0.4), (0.6, 0.6), (0.5, 0), (0.5, 1))
    assert not segments_intersect((0.1, 0.1), (0.3, 0.3), (0.5, 0), (0.5, 1))


def test_segments_intersect_beyond_end_of_segment():
    # Crosses the infinite line x=0.5 below the segment's lower end (y=0.6).
    assert not segments_intersect((0.4, 0.8), (0.6, 0.8), (0.5, 0.0), (0.5, 0.6))


def test_segments_touching_counts_as_meeting():
    assert segments_intersect((0.4, 0.5), (0.5, 0.5), (0.5, 0), (0.5, 1))


def test_point_in_polygon():
    square = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)]
    assert point_in_polygon((0.5, 0.5), square)
    assert not point_in_polygon((0.9, 0.5), square)
