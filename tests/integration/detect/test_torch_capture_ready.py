"""What the torch engine needs of a converted export to capture it as a CUDA graph, checked on the CPU with
every Ultralytics export (tests/support/ultralytics_exports.py):

- each bucket's copy (`fx_specialize.specialize`) computes what the whole module computes and reads no shape;
- it moves nothing between host and device: run on PyTorch's `meta` device (tensors without data) with the
  shape arguments on the host, as the engine keeps them, any read of a device value on the host fails, and
  any host tensor meeting a device tensor is recorded;
- in FP16 every operator gets FP16 (RT-DETR casts its anchor grids to float32 in the file).
"""
import functools
import importlib.util

import numpy as np
import pytest

from pipeline.detect.engines.fx_specialize import specialize
from pipeline.detect.engines.onnx2torch_fixes import SHAPE_OPERATORS, half_precision
from pipeline.detect.engines.torch_convert import load_module
from tests.conftest import shared_file
from tests.support.frames import letterboxed
from tests.support.ultralytics_exports import MODELS, SIZE, needs_ultralytics, torchvision_stand_in

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.slow,
    needs_ultralytics,
    pytest.mark.skipif(importlib.util.find_spec("onnx2torch") is None, reason="needs the test extra's onnx2torch"),
]


@pytest.fixture(scope="module", autouse=True)
def _onnx2torch_importable():
    torchvision_stand_in()


@pytest.fixture(scope="module")
def images():
    """Two real frames letterboxed to (2, 3, SIZE, SIZE) float32 RGB / 255."""
    return torch.from_numpy(letterboxed(shared_file("media/person-bicycle-car-detection.mp4"), SIZE).copy())


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


class _HostDeviceMeetings(torch.utils._python_dispatch.TorchDispatchMode):
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


@pytest.mark.parametrize("model", list(MODELS))
def test_a_bucket_copy_reads_no_shape_moves_nothing_between_host_and_device_and_computes_the_same(exports, model,
                                                                                                  images):
    module = load_module(exports.get(model, "dynamic").path)
    fixed = specialize(module, [images])
    assert not [n for n in fixed.graph.nodes if n.op == "call_module"
                and type(fixed.get_submodule(n.target)).__name__ in ("OnnxShape", "OnnxRange", "OnnxConstantOfShape")]
    for ours, theirs in zip(_outputs(fixed, images), _outputs(module, images), strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)

    host = _host_arguments(fixed)
    on_device = fixed.to("meta")  # the engine's `.to(device)`, then its host arguments put back on the host
    for name, value in host.items():
        owner, _, attr = name.rpartition(".")
        (on_device.get_submodule(owner) if owner else on_device)._buffers[attr] = value
    watch = _HostDeviceMeetings()
    with torch.inference_mode(), watch:
        on_device(torch.zeros(images.shape, device="meta"))  # a read of a device value would raise here
    assert watch.meetings == []


def test_the_original_module_does_read_shapes_so_the_check_above_can_fail(exports, images):
    module = load_module(exports.get("yolo11n", "dynamic").path).to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)), torch.inference_mode():
        module(torch.zeros(images.shape, device="meta"))


def test_in_fp16_the_casts_to_float_follow_the_weights_and_the_numbers_stay_close(exports, images):
    """RT-DETR-L: `module.half()` alone leaves float32 casts in front of FP16 MatMuls (a dtype error)."""
    module = load_module(exports.get("rtdetr-l", "dynamic").path)
    full = _outputs(module, images)[0]
    with pytest.raises(RuntimeError, match="dtype"):
        _outputs(load_module(exports.get("rtdetr-l", "dynamic").path).half(), images.half())
    half = _outputs(half_precision(module), images.half())[0]
    assert half.dtype == torch.float16 and half.shape == full.shape
    scores = (half[..., 4].float().sort().values - full[..., 4].sort().values).abs()  # which box is 300th: noise
    print(f"\n[fp16 vs fp32] rtdetr-l: sorted scores differ by at most {float(scores.max()):.2e}")
    assert float(scores.max()) < 1e-2
