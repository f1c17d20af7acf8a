"""The committed demo detector: Ultralytics layout, dynamic batch, and accuracy on unseen worlds."""
import ast
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from samples.world import CLASS_NAMES, World
from samples.world.metrics import mean_average_precision
from samples.world.modeling import evaluate_onnx, letterbox

MODEL = Path(__file__).resolve().parents[2] / "samples" / "models" / "world_detector.onnx"
HELD_OUT = [("plaza", 950), ("street", 951), ("junction", 952)]  # training uses seeds 100-339, validation 800-811


@pytest.fixture(scope="module")
def session():
    assert MODEL.exists(), f"{MODEL} is missing; train it with `python -m samples.train_detector`"
    return ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])


def test_model_is_small_and_names_its_classes_ultralytics_style(session):
    assert MODEL.stat().st_size < 5_000_000
    meta = session.get_modelmeta().custom_metadata_map
    assert ast.literal_eval(meta["names"]) == dict(enumerate(CLASS_NAMES))
    assert ast.literal_eval(meta["imgsz"]) == [320, 320] and meta["stride"] == "32"
    (inp,) = session.get_inputs()
    assert inp.name == "images" and inp.shape[1:] == [3, 320, 320] and isinstance(inp.shape[0], str)


def test_output_is_batch_by_4_plus_nc_by_anchors_for_any_batch(session):
    image, _ = World("plaza", 950, (640, 360)).render(30)
    x = letterbox(image, 320)[0].transpose(2, 0, 1)[None].astype(np.float32) / 255
    one = session.run(None, {"images": x})[0]
    three = session.run(None, {"images": np.concatenate([np.zeros_like(x), x, x * 0.5])})[0]
    assert one.shape == (1, 4 + len(CLASS_NAMES), 2100) and three.shape == (3, 4 + len(CLASS_NAMES), 2100)
    np.testing.assert_allclose(three[1], one[0], atol=1e-3)  # rows do not leak into each other
    scores = one[0, 4:]
    assert scores.min() >= 0 and scores.max() <= 1  # sigmoid already applied
    assert 0 < np.median(one[0, 2]) < 320  # widths in input pixels


def test_detects_objects_in_worlds_it_never_saw():
    frames = [World(scene, seed, (640, 360)).render(i) for scene, seed in HELD_OUT for i in range(40, 15 * 60, 75)]
    result = mean_average_precision(evaluate_onnx(MODEL, frames), len(CLASS_NAMES))
    assert result["map50"] > 0.8, result
    assert result["per_class"][0]["ap50"] > 0.85, result  # people are most of the objects


def test_pipeline_detector_finds_the_synthetic_objects_at_default_thresholds():
    detector_module = pytest.importorskip("pipeline.detect.detector")
    from pipeline.config.models import DetectorConfig
    from samples.world.scoring import score_stream
    from samples.world.source import SyntheticReader

    detector = detector_module.Detector(DetectorConfig(model=MODEL, engine="onnxruntime"), max_batch=4)
    totals = np.zeros(3)
    try:
        assert detector.class_names == CLASS_NAMES and detector.input_size == (320, 320)
        for scene, seed in [("plaza", 953), ("street", 954), ("junction", 955)]:
            url = f"synthetic://{scene}?seed={seed}&fps=1&size=1280x720&frames=8&realtime=0"
            frames = list(SyntheticReader(url).frames())
            found, _, _ = detector.detect_images([f.image for f in frames])
            rows = [(frames[int(r)].pts_ns, found.xyxy[k], int(found.class_id[k]), float(found.score[k]), -1)
                    for k, r in enumerate(found.frame_idx)]
            report = score_stream(url, rows, frames=range(len(frames)))["detection"]
            totals += [report["tp"], report["fp"], report["fn"]]
    finally:
        detector.close()
    tp, fp, fn = totals
    assert tp / (tp + fp) > 0.75 and tp / (tp + fn) > 0.85, totals


def test_offline_tracking_accuracy_scores_every_synthetic_stream_of_the_demo():
    pytest.importorskip("pipeline.detect.detector")
    from samples.evaluate_detector import tracking_accuracy

    config = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    result = tracking_accuracy(MODEL, config, seconds=4)
    assert sorted(result["per_stream"]) == [f"cam-{i}" for i in range(1, 9)]
    assert result["mean"]["precision"] > 0.8 and result["mean"]["recall"] > 0.7, result
    assert result["mean"]["idf1"] > 0.6, result
