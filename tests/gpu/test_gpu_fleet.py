"""Two instances on one GPU under one PostgreSQL coordinator, standing in for two GPUs of one host: each runs
its share of sixteen paced 1080p cameras (NVDEC, the torch engine, detections stored with fencing); SIGKILL one
and its cameras deliver frames on the other within the lease time and a few seconds. Frames/s per instance
before and after, and the failover time, go to the report (docs/SCALING.md)."""
from __future__ import annotations

import threading
import time

import pytest

from tests.gpu.helpers import gpu_file

pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
from tests.support.fleet import HEARTBEAT_S, LEASE_S, Fleet
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures

CAMERAS = 16
WINDOW_S = 10.0
START_S = 20.0  # beyond lease + heartbeat: claim, NVDEC decoders and the first frame of 8 cameras


def _counters(instance) -> dict[str, dict[str, int]]:
    """camera -> its counters (decoded, frames detected, drops...), of the cameras the instance has now."""
    return {s["id"]: s["counters"] for s in instance.client.get("/api/streams").json()}


def _frames(instance) -> dict[str, int]:
    """camera -> frames detected, of the cameras the instance has now (whatever their state)."""
    return {cam: counters["frames"] for cam, counters in _counters(instance).items()}


def _why(instance) -> str:
    """What the instance says of its cameras and leases, for a failure's message."""
    states = {s["id"]: s["state"] for s in instance.client.get("/api/streams").json()}
    return f"states {states}; cluster {instance.client.get('/api/cluster').json()}; log {instance.err[-1500:]}"


def _halves(fleet) -> bool:
    """Each instance holds half the cameras."""
    held = list(fleet.holders().values())
    return len(held) == CAMERAS and held.count("gpu-a") == held.count("gpu-b")


def _window(instance) -> tuple[float, dict[str, dict[str, float]]]:
    """Frames/s the instance detects over a measuring window (the window is the measurement, not a wait), and
    per camera each counter's change per second over it (for a failure's message)."""
    before = _counters(instance)
    started = time.monotonic()
    threading.Event().wait(WINDOW_S)
    after, elapsed = _counters(instance), time.monotonic() - started
    rates = {cam: {key: round((value - before.get(cam, {}).get(key, 0)) / elapsed, 1)
                   for key, value in counters.items() if value != before.get(cam, {}).get(key, 0)}
             for cam, counters in after.items()}
    return sum(cam.get("frames", 0) for cam in rates.values()), rates


def test_two_instances_on_one_gpu_share_the_cameras_and_one_takes_over_when_the_other_dies(postgres_dsn, tmp_path,
                                                                                          report):
    clip = gpu_file("media/dog-phone-1080p.mp4")
    streams = [{"id": f"cam-{i:02d}", "url": str(clip), "loop": True, "pace": True, "decode": "nvdec"}
               for i in range(CAMERAS)]
    base = {"detector": {"model": str(gpu_file("models/yolox_nano_416_dynbatch.onnx")), "engine": "torch"},
            "sinks": [{"type": "postgres", "dsn": postgres_dsn, "flush_interval_s": 0.5}]}
    fleet = Fleet(postgres_dsn, tmp_path, streams, base)
    try:
        a, b = (fleet.start(name, capacity=CAMERAS, headroom=0.5) for name in ("gpu-a", "gpu-b"))
        # a, started first, takes every camera until b is up, then hands b its share one camera at a time:
        # settled with half each (headroom 0.5) once the moves are done
        assert a.poll(lambda: fleet.settled({"gpu-a", "gpu-b"}) and _halves(fleet), timeout=180), \
            (fleet.running(), fleet.holders(), _why(a))
        shares = {name: sorted(cam for cam, holder in fleet.holders().items() if holder == name) for name in ("gpu-a", "gpu-b")}
        rates = {"gpu-a": _window(a)[0], "gpu-b": _window(b)[0]}

        counts = _frames(a)
        b.proc.kill()
        killed = time.monotonic()
        moved = lambda: all(_frames(a).get(cam, 0) > 0 for cam in shares["gpu-b"])  # noqa: E731 - frames on a
        assert a.poll(moved, timeout=LEASE_S + HEARTBEAT_S + START_S), _why(a)
        failover_s = time.monotonic() - killed
        now = _frames(a)
        assert all(now.get(cam, 0) > counts[cam] for cam in shares["gpu-a"]), _why(a)  # its own never stopped
        alone, per_camera = _window(a)
        report("fleet_two_instances_one_gpu", cameras=CAMERAS, lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S,
               fps_per_instance=rates, fps_alone_after_takeover=alone, failover_s=failover_s,
               moved=len(shares["gpu-b"]))
        assert alone > 1.5 * rates["gpu-a"], (per_camera, _why(a))  # it now detects the other's cameras too
    finally:
        fleet.close()
        for instance in fleet.instances.values():  # shown when the test failed
            print(f"--- {instance.name} log ---\n{instance.err[-4000:]}")
