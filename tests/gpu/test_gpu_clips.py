"""Event clips while NVDEC streams decode in child processes: cut in the child from the stream's own
packets, on the media sink's request (the CPU twin is tests/integration/sources/test_clips_in_decode_processes.py)."""
from __future__ import annotations

from pipeline.runtime.runner import PipelineRunner
from tests.gpu.helpers import gpu_file
from tests.support.clips import check_clips, clips_in_processes


def test_clips_of_nvdec_streams_in_decode_processes_are_the_sources_own_frames(tmp_path, report):
    source = gpu_file("media/car-detection.mp4")
    detector = {"model": str(gpu_file("models/yolox_nano_416_dynbatch.onnx")), "engine": "torch"}
    runner = PipelineRunner(clips_in_processes(source, tmp_path, "nvdec", detector))
    assert all(s.in_child and s.decoder == "nvdec" for s in runner.plan.streams)
    snap = runner.run()
    report("clips_in_decode_processes", frames=snap.frames_detected, **{k: snap.sinks["media"][k] for k in ("clips", "snapshots")})
    check_clips(snap, source, tmp_path)
