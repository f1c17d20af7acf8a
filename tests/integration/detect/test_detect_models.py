"""The detector on the real shared models and clips, one test per head family."""
import av
import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect import heads, preprocess
from pipeline.detect.detector import Detector, postprocess
from pipeline.detect.names import COCO80
from tests.conftest import shared_file

VEHICLES = [COCO80.index(n) for n in ("car", "bus", "truck")]
# Frames of car-detection.mp4 where a vehicle is fully or mostly in view (checked by eye).
VEHICLE_FRAMES = (100, 215, 220, 225, 230, 345)


def _frames(clip: str, indices) -> list[np.ndarray]:
    wanted = set(indices)
    out = {}
    with av.open(str(shared_file(clip))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if len(out) == len(wanted):
                break
    return [out[i] for i in indices]


@pytest.fixture(scope="module")
def car_frames():
    return _frames("media/car-detection.mp4", VEHICLE_FRAMES)


def _detector(model: str, **overrides) -> Detector:
    config = DetectorConfig(model=shared_file(f"models/{model}"), engine="onnxruntime", **overrides)
    return Detector(config, max_batch=8)


@pytest.fixture(scope="module")
def yolox():
    detector = _detector("yolox_nano_416_dynbatch.onnx")
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def deimv2():
    detector = _detector("deimv2_hgnetv2_femto_coco_416.onnx")
    yield detector
    detector.close()


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _vehicles(detections, row):
    found = detections.for_frame(row)
    return found[np.isin(found.class_id, VEHICLES)]


def test_yolox_and_deimv2_find_the_same_vehicles(car_frames, yolox, deimv2):
    assert (yolox.head, deimv2.head) == ("yolox", "detr")
    from_yolox, _, _ = yolox.detect_images(car_frames)
    from_deimv2, _, _ = deimv2.detect_images(car_frames)
    matched = total = 0
    for row in range(len(car_frames)):
        a, b = _vehicles(from_yolox, row), _vehicles(from_deimv2, row)
        sizes = a.xyxy[:, 2:] - a.xyxy[:, :2]
        assert ((sizes > 30) & (sizes < 300)).all(), f"implausible vehicle size {sizes} in frame {VEHICLE_FRAMES[row]}"
        total += len(a)
        if len(a) and len(b):
            matched += int((_iou(a.xyxy, b.xyxy).max(axis=1) > 0.7).sum())
    assert total >= len(car_frames)
    assert matched >= 0.8 * total


def test_ultralytics_head_finds_the_cars_deimv2_finds(car_frames, deimv2):
    yolo11 = _detector("agpl-test-only/yolo11n_int8_320.onnx")
    assert (yolo11.head, yolo11.max_batch, yolo11.class_names[2]) == ("ultralytics", 1, "car")
    frames = car_frames[3:5]  # frames 225 and 230
    found, _, _ = yolo11.detect_images(frames)
    reference, _, _ = deimv2.detect_images(frames)
    for row in range(len(frames)):
        a, b = _vehicles(found, row), _vehicles(reference, row)
        assert len(a) >= 1
        assert (_iou(a.xyxy, b.xyxy).max(axis=1) > 0.7).all()


def test_deimv2_atto_agrees_with_femto(car_frames, deimv2):
    atto = _detector("deimv2_hgnetv2_atto_coco_320.onnx")
    assert atto.input_size == (320, 320)
    frames = car_frames[1:5]
    small, _, _ = atto.detect_images(frames)
    large, _, _ = deimv2.detect_images(frames)
    hits = sum(
        int(len(_vehicles(small, r)) > 0 and (_iou(_vehicles(small, r).xyxy, _vehicles(large, r).xyxy) > 0.7).any())
        for r in range(len(frames))
    )
    assert hits >= 3


def test_fixed_batch_model_gives_the_dynamic_batch_results(car_frames, yolox):
    fixed = _detector("yolox_nano_416.onnx")
    assert fixed.max_batch == 1 and yolox.max_batch == 8
    one, scale_1, pad_1 = fixed.detect_images(car_frames)
    many, scale_n, pad_n = yolox.detect_images(car_frames)
    assert one.frame_idx.tolist() == many.frame_idx.tolist()
    assert one.class_id.tolist() == many.class_id.tolist()
    np.testing.assert_allclose(one.xyxy, many.xyxy, atol=1e-2)
    np.testing.assert_allclose(one.score, many.score, atol=1e-4)
    np.testing.assert_array_equal(scale_1, scale_n)


def _raw(detector: Detector, frames):
    """Preprocessed geometry and raw engine outputs of `frames` (one chunk)."""
    buffer = preprocess.allocate(len(frames), detector.spec)
    scale, pad = preprocess.preprocess_into(frames, detector.spec, buffer)
    sizes = np.asarray([(f.shape[1], f.shape[0]) for f in frames], np.int64)
    rows = [detector.engine.infer({"images": buffer[i : i + detector.max_batch]}) for i in range(0, len(frames), detector.max_batch)]
    outputs = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    return outputs, sizes, scale, pad


def _same(a, b):
    assert a.frame_idx.tolist() == b.frame_idx.tolist() and a.class_id.tolist() == b.class_id.tolist()
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    np.testing.assert_allclose(a.score, b.score, atol=1e-6)


def test_yolov5_and_ultralytics_layouts_of_real_yolox_outputs_give_the_same_detections(car_frames, yolox):
    outputs, sizes, scale, pad = _raw(yolox, car_frames)
    raw = outputs["output"]
    reference = postprocess(heads.decode("yolox", outputs, yolox.input_size), sizes, scale, pad, yolox.config)
    assert len(reference) >= len(car_frames)
    grid, stride = heads.yolox_grid(*yolox.input_size)
    decoded = np.concatenate([(raw[..., :2] + grid) * stride, np.exp(raw[..., 2:4]) * stride, raw[..., 4:]], axis=-1)
    as_yolov5 = postprocess(heads.decode("yolov5", {"o": decoded}, yolox.input_size), sizes, scale, pad, yolox.config)
    _same(reference, as_yolov5)
    v8 = np.concatenate([decoded[..., :4], decoded[..., 5:] * decoded[..., 4:5]], axis=-1).transpose(0, 2, 1)
    as_ultralytics = postprocess(heads.decode("ultralytics", {"o": v8}, yolox.input_size), sizes, scale, pad, yolox.config)
    _same(reference, as_ultralytics)


def test_end2end_layout_of_nms_results_gives_the_same_detections(car_frames, yolox):
    outputs, sizes, scale, pad = _raw(yolox, car_frames)
    reference = postprocess(heads.decode("yolox", outputs, yolox.input_size), sizes, scale, pad, yolox.config)
    # Pack the final detections, back in model-input pixels, into [B, K, 6] padded with zero scores.
    e2e = np.zeros((len(car_frames), 300, 6), np.float32)
    for row in range(len(car_frames)):
        found = reference.for_frame(row)
        model_xyxy = found.xyxy * np.tile(scale[row], 2) + np.tile(pad[row], 2)
        e2e[row, : len(found)] = np.column_stack([model_xyxy, found.score, found.class_id])
    as_e2e = postprocess(heads.decode("end2end", {"o": e2e}, yolox.input_size), sizes, scale, pad, yolox.config)
    _same(reference, as_e2e)


def test_max_candidates_sends_only_the_highest_scores_to_nms(car_frames, yolox):
    """At conf 0 every anchor is a candidate; capped at 50 per frame, NMS sees the 50 best and keeps a subset of
    them, all scoring at least the 50th best of that frame."""
    outputs, sizes, scale, pad = _raw(yolox, car_frames)
    decoded = heads.decode("yolox", outputs, yolox.input_size)
    capped = yolox.config.model_copy(update={"conf_threshold": 0.0, "max_candidates": 50})
    found = postprocess(decoded, sizes, scale, pad, capped)
    for row in range(len(car_frames)):
        fiftieth = np.sort(decoded.scores[row])[-50]
        kept = found.for_frame(row)
        assert 0 < len(kept) <= 50 and kept.score.min() >= fiftieth
    assert len(postprocess(decoded, sizes, scale, pad, capped.model_copy(update={"max_candidates": 30_000}))) > len(found)


def test_a_model_with_a_half_precision_input_finds_what_its_float32_self_finds(car_frames, yolox, tmp_path):
    """Its input was refused by ONNX Runtime on every batch (it was given float32); the images are cast now."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(shared_file("models/yolox_nano_416_dynbatch.onnx")))
    graph = model.graph
    image = graph.input[0]
    graph.node.insert(0, onnx.helper.make_node("Cast", ["images_half"], [image.name], to=onnx.TensorProto.FLOAT))
    half = onnx.helper.make_tensor_value_info("images_half", onnx.TensorProto.FLOAT16,
                                              [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim])
    graph.input.remove(image)
    graph.input.insert(0, half)
    path = tmp_path / "yolox_half_input.onnx"
    onnx.save(model, str(path))
    detector = Detector(DetectorConfig(model=path, engine="onnxruntime", head="yolox"), max_batch=8)
    try:
        found, _, _ = detector.detect_images(car_frames)
    finally:
        detector.close()
    expected, _, _ = yolox.detect_images(car_frames)
    assert found.class_id.tolist() == expected.class_id.tolist() and len(found) > 0
    np.testing.assert_allclose(found.xyxy, expected.xyxy, atol=1.0)  # the input rounded to half precision
