"""The torch engine's conversion on the CPU (pipeline/detect/engines/torch_convert.py), on every Ultralytics export
(tests/support/ultralytics_exports.py): the module computes what ONNX Runtime computes, TorchScript / .pt2
files are read and recognised without an ONNX file, each batch bucket's copy can be captured as a CUDA graph,
and FP16 gives every operator FP16."""
import functools
import importlib.util

import numpy as np
import pytest

from pipeline.config.models import DetectorConfig
from pipeline.detect.detector import Detector
from pipeline.detect.engines.fx_specialize import specialize
from pipeline.detect.engines.onnx2torch_fixes import SHAPE_OPERATORS, half_precision
from pipeline.detect.engines.onnxruntime import read_model_info as read_onnx_info
from pipeline.detect.engines.torch_convert import load_module, read_model_info
from pipeline.detect.names import names_from_metadata
from pipeline.detect.recognize import detect_head, input_size
from pipeline.errors import ConfigError, EngineError
from pipeline.runtime.preflight import model_problems
from tests.conftest import shared_file
from tests.support.frames import letterboxed
from tests.support.ultralytics_exports import (
    CASES, MODELS, SIZE, TORCHSCRIPT_MODELS, needs_ultralytics, torchvision_stand_in,
)

torch = pytest.importorskip("torch")
TorchDispatchMode = torch.utils._python_dispatch.TorchDispatchMode

pytestmark = [
    pytest.mark.slow,
    needs_ultralytics,
    pytest.mark.skipif(importlib.util.find_spec("onnx2torch") is None, reason="needs the test extra's onnx2torch"),
]


@pytest.fixture(scope="module", autouse=True)
def _onnx2torch_importable():
    torchvision_stand_in()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Two real frames letterboxed to (2, 3, SIZE, SIZE) float32 RGB / 255."""
    return letterboxed(shared_file("media/person-bicycle-car-detection.mp4"), SIZE)


def _run(module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = module(torch.from_numpy(x.copy()))
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


def _comparable(head: str, out: np.ndarray) -> np.ndarray:
    """The whole output of an `ultralytics` head; of the top-300 heads, the sorted scores: random weights give
    scores that tie to the fifth digit, so which box is 300th and in what order is float noise."""
    return out if head == "ultralytics" else np.sort(out[..., 4], axis=1)


@pytest.mark.parametrize("model, variant", CASES)
def test_the_converted_module_computes_what_onnx_runtime_computes(exports, model, variant, images):
    """Unsimplified exports too (onnxslim runs before onnx2torch). Static exports take one image at a time."""
    import onnxruntime as ort  # noqa: PLC0415

    path = exports.get(model, variant).path
    x = images if variant.startswith("dynamic") else images[:1]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    ours = _run(load_module(path), x)
    assert ours.shape == theirs.shape and MODELS[model][2] in ours.shape[1:]
    head = MODELS[model][1]
    difference = float(np.abs(_comparable(head, ours) - _comparable(head, theirs)).max())
    print(f"\n[torch vs onnxruntime] {model} {variant}: max abs difference {difference:.2e}")
    assert difference <= 1e-4 * max(1.0, float(np.abs(theirs).max()))


@pytest.mark.parametrize("model", TORCHSCRIPT_MODELS)
def test_a_torchscript_export_is_recognised_from_its_metadata_and_equals_pytorch(exports, model, images):
    """Ultralytics writes its metadata into the archive's config.txt: head, size and names come from there."""
    export = exports.get(model, "torchscript")
    signature, metadata = read_model_info(export.path)
    config = DetectorConfig(model=export.path)
    assert detect_head(signature, metadata) == MODELS[model][1]
    assert input_size(signature, config, metadata) == (SIZE, SIZE)
    assert names_from_metadata(metadata) == [str(i) for i in range(80)]
    with torch.inference_mode():
        theirs = export.network(torch.from_numpy(images.copy()))
    theirs = (theirs[0] if isinstance(theirs, (tuple, list)) else theirs).numpy()
    head = MODELS[model][1]
    ours = _run(load_module(export.path), images)  # a batch of 2, though traced at 1
    np.testing.assert_allclose(_comparable(head, ours), _comparable(head, theirs), rtol=0,
                               atol=1e-4 * max(1.0, float(np.abs(theirs).max())))


