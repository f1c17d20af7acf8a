"""Event clips while streams decode in child processes: the packets stay in the child, the clip is cut
there on the media sink's request, and it is the source's own frames from a keyframe on (CPU decode,
host frames through the pipe; the NVDEC twin is tests/gpu/test_gpu_clips.py)."""
from __future__ import annotations

from pipeline.runtime.runner import PipelineRunner
from tests.conftest import shared_file
from tests.support.clips import check_clips, clips_in_processes


def test_clips_of_streams_decoded_in_processes_are_cut_there_from_the_sources_packets(tmp_path):
    source = shared_file("media/car-detection.mp4")
    runner = PipelineRunner(clips_in_processes(source, tmp_path, "cpu", {"model": "fake", "engine": "fake"}))
    assert all(stream.in_child and stream.packet_ring_s == 7.0 for stream in runner.plan.streams)
    check_clips(runner.run(), source, tmp_path)
