import numpy as np

from pipeline.stages.tracking import kalman


def _track(box=(100.0, 200.0, 140.0, 300.0)):
    return kalman.initiate(kalman.xyxy_to_xyah(np.array([box])))


def test_box_conversion_round_trips():
    boxes = np.array([[10.0, 20.0, 50.0, 120.0], [0.0, 0.0, 3.0, 4.0]])
    np.testing.assert_allclose(kalman.xyah_to_xyxy(kalman.xyxy_to_xyah(boxes)), boxes, atol=1e-9)


def test_predict_moves_by_velocity_and_grows_uncertainty():
    mean, cov = _track()
    mean[0, 4:6] = [3.0, -2.0]  # pixels per frame
    new_mean, new_cov = kalman.predict(mean, cov)
    np.testing.assert_allclose(new_mean[0, :2], mean[0, :2] + [3.0, -2.0])
    assert np.all(np.diag(new_cov[0]) > np.diag(cov[0]))


def test_update_pulls_towards_measurement_and_shrinks_uncertainty():
    mean, cov = kalman.predict(*_track())
    measured = mean[:, :4] + [10.0, 0.0, 0.0, 0.0]
    new_mean, new_cov = kalman.update(mean, cov, measured)
    assert mean[0, 0] < new_mean[0, 0] < measured[0, 0]
    assert new_mean[0, 4] > 0  # the filter infers motion to the right
    assert np.all(np.diag(new_cov[0])[:4] < np.diag(cov[0])[:4])


def test_repeated_constant_motion_is_learned():
    mean, cov = _track()
    box = np.array([[100.0, 200.0, 140.0, 300.0]])
    for step in range(1, 30):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, kalman.xyxy_to_xyah(box + [4.0 * step, 0, 4.0 * step, 0]))
    assert abs(mean[0, 4] - 4.0) < 0.2


def test_batched_filter_equals_one_track_at_a_time():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 500, (5, 2))
    boxes = np.concatenate([boxes, boxes + rng.uniform(10, 80, (5, 2))], axis=1)
    mean, cov = kalman.predict(*kalman.initiate(kalman.xyxy_to_xyah(boxes)))
    measured = kalman.xyxy_to_xyah(boxes + rng.normal(0, 3, boxes.shape))
    batch_mean, batch_cov = kalman.update(mean, cov, measured)
    for i in range(5):
        one_mean, one_cov = kalman.update(mean[i:i + 1], cov[i:i + 1], measured[i:i + 1])
        np.testing.assert_allclose(batch_mean[i], one_mean[0])
        np.testing.assert_allclose(batch_cov[i], one_cov[0])


def test_warp_moves_centres_turns_velocities_and_scales_heights_and_uncertainty():
    from pipeline.stages.tracking import kalman

    mean, cov = kalman.initiate(np.array([[100.0, 50.0, 0.5, 80.0]]))
    mean[0, 4:] = [2.0, 1.0, 0.0, 0.5]
    turn = np.array([[0.0, -2.0, 10.0], [2.0, 0.0, -5.0]])  # 90 degrees, twice the size, shifted
    warped, warped_cov = kalman.warp(mean, cov, turn)
    np.testing.assert_allclose(warped[0], [-90.0, 195.0, 0.5, 160.0, -2.0, 4.0, 0.0, 1.0])
    np.testing.assert_allclose(warped_cov[0, 3, 3], 4 * cov[0, 3, 3])
    np.testing.assert_allclose(warped_cov[0, 0, 0], 4 * cov[0, 1, 1])  # x now carries y's uncertainty
    same, same_cov = kalman.warp(mean, cov, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_array_equal(same, mean)
    np.testing.assert_array_equal(same_cov, cov)
