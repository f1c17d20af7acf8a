"""Engine selection: `engine: auto` picks TensorRT > PyTorch-CUDA > ONNX Runtime CUDA > ONNX Runtime CPU."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from pipeline.config.models import DetectorConfig
from pipeline.detect.engines.base import Engine
from pipeline.errors import EngineError

__all__ = ["Engine", "create_engine", "nvidia_gpu_present"]


def nvidia_gpu_present() -> bool:
    """True when the NVIDIA driver reports a GPU (no CUDA library is loaded to find out)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def create_engine(config: DetectorConfig, max_batch: int) -> tuple[Engine, str]:
    """The engine `config.engine` names (or the best available for "auto") and why it was chosen.

    Raises EngineError when an explicitly named engine cannot run here.
    """
    if config.engine != "auto":
        return _build(config.engine, config, max_batch), f"{config.engine}: requested by detector.engine"
    skipped: list[str] = []
    for name in _auto_order(skipped):
        try:
            engine = _build(name, config, max_batch)
        except (EngineError, ImportError) as exc:
            skipped.append(f"{name} unavailable ({exc})")
            continue
        return engine, f"{engine.name}: " + ("; ".join(skipped) if skipped else "best available")
    raise EngineError(f"no inference engine could load '{config.model}': " + "; ".join(skipped))


def _auto_order(skipped: list[str]) -> list[str]:
    """Engines worth trying here, best first; appends the reasons for the others to `skipped`."""
    from pipeline.detect.engines.onnxruntime import cuda_provider_available  # noqa: PLC0415

    if not nvidia_gpu_present():
        missing = [n for n, m in (("TensorRT", "tensorrt"), ("torch", "torch")) if importlib.util.find_spec(m) is None]
        skipped.append("no CUDA GPU found")
        if missing:
            skipped.append(" and ".join(missing) + " not installed")
        return ["onnxruntime"]
    order = []
    for name, module in (("tensorrt", "tensorrt"), ("torch", "torch")):
        if importlib.util.find_spec(module) is None:
            skipped.append(f"{module} not installed")
        else:
            order.append(name)
    if cuda_provider_available():
        order.append("onnxruntime-cuda")
    else:
        skipped.append("onnxruntime has no CUDA provider")
    return [*order, "onnxruntime"]


def _build(name: str, config: DetectorConfig, max_batch: int) -> Engine:
    if name in ("onnxruntime", "onnxruntime-cuda"):
        from pipeline.detect.engines.onnxruntime import OnnxRuntimeEngine  # noqa: PLC0415

        return OnnxRuntimeEngine(config.model, config, max_batch, use_cuda=name == "onnxruntime-cuda")
    module_name, class_name = {
        "tensorrt": ("pipeline.detect.engines.tensorrt_engine", "TensorRTEngine"),
        "torch": ("pipeline.detect.engines.torch_engine", "TorchEngine"),
    }[name]
    try:  # GPU engines import cupy/torch/tensorrt in their constructors, so a missing one shows up here too
        module = importlib.import_module(module_name)
        return getattr(module, class_name)(Path(config.model), config, max_batch)
    except ImportError as exc:
        raise EngineError(f"engine '{name}' cannot run here ({exc}); install the gpu extra or use engine 'onnxruntime'") from exc
