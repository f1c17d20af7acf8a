"""Event clips while NVDEC streams decode in child processes: cut in the child from the stream's own
packets, on the media sink's request (the CPU twin is tests/integration/sources/test_clips_in_decode_processes.py)."""
from __future__ import annotations

import itertools

import av
import numpy as np

from pipeline.config.models import PipelineConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.sinks.media import media_paths
from pipeline.types import make_event_id
from tests.gpu.helpers import gpu_file


def decode_all(path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_clips_of_nvdec_streams_in_decode_processes_are_the_sources_own_frames(tmp_path, report):
    source = gpu_file("media/car-detection.mp4")  # 12.5 fps, a keyframe every 4.8 s
    config = PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": f"lot-{i}", "url": str(source), "decode": "nvdec"} for i in range(2)],
        "detector": {"model": str(gpu_file("models/yolox_nano_416_dynbatch.onnx")), "engine": "torch"},
        "tracker": {"enabled": False},
        "stages": [{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 151, "clip": True}}],
        "sinks": [{"type": "media", "directory": str(tmp_path / "media"), "clip_before_s": 2.0, "clip_after_s": 3.0,
                   "clips": True}],
        "runtime": {"decode_processes": 2, "outbox_path": str(tmp_path / "outbox.db")},
    })
    runner = PipelineRunner(config)
    assert all(s.in_child and s.decoder == "nvdec" for s in runner.plan.streams)
    snap = runner.run()
    media = snap.sinks["media"]
    report("clips_in_decode_processes", frames=snap.frames_detected, clips=media["clips"], snapshots=media["snapshots"])
    assert snap.frames_detected == 2 * len(decode_all(source)) and snap.events == 4
    assert (media["clips"], media["clips_missed"], media["errors"], media["snapshots"]) == (4, 0, 0, 4)
    with av.open(str(source)) as original:
        keyframe = next(itertools.islice(original.decode(video=0), 120, None)).to_ndarray(format="rgb24")
    for stream_id in ("lot-0", "lot-1"):
        event_id = make_event_id(stream_id, "mark", -1, 12_000_000_000)  # frame 150, at 12.0 s
        frames = decode_all(media_paths(tmp_path / "media", stream_id, event_id).clip)
        assert frames[0].key_frame and len(frames) == 188 - 120 + 1
        assert np.array_equal(frames[0].to_ndarray(format="rgb24"), keyframe)
