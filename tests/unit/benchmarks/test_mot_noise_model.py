"""The detector-like noise model of benchmarks/mot_noise.py has the properties it claims."""
import numpy as np

from benchmarks.mot_noise import NoiseModel, detector_like

FRAMES = 600
NO_CLUTTER = NoiseModel(near_rate=0.0, background_sites=0)


def gt_track(track_id, x, height, visibility):
    """MOT17 gt rows of a person standing at x for every frame: (frame, id, x, y, w, h, conf, class, vis)."""
    f = np.arange(1, FRAMES + 1)
    return np.column_stack([f, np.full(FRAMES, track_id), np.full(FRAMES, x), np.full(FRAMES, 100.0),
                            np.full(FRAMES, height * 0.4), np.full(FRAMES, height), np.ones(FRAMES),
                            np.ones(FRAMES), np.full(FRAMES, visibility)])


# Far apart, so each detection belongs to the track whose column it is in: tall and visible, tall and
# mostly hidden, small and visible.
GT = np.concatenate([gt_track(1, 100, 300, 1.0), gt_track(2, 700, 300, 0.2), gt_track(3, 1300, 30, 1.0)])


def per_track(det):
    return [det[(det[:, 2] >= lo) & (det[:, 2] < lo + 400)] for lo in (0, 600, 1200)]


def run_lengths(present):
    """Lengths of the runs of False in a boolean sequence."""
    edges = np.diff(np.concatenate([[0], (~present).astype(int), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_misses_come_in_runs_and_grow_with_occlusion_and_smallness():
    det = detector_like(GT, 1920, 1080, FRAMES, np.random.default_rng(0), NO_CLUTTER)
    visible, hidden, small = per_track(det)
    miss_rate = [1 - len(t) / FRAMES for t in (visible, hidden, small)]
    assert miss_rate[1] > 2 * miss_rate[0] and miss_rate[2] > 2 * miss_rate[0], miss_rate
    present = np.isin(np.arange(1, FRAMES + 1), hidden[:, 0])
    runs = run_lengths(present)
    assert runs.mean() > 2.5, runs  # independent misses at this rate would average about 1.3 frames


def test_scores_fall_with_occlusion_and_size():
    det = detector_like(GT, 1920, 1080, FRAMES, np.random.default_rng(1), NO_CLUTTER)
    visible, hidden, small = per_track(det)
    assert np.median(visible[:, 6]) > np.median(hidden[:, 6]) + 0.2
    assert np.median(visible[:, 6]) > np.median(small[:, 6]) + 0.05


def test_box_jitter_is_proportional_to_size_and_correlated_in_time():
    det = detector_like(GT, 1920, 1080, FRAMES, np.random.default_rng(2), NO_CLUTTER)
    visible, _, small = per_track(det)
    errors = []
    for rows, x, h in ((visible, 100, 300), (small, 1300, 30)):
        rows = rows[np.argsort(rows[:, 0])]
        errors.append((rows[:, 2] + rows[:, 4] / 2 - (x + 0.2 * h)) / (0.4 * h))  # centre error / width
    relative = [e.std() for e in errors]
    assert 0.5 < relative[0] / relative[1] < 2.0 and 0.02 < relative[0] < 0.08, relative
    consecutive = visible[:, 0][1:] - visible[:, 0][:-1] == 1
    lag1 = np.corrcoef(errors[0][:-1][consecutive], errors[0][1:][consecutive])[0, 1]
    assert lag1 > 0.4, lag1


def test_clutter_sits_near_objects_and_at_a_few_fixed_background_places():
    model = NoiseModel(near_rate=0.0, background_sites=3)
    one = gt_track(1, 100, 300, 1.0)
    det = detector_like(one, 1920, 1080, FRAMES, np.random.default_rng(3), model)
    clutter = det[det[:, 2] >= 400]  # the person stands at x 100-220
    clutter = clutter[clutter[:, 2] > 260]
    places = np.unique(np.round(clutter[:, 2:4] / 50), axis=0)
    assert len(clutter) > 30 and len(places) <= 3 * 4, (len(clutter), places)  # wobble may straddle a cell edge
    near = detector_like(one, 1920, 1080, FRAMES, np.random.default_rng(3), NoiseModel(near_rate=0.1, background_sites=0))
    extra = len(near) - len(detector_like(one, 1920, 1080, FRAMES, np.random.default_rng(3), NO_CLUTTER))
    assert extra > 30
    assert np.all(np.abs(near[:, 2] - 100) < 1.0 * 120)  # within a box width or so of the person


def test_the_same_seed_gives_the_same_detections():
    a = detector_like(GT, 1920, 1080, FRAMES, np.random.default_rng(5))
    b = detector_like(GT, 1920, 1080, FRAMES, np.random.default_rng(5))
    c = detector_like(GT, 1920, 1080, FRAMES, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)
