"""`run` killed with SIGKILL mid-run, then started again: every event the outbox holds ends up in storage
exactly once (by event id), at the webhook at least once and in the events JSONL once."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
import yaml

from pipeline.sinks.storage import query
from pipeline.sinks.storage.query import ALL_RUNS
from tests.conftest import REPO
from tests.support.http_server import RecordingHttpServer

pytestmark = pytest.mark.fault


@pytest.fixture
def webhook():
    server = RecordingHttpServer().start()
    yield server
    server.stop()


def outbox_ids(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}


def test_events_after_sigkill_and_restart_are_stored_once_and_delivered(tmp_path, webhook):
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": cam, "url": f"fake://{cam}?fps=50"} for cam in ("a", "b")],
        "detector": {"model": "fake", "engine": "fake"},
        "zones": [{"name": "left", "polygon": [[0, 0], [20, 0], [20, 48], [0, 48]]}],
        "stages": [{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 5}}],
        "sinks": [{"type": "sqlite", "path": str(tmp_path / "site.db")}, {"type": "webhook", "url": webhook.url()},
                  {"type": "jsonl", "what": "events", "path": str(tmp_path / "events.jsonl")}],
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
    }))
    command = [sys.executable, str(REPO / "run_pipeline.py"), "run", str(config), "--quiet", "--duration"]
    log = tmp_path / "killed.log"
    with log.open("w") as output:
        killed = subprocess.Popen([*command, "120"], cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    try:
        assert len(webhook.wait_for(10, timeout=60)) >= 10, log.read_text()[-3000:]
        # The database stops taking writes (a long lock, a slow disk) while the webhook goes on: what the
        # webhook gets now is not in storage when the process is killed.
        lock = sqlite3.connect(tmp_path / "site.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        assert len(webhook.wait_for(len(webhook.received) + 20, timeout=60)) >= 30
    finally:
        killed.kill()  # SIGKILL: no drain, no flush, nothing closed
        killed.wait(30)
    delivered = {json.loads(r.body)["event_id"] for r in webhook.received}
    missing = delivered - {row[0] for row in lock.execute("SELECT event_id FROM events")}
    lock.close()
    assert len(missing) >= 10 and delivered <= outbox_ids(tmp_path / "outbox.db")

    again = subprocess.run([*command, "2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]

    held = outbox_ids(tmp_path / "outbox.db")
    assert held > delivered  # the second run's events came on top
    stored = query.events(tmp_path / "site.db", run=ALL_RUNS)
    assert len(stored) == len(held) and {e.event_id for e in stored} == held  # back-filled, each once
    assert {json.loads(r.body)["event_id"] for r in webhook.wait_for(len(held), timeout=30)} == held
    logged = [json.loads(line)["event_id"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert sorted(logged) == sorted(held)  # every event, no line twice
    runs = query.runs(tmp_path / "site.db")
    assert len(runs) == 2 and runs[0]["ended_ns"] is not None and runs[1]["ended_ns"] is None  # the killed one