def test_a_pt2_export_without_metadata_is_recognised_from_its_shapes(exports, images):
    """No config.txt: the input size is the shape torch.export recorded, the head follows from the output."""
    export = exports.get("yolo11n", "pt2")
    signature, metadata = read_model_info(export.path)
    assert metadata == {}
    assert detect_head(signature, metadata) == "ultralytics"
    assert input_size(signature, DetectorConfig(model=export.path), metadata) == (SIZE, SIZE)
    onnx_out = _run(load_module(exports.get("yolo11n", "dynamic").path), images)
    np.testing.assert_allclose(_run(load_module(export.path), images), onnx_out, rtol=0, atol=1e-2)


def test_a_pt2_loaded_for_another_device_copies_nothing_from_the_host(exports, images):
    """A device the export did not run on (`meta` stands in for CUDA): the devices its graph names (the anchors'
    arange) go there too, so a call copies nothing from the host."""
    path = exports.get("yolo11n", "pt2").path
    moved = load_module(path, "meta")
    assert {t.device.type for t in (*moved.parameters(), *moved.buffers())} == {"meta"}
    assert moved.stride.device.type == "cpu"  # read only as numbers (`.item()`): on the host, no device sync
    named = {str(n.kwargs["device"]) for n in moved.graph.nodes if isinstance(n.kwargs.get("device"), torch.device)}
    assert named == {"meta"}  # the arange nodes now name the target
    with torch.inference_mode(), _HostDeviceMeetings() as seen:
        out = moved(torch.zeros(2, 3, SIZE, SIZE, device="meta"))
    assert seen.meetings == []
    assert out.device.type == "meta" and tuple(out.shape) == (2, 84, _run(load_module(path), images).shape[-1])


@pytest.mark.parametrize("variant", ["torchscript", "pt2"])
def test_onnx_runtime_refuses_torch_files_and_names_the_engine_that_runs_them(exports, variant):
    path = exports.get("yolo11n", variant).path
    with pytest.raises(EngineError, match="ONNX Runtime cannot run it; use engine 'torch'"):
        read_onnx_info(path)
    with pytest.raises(ConfigError, match=r"onnxruntime reads ONNX files, not .*: engine torch does"):
        Detector(DetectorConfig(model=path, engine="onnxruntime"), max_batch=1)


@pytest.mark.parametrize("variant", ["torchscript", "pt2"])
def test_engine_auto_reads_a_torch_file_as_the_torch_engine_does(exports, variant):
    # what `fleet import` checks a file's detector with (its engine as written, `auto` by default)
    path = exports.get("yolo11n", variant).path
    problems = []
    names = model_problems(DetectorConfig(model=path), "auto", problems)
    assert problems == [] and names == model_problems(DetectorConfig(model=path, engine="torch"), "torch", [])
    assert len(names[0]) == 80


def _outputs(module, x) -> list:
    with torch.inference_mode():
        out = module(x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _host_arguments(module) -> dict:
    """The constant arguments of the operators that read them on the host (those the engine keeps there)."""
    kept = {}
    for node in module.graph.nodes:
        if node.op != "call_module" or type(module.get_submodule(node.target)).__name__ not in SHAPE_OPERATORS:
            continue
        for arg in (*node.args[1:], *node.kwargs.values()):
            if getattr(arg, "op", None) == "get_attr":
                kept[arg.target] = functools.reduce(getattr, arg.target.split("."), module)
            elif getattr(arg, "op", None) == "call_module" and not arg.args:
                kept[f"{arg.target}.value"] = module.get_submodule(arg.target).value
    return kept


class _HostDeviceMeetings(TorchDispatchMode):
    """Records every operator that gets a host tensor (other than a 0-d scalar) beside a `meta` one."""

    def __init__(self):
        super().__init__()
        self.meetings: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors if t.ndim > 0 or t.device.type == "meta"}
        if {"cpu", "meta"} <= devices:
            self.meetings.append(f"{func}: {[(tuple(t.shape), t.device.type) for t in tensors]}")
        return func(*args, **(kwargs or {}))


def _host_device_meetings(fixed, *inputs) -> list[str]:
    """Run a bucket copy as the engine does, on PyTorch's `meta` device (tensors without data) standing in for the
    GPU: the engine's `.to(device)`, then its host arguments put back on the host. A read of a device value on
    the host raises; a host tensor meeting a device tensor is returned."""
    host = _host_arguments(fixed)
    on_device = fixed.to("meta")
    for name, value in host.items():
        owner, _, attr = name.rpartition(".")
        (on_device.get_submodule(owner) if owner else on_device)._buffers[attr] = value
    watch = _HostDeviceMeetings()
    with torch.inference_mode(), watch:
        on_device(*(torch.zeros(tuple(x.shape), dtype=torch.as_tensor(x).dtype, device="meta") for x in inputs))
    return watch.meetings


