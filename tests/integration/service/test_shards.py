"""Two `run --shard i/2` processes over one config file (fake cameras and engine, real HTTP, a real SQLite file
each): they run disjoint sets of cameras that together are all of them, after a reload too; a live add of
another shard's camera is refused naming that shard; what each stores names its instance."""
from __future__ import annotations

import os
import re
import sys

import yaml

from pipeline.runtime.placement import shard_of
from pipeline.sinks.storage import query
from pipeline.sinks.storage.query import ALL_RUNS
from tests.conftest import REPO
from tests.support.http_server import free_port
from tests.support.service import ServiceProcess, config_data

CAMS = [f"cam-{i}" for i in range(12)]


def write_site(path, tmp_path, cams: list[str]) -> None:
    data = config_data(tmp_path, [{"id": cam, "url": f"fake://{cam}?fps=10&live=1"} for cam in cams],
                       stages=[{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 5}}],
                       sinks=[{"type": "sqlite", "path": "${SITE_DB}"}])
    path.write_text(yaml.safe_dump(data))


def shard_process(path, tmp_path, index: int, shard: str, hostname: str) -> ServiceProcess:
    port = free_port()
    env = {**os.environ, "STREAMWEAVE_INSTANCE": f"node-{index}", "HOSTNAME": hostname,
           "SITE_DB": str(tmp_path / f"node-{index}.db")}
    command = [sys.executable, str(REPO / "run_pipeline.py"), "run", str(path), "--quiet", "--shard", shard,
               "--port", str(port), "--outbox", str(tmp_path / f"outbox-{index}.db")]
    return ServiceProcess(command, port, env=env)


def running(service: ServiceProcess) -> set[str]:
    """The cameras it runs now; none while it does not answer yet."""
    if service.status("/readyz") is None:
        return set()
    return {s["id"] for s in service.client.get("/api/streams").json() if s["state"] == "running"}


def test_two_shards_over_one_config_run_disjoint_sets_that_cover_every_camera(tmp_path):
    path = tmp_path / "site.yaml"
    write_site(path, tmp_path, CAMS)
    initial = expected = [{cam for cam in CAMS if shard_of(cam, 2) == i} for i in range(2)]
    assert all(expected)
    with shard_process(path, tmp_path, 0, "0/2", "anything") as first, \
            shard_process(path, tmp_path, 1, "auto/2", "streamweave-1") as second:
        shards = (first, second)
        for service, cams in zip(shards, expected):
            assert service.poll(lambda: running(service) == cams)
        status = [service.client.get("/status").json()["extra"] for service in shards]
        assert [(s["instance"], s["shard"]) for s in status] == [("node-0", "0/2"), ("node-1", "1/2")]
        scrape = first.client.get("/metrics").text
        assert re.search(r'^streamweave_build_info\{.*instance_name="node-0".*shard="0/2".*\} 1\.0$', scrape, re.M)
        # A camera of shard 1 sent to shard 0 is refused there, naming the shard that runs it.
        other = next(f"new-{i}" for i in range(100) if shard_of(f"new-{i}", 2) == 1)
        refused = first.client.post("/api/streams", json={"id": other, "url": f"fake://{other}?fps=10"})
        assert refused.status_code == 409
        assert f"stream '{other}' belongs to shard 1/2; this instance runs shard 0/2" in refused.json()["detail"]
        # Cameras added to the shared file: a reload of each instance starts its own only.
        more = CAMS + [f"cam-{i}" for i in range(12, 20)]
        write_site(path, tmp_path, more)
        for service in shards:
            assert service.client.post("/api/reload").status_code == 200
        expected = [{cam for cam in more if shard_of(cam, 2) == i} for i in range(2)]
        for service, cams in zip(shards, expected):
            assert service.poll(lambda: running(service) == cams)
            assert service.poll(lambda: len(query.events(tmp_path / f"node-{shards.index(service)}.db",
                                                         run=ALL_RUNS)) >= 2 * len(cams))
    assert first.returncode == 0 and second.returncode == 0, first.err[-2000:] + second.err[-2000:]
    assert f"instance node-1 runs shard 1/2: {len(initial[1])} of the config's 12 streams" in second.err
    for index, cams in enumerate(expected):
        db = tmp_path / f"node-{index}.db"
        assert [r["instance"] for r in query.runs(db)] == [f"node-{index}"]
        events = query.events(db, run=ALL_RUNS)
        assert {e.instance for e in events} == {f"node-{index}"} and {e.stream_id for e in events} == cams
