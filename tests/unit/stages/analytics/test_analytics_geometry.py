import numpy as np

from pipeline.stages.analytics.geometry import (
    anchor_points,
    points_in_polygon,
    signed_distance,
)


def test_anchor_points():
    box = np.array([[10, 20, 30, 60]])
    assert anchor_points(box).tolist() == [[20, 60]]
    assert anchor_points(box, "center").tolist() == [[20, 40]]
    assert anchor_points(box, "top_center").tolist() == [[20, 20]]


def test_points_in_concave_polygon():
    l_shape = [(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)]
    inside = points_in_polygon([[2, 2], [8, 2], [2, 8], [8, 8], [-1, 5]], l_shape)
    assert inside.tolist() == [True, True, True, False, False]


def test_signed_distance_is_positive_on_the_right_hand_side_on_screen():
    dist, along = signed_distance([[5, 3], [5, -3], [20, 3]], (0, 0), (10, 0))
    assert dist.tolist() == [3, -3, 3]  # y grows downwards: below an eastward line is its right side
    assert along.tolist() == [0.5, 0.5, 2.0]
