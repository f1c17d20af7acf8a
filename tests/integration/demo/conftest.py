"""A short run of the demo (configs/demo.yaml: the synthetic world, its detector, tracking, zones, lines and
alerts) into SQLite, a real PostgreSQL server, the event log and media files, shared by this folder's tests.

Three cameras (one of each scene; the plaza one an H.264 camera, so clips can be cut) render 15 s each as
fast as they can. Beside the demo's alert rules, rules of every other kind with low thresholds, the test stage
`mark` and the sample plugin `speeding` make sure every kind of event, and every kind of alert, occurs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.runtime.runner import PipelineRunner
from tests.conftest import REPO
from tests.support.postgres import postgres_server  # noqa: F401 - fixture

FRAMES = 150  # 15 s at the demo's 10 frames/s
CAMERAS = {"cam-1": "plaza?seed=1001&encode=1", "cam-2": "street?seed=1002", "cam-3": "junction?seed=1003"}
MORE_ALERTS = [
    {"name": "any-dwell", "when": "dwell", "zone": "square", "min_seconds": 1, "snapshot": True, "clip": True},
    {"name": "any-exit", "when": "exit", "zone": "crosswalk", "cooldown_s": 0},
    {"name": "any-occupancy", "when": "occupancy", "zone": "corner", "min_count": 1},
]
STAGES = [
    {"python": "pipeline.testing.sinks:MarkEveryNth", "options": {"every": 60, "clip": True}},
    {"python": "samples.stages:SpeedLimit", "options": {"limit_px_s": 40}},
]


@dataclass(frozen=True)
class DemoRuns:
    """Two runs of the same config into the same outputs: the config file (it names the SQLite file first),
    the SQLite file, the PostgreSQL DSN, the event log and the run ids, oldest first."""

    config: Path
    sqlite: Path
    postgres: str
    events: Path
    run_ids: tuple[str, str]

    def logged(self, run_id: str | None = None) -> list[dict]:
        """The events of the log (of one run), as delivered."""
        events = [json.loads(line) for line in self.events.read_text().splitlines()]
        return [e for e in events if run_id in (None, e["run_id"])]


def demo_config(tmp: Path, dsn: str) -> Path:
    """configs/demo.yaml with three finite cameras and every output under `tmp` (no webhook or broker)."""
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["streams"] = [{"id": cam, "url": f"synthetic://{where}&fps=10&size=640x360&frames={FRAMES}&realtime=0",
                        "lane": "default"} for cam, where in CAMERAS.items()]
    data["lanes"] = [lane for lane in data["lanes"] if lane["name"] == "default"]
    for place in data["zones"] + data["lines"]:
        place["streams"] = [cam for cam in place["streams"] if cam in CAMERAS]
    data["detector"]["model"] = str(REPO / data["detector"]["model"])
    data["alerts"] += MORE_ALERTS
    data["stages"] = STAGES
    data["sinks"] = [
        {"type": "sqlite", "path": str(tmp / "detections.db")},
        {"type": "postgres", "dsn": dsn},
        {"type": "jsonl", "path": str(tmp / "events.jsonl"), "what": "events"},
        {"type": "media", "directory": str(tmp / "media"), "clip_before_s": 1, "clip_after_s": 1},
    ]
    data["runtime"] = {"outbox_path": str(tmp / "outbox.db")}
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory, postgres_server) -> DemoRuns:  # noqa: F811 - the fixture imported above
    tmp = tmp_path_factory.mktemp("demo")
    dsn = postgres_server.create_database()
    config = load_config(demo_config(tmp, dsn))
    run_ids = []
    for _ in range(2):
        runner = PipelineRunner(config)
        snap = runner.run()
        assert {s["state"] for s in snap.streams.values()} == {"finished"}, snap.streams
        run_ids.append(runner.parts.run.run_id)
    yield DemoRuns(demo_config(tmp, dsn), tmp / "detections.db", dsn, tmp / "events.jsonl", tuple(run_ids))
    postgres_server.drop_database(dsn)
