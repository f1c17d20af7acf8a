"""Event clips while streams decode in child processes: the packets stay in the child, the clip is cut
there on the media sink's request, and it is the source's own frames from a keyframe on (CPU decode,
host frames through the pipe; the NVDEC twin is tests/gpu/test_gpu_clips.py)."""
from __future__ import annotations

import itertools

import av
import numpy as np

from pipeline.config.models import PipelineConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.sinks.media import media_paths
from pipeline.types import make_event_id
from tests.conftest import shared_file


def decode_all(path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_clips_of_streams_decoded_in_processes_are_cut_there_from_the_sources_packets(tmp_path):
    source = shared_file("media/car-detection.mp4")  # 12.5 fps, a keyframe every 4.8 s
    config = PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": f"lot-{i}", "url": str(source), "decode": "cpu"} for i in range(2)],
        "detector": {"model": "fake", "engine": "fake"},
        "tracker": {"enabled": False},
        "stages": [{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 151, "clip": True}}],
        "sinks": [{"type": "media", "directory": str(tmp_path / "media"), "clip_before_s": 2.0, "clip_after_s": 3.0,
                   "clips": True}],  # the plugin's events ask for clips
        "runtime": {"decode_processes": 2, "outbox_path": str(tmp_path / "outbox.db")},
    })
    runner = PipelineRunner(config)
    assert all(stream.in_child and stream.packet_ring_s == 7.0 for stream in runner.plan.streams)
    snap = runner.run()
    assert snap.frames_detected == 2 * len(decode_all(source)) and snap.events == 4  # frames 150 and 301 of each
    media = snap.sinks["media"]
    assert (media["clips"], media["clips_missed"], media["errors"], media["snapshots"]) == (4, 0, 0, 4)
    with av.open(str(source)) as original:
        keyframe = next(itertools.islice(original.decode(video=0), 120, None)).to_ndarray(format="rgb24")
    for stream_id in ("lot-0", "lot-1"):
        event_id = make_event_id(stream_id, "mark", -1, 12_000_000_000)  # frame 150, at 12.0 s
        frames = decode_all(media_paths(tmp_path / "media", stream_id, event_id).clip)
        assert frames[0].key_frame and len(frames) == 188 - 120 + 1  # 9.6 s to the first frame at or after 15.0 s
        assert np.array_equal(frames[0].to_ndarray(format="rgb24"), keyframe)  # remuxed, not re-encoded
        later = decode_all(media_paths(tmp_path / "media", stream_id, make_event_id(stream_id, "mark", -1, 24_080_000_000)).clip)
        assert later[0].key_frame and len(later) > 60
