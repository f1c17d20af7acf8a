"""A fleet on one host: `run_pipeline.py run` processes sharing cameras through a real PostgreSQL.

`Fleet(dsn, tmp_path, streams, base)` imports `streams` (`fleet import`) and starts instances on demand, each
with `base` (detector, stages, sinks: a config without cameras) and its own name, port, outbox and
`runtime.cluster`. Short leases (3 s, a heartbeat of 0.5 s) keep failovers quick. The fake-camera fleet of
the CPU tests is in tests/integration/cluster/conftest.py, a fleet on a GPU in tests/gpu/test_gpu_fleet.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

import psycopg
import yaml

from tests.conftest import REPO
from tests.support.postgres import free_port
from tests.support.service import ServiceProcess

LEASE_S, HEARTBEAT_S = 3.0, 0.5


class Instance(ServiceProcess):
    def __init__(self, name: str, command: list[str], port: int, env: dict):
        super().__init__(command, port, env=env)
        self.name = name

    def running(self) -> set[str]:
        """The cameras this instance runs now (its API), or an empty set while it does not answer."""
        try:
            return {s["id"] for s in self.client.get("/api/streams").json() if s["state"] == "running"}
        except Exception:  # noqa: BLE001 - not up yet, stopped, or killed: it runs nothing it can tell of
            return set()

    def cluster(self) -> dict:
        return self.client.get("/api/cluster").json()


class Fleet:
    def __init__(self, dsn: str, tmp_path, streams: list[dict], base: dict):
        self.dsn, self.tmp_path, self.base = dsn, tmp_path, base
        self.cameras = sorted(stream["id"] for stream in streams)
        self.instances: dict[str, Instance] = {}
        self.paused: set[str] = set()  # stopped by SIGSTOP: asking them would wait for the client's timeout
        cameras = tmp_path / "cameras.yaml"
        cameras.write_text(yaml.safe_dump({"plugins": base.get("plugins", []), "streams": streams}))
        imported = self.command("import", str(cameras))
        assert imported.returncode == 0, imported.stderr

    def command(self, *args: str) -> subprocess.CompletedProcess:
        """`run_pipeline.py fleet ARGS --dsn DSN`."""
        return subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "fleet", *args, "--dsn", self.dsn],
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    def start(self, name: str, capacity: int = 8, headroom: float = 0.25, env: dict | None = None) -> Instance:
        port = free_port()
        config = self.tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({
            **self.base, "streams": [],
            "runtime": {**self.base.get("runtime", {}), "outbox_path": str(self.tmp_path / f"{name}-outbox.db"),
                        "instance": name,
                        "http": {"port": port}, "log_interval_s": 3600,
                        "cluster": {"dsn": self.dsn, "capacity": capacity, "headroom": headroom, "lease_s": LEASE_S,
                                    "heartbeat_s": HEARTBEAT_S, "url": f"http://127.0.0.1:{port}"}},
        }))
        command = [sys.executable, str(REPO / "run_pipeline.py"), "run", str(config), "--quiet"]
        instance = Instance(name, command, port, {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.instances[name] = instance
        if not instance.poll(lambda: instance.status("/healthz") == 200):
            instance.stop(timeout=30)
            raise AssertionError(f"instance {name} did not start: {instance.err[-3000:]}")
        return instance

    def sql(self, query: str, params=()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def holders(self) -> dict[str, str]:
        """camera -> instance holding a valid lease of it."""
        return dict(self.sql("SELECT camera_id, instance FROM fleet_leases WHERE expires_at > now()"))

    def running(self) -> dict[str, list[str]]:
        """camera -> the instances that say they run it."""
        where = defaultdict(list)
        for instance in self.instances.values():
            if instance.proc.poll() is None and instance.name not in self.paused:
                for camera in instance.running():
                    where[camera].append(instance.name)
        return dict(where)

    def settled(self, names: set[str]) -> bool:
        """Every camera runs on exactly one of `names`, which holds its lease."""
        running, holders = self.running(), self.holders()
        return sorted(running) == self.cameras and all(len(on) == 1 and on[0] in names and holders.get(camera) == on[0]
                                                  for camera, on in running.items())

    def run_ids(self) -> dict[str, str]:
        """instance -> run id (of those that answer)."""
        return {name: instance.client.get("/status").json()["extra"]["run_id"]
                for name, instance in self.instances.items() if instance.proc.poll() is None and name not in self.paused}

    def close(self) -> None:
        for instance in self.instances.values():
            if instance.returncode is None and instance.proc.poll() is None:
                instance.stop(timeout=60)
            elif instance.returncode is None:
                instance.proc.wait(10)
