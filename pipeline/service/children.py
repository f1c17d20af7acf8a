"""What `run CONFIG --gpus all|0,1|N` starts: one child `run` per GPU, and when to start one again.

Each child sees only its GPU (`CUDA_VISIBLE_DEVICES`, with `CUDA_DEVICE_ORDER=PCI_BUS_ID` so CUDA numbers the
GPUs as NVML and nvidia-smi do): NVDEC, the kernels and the engine all use "device 0", which is that GPU. Child
k of the base instance `edge-1` is the instance `edge-1-gpu<k>` (`STREAMWEAVE_INSTANCE`, and `--instance`, which
wins over a name in the file), serves HTTP on the base port + k (0 stays 0: any free port) and keeps its outbox
in `<outbox stem>-gpu<k><suffix>`. Without `runtime.cluster` in the file the children split the cameras with
`--shard k/N` (`--shard i/M` of the supervisor too: host i of M with N GPUs runs shards i*N+k of M*N); with it,
each joins the coordinator and claims cameras itself. Pure logic, no processes: `supervisor.py` runs them
(`tie_to_supervisor` is what a child runs first).
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.backoff import Backoff
from pipeline.config.models import DEFAULT_HTTP_PORT, PipelineConfig
from pipeline.errors import ConfigError
from pipeline.runtime.placement import Shard

EXIT_CONFIG = 2
"""A child that ended with this (a config error) would fail the same way again: it is not restarted."""
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
CHILD_MAIN = (f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); sys.argv[0] = 'streamweave'; "
              "from pipeline.service.children import tie_to_supervisor; tie_to_supervisor(); "
              "from pipeline.cli import main; sys.exit(main())")
"""A child runs this `pipeline` (the supervisor's), whatever its working directory puts first on the path, tied
to its supervisor before it takes a port or a GPU."""
SUPERVISOR_PID = "STREAMWEAVE_SUPERVISOR_PID"
"""The environment variable with the process id of the supervisor that started a child."""
PR_SET_PDEATHSIG = 1
"""prctl(2): the signal this process gets when its parent ends."""
_LIST = re.compile(r"^\d+(,\d+)*,?$")
_DEVICE = re.compile(r"^(\d+|(GPU|MIG)-\S+)$")
"""An entry of CUDA_VISIBLE_DEVICES that names a GPU: its index or UUID (`GPU-...`, `MIG-...`)."""


@dataclass(frozen=True)
class Child:
    """One supervised instance: index k, the GPU it sees, its name, port and outbox, and how it is started."""

    index: int
    gpu: str
    instance: str
    port: int
    outbox: Path
    argv: list[str] = field(hash=False)
    env: dict[str, str] = field(hash=False, repr=False)


def tie_to_supervisor() -> None:
    """In a child, before anything else: get SIGTERM (a stop, as the supervisor's own) when the supervisor ends,
    SIGKILLed included, so that no child goes on holding its port and GPU without it (Linux only: prctl
    PR_SET_PDEATHSIG). SystemExit when the supervisor (`$STREAMWEAVE_SUPERVISOR_PID`) has already ended, on
    every system: the signal would never come."""
    supervisor = int(os.environ[SUPERVISOR_PID])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != supervisor:
        raise SystemExit(f"the supervisor (pid {supervisor}) has ended; this instance does not start without it")


def parse_gpus(text: str, discover=None) -> list[str]:
    """The GPUs `--gpus` names, as `CUDA_VISIBLE_DEVICES` entries: `all` (every GPU `discover()` finds), a list of
    indices (`0,1`; a single index as `3,`), taken as given, or a count N (the first N found). ConfigError saying
    what to write otherwise. discover: () -> list[str] (default `discover_gpus`)."""
    text = text.strip()
    discover = discover or discover_gpus
    if text == "all":
        return discover()
    if not _LIST.match(text):
        raise ConfigError(f"--gpus {text!r}: give all, a list of GPU indices like 0,1 (one GPU: 3,), or a count N")
    if "," not in text:
        count, found = int(text), discover()
        if not 1 <= count <= len(found):
            raise ConfigError(f"--gpus {text}: {len(found)} GPU(s) found ({', '.join(found)}); ask for 1 to "
                              f"{len(found)}, or name them: --gpus 0,1")
        return found[:count]
    gpus = [g for g in text.split(",") if g]
    if len(set(gpus)) < len(gpus):
        raise ConfigError(f"--gpus {text}: a GPU is named twice; each GPU runs one instance")
    return gpus


def discover_gpus() -> list[str]:
    """Indices of this host's GPUs as CUDA_VISIBLE_DEVICES entries: where CUDA_VISIBLE_DEVICES is set (a container
    given some GPUs), the GPUs CUDA sees through it (its entries up to the first that names no GPU), else NVML's
    (nvidia-ml-py), else `nvidia-smi -L`'s. ConfigError when none: also when CUDA_VISIBLE_DEVICES hides them all
    (empty, `-1`)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return _visible(visible)
    why = []
    try:
        import pynvml  # noqa: PLC0415 - optional (the gpu extra)

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
        if count:
            return [str(i) for i in range(count)]
        why.append("NVML sees no GPU")
    except ImportError:
        why.append("nvidia-ml-py is not installed")
    except Exception as exc:  # noqa: BLE001 - any NVMLError: no driver, no device
        why.append(f"NVML: {exc}")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        why.append("no nvidia-smi")
    else:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        listed = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
        if done.returncode == 0 and listed:
            return [str(i) for i in range(len(listed))]
        why.append(f"nvidia-smi -L lists none ({(done.stderr or done.stdout).strip()[:200] or 'no output'})")
    raise ConfigError(f"--gpus: no GPU found ({'; '.join(why)}); run without --gpus on a machine without GPUs, "
                      "or name them: --gpus 0,1")


def _visible(value: str) -> list[str]:
    """The GPUs CUDA sees with CUDA_VISIBLE_DEVICES=`value`: the entries before the first that names no GPU."""
    gpus = []
    for entry in value.split(","):
        if not _DEVICE.match(entry.strip()):
            break
        gpus.append(entry.strip())
    if not gpus:
        raise ConfigError(f"--gpus: CUDA_VISIBLE_DEVICES={value!r} hides every GPU (CUDA reads it up to the first "
                          "entry that is not a GPU index or UUID); unset it to use this host's GPUs, list them in it "
                          "(CUDA_VISIBLE_DEVICES=0,1), or run without --gpus on the CPU")
    return gpus


def has_cluster(raw: object) -> bool:
    """Whether the file's YAML mapping has `runtime.cluster` (instances then claim cameras from a coordinator)."""
    runtime = raw.get("runtime") if isinstance(raw, dict) else None
    return isinstance(runtime, dict) and runtime.get("cluster") is not None


def outbox_of(base: Path, index: int) -> Path:
    """`runs/outbox.db` -> `runs/outbox-gpu<index>.db`."""
    return base.with_name(f"{base.stem}-gpu{index}{base.suffix}")


def plan_children(config_path: str, config: PipelineConfig, raw: object, gpus: list[str], *,
                  port: int | None = None, outbox: Path | None = None, shard: Shard | None = None,
                  passthrough: list[str] = (), environ: dict[str, str] | None = None) -> list[Child]:
    """One Child per GPU of `gpus` for the file `config_path` (validated as `config`; `raw` its YAML mapping).
    port, outbox: the supervisor's `--port`/`--outbox` (else the file's, else the defaults). shard: the
    supervisor's own `--shard` (this host's share). passthrough: options every child gets (`--quiet`, ...)."""
    environ = dict(os.environ if environ is None else environ)
    if config.detector.device != 0:
        raise ConfigError(f"--gpus: detector.device is {config.detector.device}, but each child sees only its own GPU, "
                          "as device 0; take detector.device out of the file (or set it to 0)")
    base_port = port if port is not None else (config.runtime.http.port if config.runtime.http else DEFAULT_HTTP_PORT)
    if base_port and base_port + len(gpus) - 1 > 65535:
        raise ConfigError(f"--gpus: ports {base_port} to {base_port + len(gpus) - 1} do not all exist; use a lower "
                          "runtime.http.port or --port")
    base_outbox = outbox or config.runtime.outbox_path
    sharded = not has_cluster(raw)
    host = shard or Shard(0, 1)
    children = []
    for k, gpu in enumerate(gpus):
        instance = f"{config.runtime.instance}-gpu{k}"
        child_port = base_port + k if base_port else 0
        child_outbox = outbox_of(base_outbox, k)
        argv = [sys.executable, "-c", CHILD_MAIN, "run", config_path, "--instance", instance, "--port",
                str(child_port), "--outbox", str(child_outbox), *passthrough]
        if sharded:
            argv += ["--shard", f"{host.index * len(gpus) + k}/{host.count * len(gpus)}"]
        env = {**environ, "CUDA_VISIBLE_DEVICES": gpu, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
               "STREAMWEAVE_INSTANCE": instance}
        children.append(Child(k, gpu, instance, child_port, child_outbox, argv, env))
    return children


class RestartPolicy:
    """When a child that ended is started again: never after a stop was asked for, nor after it ended by itself
    (0: its run is over) or with a config error (2: it would again); else after `backoff`'s delay, which starts
    over once a child ran `stable_s` (a crash after an hour is not part of the outage before it)."""

    def __init__(self, backoff: Backoff, stable_s: float = 60.0):
        self.backoff, self.stable_s = backoff, stable_s

    def delay(self, returncode: int, ran_s: float, stopping: bool) -> float | None:
        """Seconds until the restart, or None: not restarted."""
        if stopping or returncode in (0, EXIT_CONFIG):
            return None
        if ran_s >= self.stable_s:
            self.backoff.reset()
        return self.backoff.next_delay()


def overall_exit(codes: list[int]) -> int:
    """The supervisor's exit code from its children's last ones: 0 when all ended well, 2 when one had a config
    error, else the largest (a child killed by a signal counts 1)."""
    codes = [1 if code < 0 else code for code in codes]
    if EXIT_CONFIG in codes:
        return EXIT_CONFIG
    return max(codes, default=0)