@pytest.mark.parametrize("model", list(MODELS))
def test_a_bucket_copy_reads_no_shape_moves_nothing_between_host_and_device_and_computes_the_same(exports, model,
                                                                                                  images):
    """What the torch engine needs to capture a CUDA graph: each bucket's copy (`fx_specialize`) computes what the
    whole module computes and reads no shape; run on PyTorch's `meta` device (tensors without data) with the shape
    arguments on the host, as the engine keeps them, any read of a device value on the host fails and any host
    tensor meeting a device tensor is recorded."""
    images = torch.from_numpy(images.copy())
    module = load_module(exports.get(model, "dynamic").path)
    fixed = specialize(module, [images])
    assert not [n for n in fixed.graph.nodes if n.op == "call_module"
                and type(fixed.get_submodule(n.target)).__name__ in ("OnnxShape", "OnnxRange", "OnnxConstantOfShape")]
    for ours, theirs in zip(_outputs(fixed, images), _outputs(module, images), strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)

    assert _host_device_meetings(fixed, images) == []


def test_the_original_module_does_read_shapes_so_the_check_above_can_fail(exports, images):
    images = torch.from_numpy(images.copy())
    module = load_module(exports.get("yolo11n", "dynamic").path).to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)), torch.inference_mode():
        module(torch.zeros(images.shape, device="meta"))


def test_in_fp16_the_casts_to_float_follow_the_weights_and_the_numbers_stay_close(exports, images):
    """RT-DETR-L: `module.half()` alone leaves float32 casts in front of FP16 MatMuls (a dtype error)."""
    images = torch.from_numpy(images.copy())
    module = load_module(exports.get("rtdetr-l", "dynamic").path)
    full = _outputs(module, images)[0]
    with pytest.raises(RuntimeError, match="dtype"):
        _outputs(load_module(exports.get("rtdetr-l", "dynamic").path).half(), images.half())
    half = _outputs(half_precision(module), images.half())[0]
    assert half.dtype == torch.float16 and half.shape == full.shape
    scores = (half[..., 4].float().sort().values - full[..., 4].sort().values).abs()  # which box is 300th: noise
    print(f"\n[fp16 vs fp32] rtdetr-l: sorted scores differ by at most {float(scores.max()):.2e}")
    assert float(scores.max()) < 1e-2


@pytest.mark.parametrize("name", ["deimv2_hgnetv2_atto_coco_320.onnx", "deimv2_hgnetv2_femto_coco_416.onnx"])
def test_deimv2_converts_to_what_onnx_runtime_computes_and_its_bucket_copy_reads_nothing_on_the_host(shared, name):
    """DEIMv2 (head `detr`: a second input of source sizes, top-300 queries, boxes in source pixels) on real frames.
    Its `scores` are one of TopK's two outputs, which onnx2torch returned as the pair; its decoder takes
    coordinates apart with Gathers of one constant index, which read the index on the host on every call, so a
    CUDA graph capture failed (and left the process to crash later). Checked as for the exports above."""
    path = shared(f"models/{name}")
    side = int(name.rsplit("_", 1)[1].removesuffix(".onnx"))
    x = letterboxed(shared_file("media/person-bicycle-car-detection.mp4"), side)
    sizes = np.asarray([[768, 432]] * len(x), np.int64)
    import onnxruntime as ort  # noqa: PLC0415

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = dict(zip([o.name for o in session.get_outputs()],
                      session.run(None, {"images": x, "orig_target_sizes": sizes}), strict=True))
    fixed = specialize(load_module(path), [torch.from_numpy(x.copy()), torch.from_numpy(sizes)])
    with torch.inference_mode():
        ours = dict(zip(("labels", "boxes", "scores"), (t.numpy() for t in fixed(torch.from_numpy(x.copy()),
                                                                                  torch.from_numpy(sizes))), strict=True))
    np.testing.assert_allclose(ours["scores"], theirs["scores"], rtol=0, atol=1e-4)
    found = theirs["scores"] >= 0.3
    assert found.sum() >= 2
    np.testing.assert_array_equal(ours["labels"][found], theirs["labels"][found])
    np.testing.assert_allclose(ours["boxes"][found], theirs["boxes"][found], rtol=0, atol=0.05)

    assert _host_device_meetings(fixed, x, sizes) == []
