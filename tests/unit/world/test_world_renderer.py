"""The synthetic world renders deterministically and its ground truth agrees with what it drew."""
import time

import numpy as np
import pytest

from samples.world import CLASS_NAMES, VIEWPOINTS, World
from samples.world.layout import PERSON


def test_same_seed_renders_identical_frames_and_truth_in_any_order():
    a, b = World("plaza", seed=3, size=(320, 180)), World("plaza", seed=3, size=(320, 180))
    for index in (0, 40, 7):  # b renders out of order: frames are a pure function of the index
        img_a, gt_a = a.render(index)
        img_b, gt_b = b.render(index)
        assert np.array_equal(img_a, img_b)
        assert gt_a == gt_b


def test_different_seeds_and_scenes_render_different_streams():
    base, _ = World("plaza", seed=3, size=(320, 180)).render(20)
    other_seed, _ = World("plaza", seed=4, size=(320, 180)).render(20)
    other_scene, _ = World("street", seed=3, size=(320, 180)).render(20)
    assert np.mean(base != other_seed) > 0.2
    assert np.mean(base != other_scene) > 0.2


@pytest.mark.parametrize("size", [(64, 48), (320, 180), (1280, 720), (640, 480)])
def test_frames_have_the_requested_size_and_rgb_layout(size):
    image, truth = World("junction", seed=1, size=size).render(30)
    assert image.shape == (size[1], size[0], 3) and image.dtype == np.uint8
    assert image.flags.c_contiguous


@pytest.mark.parametrize("scene", sorted(VIEWPOINTS))
def test_truth_boxes_lie_inside_the_frame_and_visibility_is_a_fraction(scene):
    world = World(scene, seed=5, size=(320, 180))
    seen = set()
    for index in range(0, 600, 6):
        for gt in world.ground_truth(index):
            x0, y0, x1, y1 = gt.box
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 180
            fx0, fy0, fx1, fy1 = gt.full_box
            assert fx0 <= x0 and fy0 <= y0 and x1 <= fx1 and y1 <= fy1  # visible part is inside the whole object
            assert 0 < gt.visibility <= 1
            seen.add(gt.class_id)
    assert {PERSON} <= seen <= set(range(len(CLASS_NAMES)))
    assert len(seen) >= 3


def test_identities_keep_their_class_and_move_smoothly():
    world = World("street", seed=2, size=(640, 360), fps=15)
    last: dict[int, tuple[int, int, tuple]] = {}
    steps = []
    for index in range(150):
        for gt in world.ground_truth(index):
            if gt.track_id in last:
                seen, cls, anchor = last[gt.track_id]
                assert cls == gt.class_id
                if seen == index - 1:  # fully hidden objects skip frames
                    steps.append(np.hypot(gt.anchor[0] - anchor[0], gt.anchor[1] - anchor[1]))
            last[gt.track_id] = (index, gt.class_id, gt.anchor)
    assert len(steps) > 500
    # the fastest vehicle (13 m/s at ~40 px/m, 15 fps) moves well under 60 px per frame
    assert max(steps) < 60


def test_objects_farther_away_are_drawn_smaller():
    world = World("plaza", seed=8, size=(640, 360))
    people = [gt for i in range(0, 900, 9) for gt in world.ground_truth(i)
              if gt.class_id == PERSON and gt.visibility > 0.95 and gt.full_box[1] > 0 and gt.full_box[3] < 360]
    ground_y = np.array([gt.full_box[3] for gt in people])
    height = np.array([gt.full_box[3] - gt.full_box[1] for gt in people])
    assert len(people) > 50
    assert np.corrcoef(ground_y, height)[0, 1] > 0.8


def test_occluded_objects_report_partial_visibility():
    world = World("plaza", seed=3, size=(640, 360))
    vis = [gt.visibility for i in range(0, 900, 5) for gt in world.ground_truth(i)]
    assert min(vis) < 0.5 and np.mean(np.array(vis) == 1.0) > 0.5


def test_lighting_changes_over_time():
    world = World("plaza", seed=3, size=(160, 96))
    means = [world.render(i)[0].mean() for i in range(0, 15 * 120, 15 * 10)]
    assert max(means) - min(means) > 10


def test_renders_at_least_150_frames_per_second_at_640x360():
    world = World("plaza", seed=3, size=(640, 360))
    world.render(0)
    start = time.perf_counter()
    for index in range(1, 61):
        world.render(index)
    fps = 60 / (time.perf_counter() - start)
    assert fps > 150, f"{fps:.0f} frames/s"  # ~900 on an idle core; the bound leaves room for a busy CI box
