"""The demo world runs for days: what it caches stays bounded by what is on screen, not by time."""
from __future__ import annotations

from samples.world.render import World
from samples.world.traffic import KEPT_BLOCKS


def test_a_long_run_keeps_a_few_blocks_of_traffic_and_no_sprites_of_objects_that_left():
    world = World("plaza", seed=3, size=(320, 180), fps=1.0)
    for index in range(0, 40 * 60, 10):  # 40 minutes of the scene, a frame every 10 s
        world.render(index)
        t = world.time_of(index)
        cached = [o for block in world.traffic._blocks.values() for o in block]
        assert len(world.traffic._blocks) <= KEPT_BLOCKS
        assert all(not o.sprites for o in cached if o.t1 < t), "objects gone from the scene keep their sprites"
    assert sum(len(o.sprites) for o in cached) > 0  # what is on screen is still cached


def test_frames_are_the_same_after_their_blocks_were_forgotten():
    world = World("street", seed=5, size=(160, 96), fps=5.0)
    first, truth = world.render(100)
    for index in range(0, 5 * 60 * 20, 50):  # 20 minutes later: block 0 was forgotten long ago
        world.render(index)
    again, truth_again = world.render(100)
    assert (first == again).all() and truth == truth_again
