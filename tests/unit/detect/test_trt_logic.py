"""TensorRT bookkeeping without TensorRT: engine keys, cache files, profiles and calibration batches."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.detect.engines import trt_keys


def _key(**changes) -> trt_keys.EngineKey:
    base = trt_keys.EngineKey(
        onnx_sha256="ab" * 32, tensorrt_version="10.13.0", gpu_name="NVIDIA H200", compute_capability="9.0",
        precision="fp16", profiles=(trt_keys.profile_for("images", (3, 416, 416), 64),),
    )
    return replace(base, **changes)


def test_engine_key_is_stable_for_the_same_inputs():
    assert _key().digest() == _key().digest()
    assert len(_key().digest()) == 16


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "cd" * 32},
    {"tensorrt_version": "10.14.1"},
    {"gpu_name": "NVIDIA H100 80GB HBM3"},
    {"compute_capability": "8.9"},
    {"precision": "int8"},
    {"profiles": (trt_keys.profile_for("images", (3, 416, 416), 32),)},
    {"profiles": (trt_keys.profile_for("images", (3, 416, 416), 64, opt_batch=16),)},
    {"profiles": (trt_keys.profile_for("images", (3, 640, 640), 64),)},
])
def test_any_change_the_engine_depends_on_changes_the_key_and_the_file(change, tmp_path):
    before, after = _key(), _key(**change)
    assert before.digest() != after.digest()
    model = tmp_path / "yolo.onnx"
    assert trt_keys.cache_paths(tmp_path, model, before).engine != trt_keys.cache_paths(tmp_path, model, after).engine


def test_timing_cache_is_shared_by_models_but_not_by_gpus_or_tensorrt_versions(tmp_path):
    a = trt_keys.cache_paths(tmp_path, tmp_path / "a.onnx", _key())
    b = trt_keys.cache_paths(tmp_path, tmp_path / "b.onnx", _key(onnx_sha256="ef" * 32, precision="int8"))
    other_gpu = trt_keys.cache_paths(tmp_path, tmp_path / "a.onnx", _key(gpu_name="NVIDIA L4", compute_capability="8.9"))
    newer = trt_keys.cache_paths(tmp_path, tmp_path / "a.onnx", _key(tensorrt_version="10.14.1"))
    assert a.timing == b.timing
    assert len({a.timing, other_gpu.timing, newer.timing}) == 3
    assert a.timing.name == "timing-trt10.13.0-nvidia-h200-sm9.0.cache"


def test_calibration_cache_follows_the_model_and_frame_count_not_the_gpu(tmp_path):
    model = tmp_path / "yolo.onnx"
    base = trt_keys.cache_paths(tmp_path, model, _key(), calibration_images=256)
    assert base.calibration == trt_keys.cache_paths(tmp_path, model, _key(gpu_name="NVIDIA L4"), 256).calibration
    assert base.calibration != trt_keys.cache_paths(tmp_path, model, _key(), 512).calibration
    assert base.calibration != trt_keys.cache_paths(tmp_path, model, _key(onnx_sha256="00" * 32), 256).calibration


def test_file_hash_changes_with_one_byte(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\x07" * 5000)
    first = trt_keys.file_sha256(path, chunk=1000)
    path.write_bytes(b"\x08\x07" * 4999 + b"\x08\x08")
    assert first != trt_keys.file_sha256(path)
    assert len(first) == 64


def test_profile_spans_batch_one_to_max_and_tunes_for_full_batches_by_default():
    p = trt_keys.profile_for("images", (3, 384, 640), 32)
    assert (p.min, p.opt, p.max) == ((1, 3, 384, 640), (32, 3, 384, 640), (32, 3, 384, 640))
    assert trt_keys.profile_for("images", (3, 384, 640), 32, opt_batch=8).opt[0] == 8
    assert trt_keys.profile_for("images", (3, 384, 640), 32, opt_batch=99).opt[0] == 32
    with pytest.raises(ValueError, match="max_batch"):
        trt_keys.profile_for("images", (3, 384, 640), 0)


def test_key_description_names_gpu_precision_and_batch_range():
    line = _key().describe()
    assert "NVIDIA H200 (sm 9.0)" in line and "fp16" in line and "images 1/64/64" in line


def test_calibration_batches_are_full_contiguous_and_capped():
    images = (np.full((3, 4, 5), i, np.float32) for i in range(23))
    batches = list(trt_keys.calibration_batches(images, batch_size=4, limit=18))
    assert [b.shape for b in batches] == [(4, 3, 4, 5)] * 4  # 18 images -> 4 full batches, 2 dropped
    assert all(b.flags.c_contiguous and b.dtype == np.float32 for b in batches)
    assert [int(b[0, 0, 0, 0]) for b in batches] == [0, 4, 8, 12]


def test_input_shapes_fill_the_batch_and_dynamic_image_dimensions_from_the_profile():
    assert trt_keys.input_shape((-1, 3, 416, 416), 8, (3, 416, 416)) == (8, 3, 416, 416)
    assert trt_keys.input_shape((-1, 3, -1, -1), 8, (3, 640, 384)) == (8, 3, 640, 384)
    assert trt_keys.input_shape((-1, 2), 5) == (5, 2)  # a second input (DETR target sizes)
    with pytest.raises(ValueError, match="dynamic dimensions besides the batch"):
        trt_keys.input_shape((-1, -1), 5)


def test_int8_engines_calibrated_through_other_preprocessing_are_rebuilt_and_recalibrated(tmp_path):
    """An INT8 engine holds the value ranges of the frames it was calibrated on, as preprocessing made them: after a
    change of detector.preprocess (scale 1 to 1/255, say) or detector.head, the engine and the calibration cache of
    before were loaded again, and every activation was quantised to ranges 255 times off, silently."""
    model = tmp_path / "yolo.onnx"
    default = trt_keys.calibration_of("auto", {})
    scaled = trt_keys.calibration_of("auto", {"scale": 1.0})
    assert default == "" and len({scaled, trt_keys.calibration_of("yolox", {}), default}) == 3
    keys = [_key(precision="int8", calibration=c) for c in (default, scaled)]
    paths = [trt_keys.cache_paths(tmp_path, model, key, 256) for key in keys]
    assert keys[0].digest() != keys[1].digest() and paths[0].engine != paths[1].engine
    assert paths[0].calibration != paths[1].calibration
