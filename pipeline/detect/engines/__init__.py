"""Inference engines. Which one runs is decided by `pipeline.config.resolve` (the `DetectorPlan`);
`build_engine` makes it from the plugin registry (`pipeline.plugins`), where the built-in ones are
TensorRT, PyTorch-CUDA, ONNX Runtime CUDA and ONNX Runtime CPU."""
from __future__ import annotations

from pathlib import Path

from pipeline import plugins
from pipeline.config.models import DetectorConfig
from pipeline.config.resolve import DetectorPlan
from pipeline.detect.engines.base import DeviceEngine, Engine
from pipeline.detect.engines.onnxruntime import read_model_info
from pipeline.detect.heads import ModelSignature
from pipeline.errors import EngineError

__all__ = ["DeviceEngine", "Engine", "build_engine", "read_model"]


def read_model(engine: str, model_path: Path) -> tuple[ModelSignature, dict[str, str]]:
    """The signature and metadata of `model_path` as engine `engine` sees them: its own `model_info`, else
    the ONNX file (every built-in engine loads the ONNX file). `auto` reads a model of another format (TorchScript,
    torch.export) as the best engine that loads that format would. EngineError when the file cannot be read as a
    model."""
    fmt = plugins.model_format(model_path)
    if engine == "auto" and fmt != "onnx":
        kind = next((k for k in plugins.engines_by_rank() if fmt in k.formats and k.model_info), None)
    else:
        kind = plugins.engine(engine) if engine != "auto" else None
    return (plugins.resolve(kind.model_info) if kind and kind.model_info else read_model_info)(model_path)


def build_engine(config: DetectorConfig, plan: DetectorPlan) -> Engine:
    """The engine `plan.engine` names, loading `config.model`; EngineError when it cannot."""
    try:  # GPU engines import cupy/torch/tensorrt in their constructors, so a missing one shows up here too
        factory = plugins.resolve(plugins.engine(plan.engine).factory)
        return factory(Path(config.model), config, plan)
    except (ImportError, ValueError) as exc:
        raise EngineError(f"engine '{plan.engine}' cannot run here ({exc}); install the gpu extra or use "
                          "engine 'onnxruntime'") from exc
