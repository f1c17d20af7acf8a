"""The example `stages:` plugin (samples/stages.py) on moving objects: per-track speeds in the
JSONL output and one `speeding` event per fast track."""
from __future__ import annotations

import json

from pipeline.config.models import PipelineConfig
from pipeline.runtime.runner import PipelineRunner


def test_the_speed_stage_adds_a_speed_to_every_track_and_reports_fast_tracks(tmp_path):
    config = PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": "cam", "url": "fake://cam?fps=25&frames=40&live=0"}],  # a square, 1 px per frame
        "detector": {"model": "fake", "engine": "fake"},
        "tracker": {"min_hits": 1, "coast_frames": 0},
        "stages": [{"python": "samples.stages:SpeedLimit", "options": {"limit_px_s": 10}}],
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "frames.jsonl"), "what": "tracks"},
                  {"type": "jsonl", "path": str(tmp_path / "events.jsonl"), "what": "events"}],
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
    })
    snap = PipelineRunner(config).run()
    frames = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    speeds = [t["speed_px_s"] for f in frames[2:] for t in f["tracks"]]
    assert len(frames) == 40 and len(speeds) == 38
    # 1 px per frame at 25 frames/s, measured on the tracker's (smoothed) boxes
    assert abs(sorted(speeds)[len(speeds) // 2] - 25.0) < 0.5 and all(20 < s < 30 for s in speeds), speeds
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["speeding"] and snap.events == 1
