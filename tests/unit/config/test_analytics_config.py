"""Zones, lines and alert rules are checked for meaning when read, without refusing what is merely unusual."""
import pytest
from pydantic import ValidationError

from pipeline.config.analytics import AlertRule, LineConfig, ZoneConfig, crossing_edges, polygon_area

L_SHAPE = [(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)]


def test_a_concave_zone_and_one_listed_clockwise_are_accepted():
    assert ZoneConfig(name="yard", polygon=L_SHAPE).polygon[2] == (10.0, 4.0)
    assert ZoneConfig(name="yard", polygon=L_SHAPE[::-1])
    assert polygon_area(L_SHAPE) == 64.0 and polygon_area(L_SHAPE[::-1]) == -64.0


@pytest.mark.parametrize("polygon, message", [
    ([(0, 0), (40, 40), (40, 0), (0, 40)], "edges 0 and 2 cross"),  # a bow tie
    ([(0, 0), (50, 50), (200, 200), (200, 0), (-25, 75)], "edges 0 and 3 cross"),  # one crossing through a vertex
    ([(0, 0), (5, 5), (10, 10), (20, 20)], "encloses 0 square pixels"),
    ([(0, 0), (0.5, 0), (0.5, 0.5)], "encloses 0.125 square pixels"),
])
def test_a_zone_that_encloses_no_area_or_crosses_itself_is_refused(polygon, message):
    with pytest.raises(ValidationError, match=message):
        ZoneConfig(name="z", polygon=polygon)


def test_crossing_edges_ignores_neighbours_that_share_a_vertex():
    assert crossing_edges([(0, 0), (10, 0), (10, 10), (0, 10)]) is None


def test_a_zone_drawn_as_a_closed_ring_or_with_a_vertex_twice_in_a_row_is_the_same_zone():
    square = [(0, 0), (40, 0), (40, 40), (0, 40)]
    for polygon in ([*square, (0, 0)], [(0, 0), (40, 0), (40, 0), (40, 40), (0, 40)]):
        assert ZoneConfig(name="z", polygon=polygon).polygon == polygon


def test_a_line_needs_two_distinct_endpoints():
    assert LineConfig(name="gate", start=(5, 0), end=(6, 0))
    with pytest.raises(ValidationError, match="within a pixel of start"):
        LineConfig(name="gate", start=(10, 20), end=(10.5, 20))


@pytest.mark.parametrize("key, value", [
    ("polygon", [(0, 0), (1, 0), (1, 1), (0, 1)]),  # the whole frame, as 0..1: one square pixel
    ("polygon", [(0.1, 0.2), (0.9, 0.2), (0.9, 0.8), (0.1, 0.8)]),
    ("line", ((0, 0.5), (1, 0.5))),  # across the middle of the frame: one pixel long
    ("line", ((0.5, 0.1), (0.5, 0.9))),
])
def test_a_zone_or_line_in_fractions_of_the_frame_is_refused_saying_it_wants_pixels(key, value):
    with pytest.raises(ValidationError, match=r"within 0\.\.1, as if in fractions of the frame; .* source pixels"):
        if key == "polygon":
            ZoneConfig(name="z", polygon=value)
        else:
            LineConfig(name="gate", start=value[0], end=value[1])


def test_a_rule_key_of_another_kind_is_refused_unless_it_is_left_at_its_default():
    assert AlertRule(name="r", when="dwell", zone="z", direction="any", min_count=1)
    with pytest.raises(ValidationError, match="means nothing to a 'dwell' rule"):
        AlertRule(name="r", when="dwell", zone="z", direction="in")
    with pytest.raises(ValidationError, match="means nothing to a 'cross' rule"):
        AlertRule(name="r", when="cross", line="gate", zone="z")
