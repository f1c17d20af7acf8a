"""Event clips of streams decoded in child processes: the run the CPU and the GPU test share, and its checks.

Two copies of car-detection.mp4 (12.5 fps, a keyframe every 4.8 s) decode in two children; a stage marks
frames 150 and 301 of each with an event that asks for a snapshot and a clip (2 s before, 3 s after). The
events also go to an event log, which says which event (and so which clip) belongs to which frame."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import av
import numpy as np

from pipeline.config.models import PipelineConfig
from pipeline.runtime.snapshot import Snapshot
from pipeline.sinks.media import media_paths

STREAMS = ("lot-0", "lot-1")


def decode_all(path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def clips_in_processes(source: Path, tmp_path: Path, decode: str, detector: dict) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": stream_id, "url": str(source), "decode": decode} for stream_id in STREAMS],
        "detector": detector,
        "tracker": {"enabled": False},
        "stages": [{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 151, "clip": True}}],
        "sinks": [{"type": "media", "directory": str(tmp_path / "media"), "clip_before_s": 2.0, "clip_after_s": 3.0,
                   "clips": True},  # the plugin's events ask for clips
                  {"type": "jsonl", "what": "events", "path": str(tmp_path / "events.jsonl")}],
        "runtime": {"decode_processes": 2, "outbox_path": str(tmp_path / "outbox.db")},
    })


def check_clips(snap: Snapshot, source: Path, tmp_path: Path) -> None:
    """Every frame detected, four events, four snapshots and clips; the clip of frame 150 (12.0 s) runs from
    the keyframe at 9.6 s (frame 120, bit-exact: remuxed, not re-encoded) to the first frame at or after 15.0 s."""
    assert snap.frames_detected == len(STREAMS) * len(decode_all(source)) and snap.events == 4
    media = snap.sinks["media"]
    assert (media["clips"], media["clips_missed"], media["errors"], media["snapshots"]) == (4, 0, 0, 4)
    with av.open(str(source)) as original:
        keyframe = next(itertools.islice(original.decode(video=0), 120, None)).to_ndarray(format="rgb24")
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    marked = {(e["stream_id"], e["payload"]["seq"]): e["event_id"] for e in events}
    for stream_id in STREAMS:
        frames = decode_all(media_paths(tmp_path / "media", stream_id, marked[stream_id, 150]).clip)
        assert frames[0].key_frame and len(frames) == 188 - 120 + 1
        assert np.array_equal(frames[0].to_ndarray(format="rgb24"), keyframe)
        later = decode_all(media_paths(tmp_path / "media", stream_id, marked[stream_id, 301]).clip)
        assert later[0].key_frame and len(later) > 60
