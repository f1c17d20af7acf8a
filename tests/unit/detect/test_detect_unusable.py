"""Candidates a broken model gives (boxes not finite, scores above 1, classes without a name): the checks both
paths share (`nms.unusable`), the summary the GPU path carries to the host in its one copy, and the way the
GPU path's general NMS drops them (ranked last, then unflagged). The GPU runs of the same are in
tests/gpu/test_gpu_select.py."""
import numpy as np

from pipeline.config.models import DetectorConfig
from pipeline.detect import heads, nms
from pipeline.detect.detector import postprocess


def _end2end_raw() -> np.ndarray:
    """(2, 6, 6) end-to-end rows: finite ones, a NaN box, an inf box, an inf score, a logit, a class of no name."""
    inf, nan = np.inf, np.nan
    return np.array([
        [[10, 10, 20, 20, 0.9, 0], [nan, 0, 5, 5, 0.8, 1], [0, 0, inf, 5, 0.85, 2], [1, 1, 9, 9, 0.7, 2],
         [2, 2, 8, 8, inf, 1], [3, 3, 7, 7, 0.6, 7]],
        [[5, 5, 9, 9, 3.5, 0], [0, -inf, 5, 5, 0.95, 0], [4, 4, 30, 30, 0.5, 1], [1, 1, 2, 2, nan, 0],
         [6, 6, 12, 12, 0.75, nan], [7, 7, 13, 13, 0.65, 2]],
    ], np.float32)


def _candidates(raw, num_classes=3):
    decoded = heads.decode("end2end", {"o": raw}, (64, 64))
    return nms.candidates(decoded.boxes, decoded.scores, decoded.class_ids, 0.25)


def test_each_kind_of_broken_candidate_is_found_and_nan_scores_are_never_candidates():
    boxes, scores, class_ids, rows = _candidates(_end2end_raw())
    assert len(scores) == 11  # the NaN score fails the confidence threshold
    masks = {what: mask.tolist() for what, mask, _ in nms.unusable(boxes, scores, class_ids, num_classes=3)}
    assert masks == {
        "boxes that are not finite": [0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0],
        "scores above 1": [0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0],
        "class ids without a name": [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0],  # class 7 of 3, and a NaN class (-1)
    }
    without_names = nms.unusable(boxes, scores, class_ids)[2][1]
    assert without_names.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]  # only the NaN class, without names


def test_the_summary_reports_what_the_host_path_reports():
    raw = _end2end_raw()
    host = []
    postprocess(heads.decode("end2end", {"o": raw}, (64, 64)), np.array([[64, 64]] * 2),
                np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32), DetectorConfig.model_construct(),
                num_classes=3, report=lambda *r: host.append(r))
    summary = nms.unusable_summary(nms.unusable(*_candidates(raw)[:3], num_classes=3))
    assert summary.shape == (1, nms.SUMMARY_WIDTH) and summary.dtype == np.float32
    carried = []
    nms.report_unusable(summary, lambda *r: carried.append(r))
    assert [(what, count) for what, count, _ in carried] == [(what, count) for what, count, _ in host] == [
        ("boxes that are not finite", 3), ("scores above 1", 2), ("class ids without a name", 2)]
    examples, expected = {w: e for w, _, e in carried}, {w: e for w, _, e in host}
    assert np.isnan(examples["boxes that are not finite"][0]) and np.isnan(expected["boxes that are not finite"][0])
    assert examples["boxes that are not finite"][1:] == expected["boxes that are not finite"][1:] == [0, 5, 5]
    assert examples["scores above 1"] == expected["scores above 1"] == np.inf
    assert examples["class ids without a name"] == expected["class ids without a name"] == 7


def test_per_image_summaries_add_up_and_the_first_image_with_one_gives_the_example():
    summary = np.zeros((3, nms.SUMMARY_WIDTH), np.float32)
    summary[1, [1, 7]] = 2, 4.5  # image 1: two scores above 1, the first 4.5
    summary[2, [0, 1, 3, 4, 5, 6, 7]] = 1, 3, np.inf, 1, 2, 3, 9.0
    reports = []
    nms.report_unusable(summary, lambda *r: reports.append(r))
    assert reports == [("boxes that are not finite", 1, [np.inf, 1, 2, 3]), ("scores above 1", 5, 4.5)]
    nms.report_unusable(np.zeros((4, nms.SUMMARY_WIDTH), np.float32), lambda *r: reports.append(r))
    assert len(reports) == 2  # nothing to tell


def test_an_empty_candidate_list_summarises_to_zero_counts():
    summary = nms.unusable_summary(nms.unusable(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                                np.zeros(0, np.int32)))
    assert summary.tolist() == [[0.0] * nms.SUMMARY_WIDTH]


def test_broken_candidates_ranked_last_change_nothing_for_the_usable_ones():
    """The GPU path's general NMS gives broken candidates the lowest score instead of removing them (which
    would cost a host sync): ranked last, they suppress no usable box and take no place of one under the
    per-image cap. Checked here on the numpy reference that the GPU NMS equals."""
    rng = np.random.default_rng(5)
    m = 400
    xy = rng.uniform(0, 200, (m, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (m, 2))], 1).astype(np.float32)
    scores = rng.choice(np.linspace(0.3, 1, 8), m).astype(np.float32)
    classes, images = rng.integers(0, 3, m).astype(np.int32), rng.integers(0, 4, m).astype(np.int32)
    bad = rng.random(m) < 0.2
    boxes[bad & (rng.random(m) < 0.5), 2] = np.nan
    scores[bad & (rng.random(m) < 0.5)] = np.inf
    for cap, least in ((300, 41), (7, 28)):  # no image at its cap; every image at its cap
        usable = np.flatnonzero(~bad)
        expected = usable[nms.batched_nms(boxes[usable], scores[usable], classes[usable], images[usable], 0.5, cap)]
        with np.errstate(invalid="ignore"):
            keep = nms.batched_nms(boxes, np.where(bad, -np.inf, scores), classes, images, 0.5, cap)
        assert keep[~bad[keep]].tolist() == expected.tolist()
        assert len(expected) >= least


def test_a_box_wholly_in_the_letterbox_padding_is_no_detection(tmp_path):
    """Clipped to the frame it is a line of no area, which overlaps nothing: a tracker started a new track on it
    at every frame (each confirmed at once with `min_hits: 1`), and sinks stored it as a detection."""
    from onnx import TensorProto, helper, numpy_helper, save

    from pipeline.detect.detector import Detector

    rows = np.array([[[8, 24, 40, 40, 0.9, 0], [8, 2, 40, 12, 0.8, 1]]], np.float32)  # in the frame; in the top pad
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["output0"], value=numpy_helper.from_array(rows, "rows"))], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 2, 6])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    detector = Detector(DetectorConfig(model=tmp_path / "m.onnx", engine="onnxruntime", class_names=["a", "b"]))
    wide = np.zeros((32, 64, 3), np.uint8)  # letterboxed with 16 rows of padding above and below
    found, _, pad = detector.detect_images([wide])
    assert pad.tolist() == [[0, 16]]
    assert found.class_id.tolist() == [0] and found.xyxy.tolist() == [[8, 8, 40, 24]]
