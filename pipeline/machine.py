"""What this machine can do, probed once: GPU, NVDEC, installed engines, CPU cores.

`config.resolve` turns a config plus a `Machine` into the run's plan; tests pass a `Machine` of their
own to plan for hardware they do not have.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

OPTIONAL_MODULES = ("tensorrt", "torch", "onnx2torch", "cupy", "PyNvVideoCodec")
"""Packages whose presence decides an `auto` (engine, decoder); looked up, not imported."""


@dataclass(frozen=True)
class Machine:
    """cores: CPU cores this process may use. gpu: the NVIDIA driver reports a GPU. nvdec: NVDEC decode
    works (with `nvdec_reason` saying on what, or why not). modules: which of `OPTIONAL_MODULES` are
    installed. ort_providers: onnxruntime's execution providers. mps: NVIDIA's Multi-Process Service runs
    (`mps_running`), so processes on the GPU share it instead of taking turns. cuda_devices: how many CUDA devices
    this process sees (after CUDA_VISIBLE_DEVICES), None where they were not counted (no GPU, or no cupy)."""

    cores: int
    gpu: bool = False
    nvdec: bool = False
    nvdec_reason: str = "no CUDA GPU found"
    modules: frozenset[str] = frozenset()
    ort_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    mps: bool = False
    cuda_devices: int | None = None

    def describe(self) -> str:
        gpu = f"GPU yes, {self.nvdec_reason}, MPS {'on' if self.mps else 'off'}" if self.gpu else "no GPU"
        return f"{self.cores} cores, {gpu}; installed: {', '.join(sorted(self.modules)) or 'no GPU packages'}"


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def nvidia_gpu_present() -> bool:
    """True when the NVIDIA driver reports a GPU (no CUDA library is loaded to find out)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


@functools.cache
def probe(device: int = 0) -> Machine:
    """This machine (cached: the answer does not change while the process runs)."""
    import onnxruntime  # noqa: PLC0415 - only when a plan is made

    modules = frozenset(m for m in OPTIONAL_MODULES if importlib.util.find_spec(m) is not None)
    gpu = nvidia_gpu_present()
    nvdec, reason = nvdec_status(device) if gpu else (False, "no CUDA GPU found")
    return Machine(cpu_cores(), gpu, nvdec, reason, modules, tuple(onnxruntime.get_available_providers()),
                   gpu and mps_running(), cuda_device_count() if gpu else None)


def cuda_device_count() -> int | None:
    """The CUDA devices this process sees, or None where cupy is absent or CUDA cannot count them."""
    try:
        import cupy  # noqa: PLC0415 - GPU stack

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - ImportError, or cupy's CUDARuntimeError and driver errors
        return None


def mps_running(environ=os.environ) -> bool:
    """True when an MPS control daemon's pipe is where CUDA programs of this environment look for it
    (CUDA_MPS_PIPE_DIRECTORY, /tmp/nvidia-mps by default; a daemon killed without `quit` may leave it). Started with
    `nvidia-cuda-mps-control -d`, it lets the decode processes' kernels and copies run beside the
    network instead of taking turns with it (docs/GPU.md)."""
    return (Path(environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")) / "control").exists()


def nvdec_status(device: int = 0) -> tuple[bool, str]:
    """Whether NVDEC decode can run here, and why not: (True, "nvdec on <GPU>") or (False, reason)."""
    try:
        import cupy  # noqa: PLC0415 - GPU stack

        count = cupy.cuda.runtime.getDeviceCount()
    except ImportError as exc:
        return False, f"cupy is not installed ({exc})"
    except Exception as exc:  # noqa: BLE001 - cupy raises CUDARuntimeError or driver errors without a GPU
        return False, f"no CUDA device ({type(exc).__name__}: {exc})"
    if count <= device:
        return False, f"CUDA device {device} does not exist ({count} found)"
    try:
        import PyNvVideoCodec  # noqa: F401, PLC0415 - GPU stack
    except (ImportError, RuntimeError, OSError) as exc:
        return False, f"PyNvVideoCodec cannot load ({str(exc).splitlines()[0]})"
    name = cupy.cuda.runtime.getDeviceProperties(device)["name"]
    return True, f"nvdec on {name.decode() if isinstance(name, bytes) else name}"
