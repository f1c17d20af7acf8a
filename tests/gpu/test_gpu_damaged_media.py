"""NVDEC on damaged files: 20 KB of garbage inside the media data costs the frames it hit, never the rest of
the file, and NVDEC's refusals are counted as corrupt packets like FFmpeg's on the CPU."""
from __future__ import annotations

import pytest

from pipeline.config.models import StreamConfig
from pipeline.sources.worker import StreamWorker, WorkerState
from tests.support.collecting_sink import CollectingSink
from tests.support.damaged_media import FRAMES, GOP, overwrite, packet_spans, write_clip


def _run(path, decode: str) -> tuple[StreamWorker, CollectingSink]:
    sink = CollectingSink()
    worker = StreamWorker(StreamConfig(id="clip", url=str(path), decode=decode), sink)
    worker.start()
    assert worker.join(60), worker.stats()
    return worker, sink


@pytest.mark.parametrize("suffix", ["mp4", "h264"])
def test_nvdec_skips_a_damaged_stretch_and_reads_to_the_end_like_the_cpu(suffix, tmp_path, report):
    clip = write_clip(tmp_path / f"clip.{suffix}")
    overwrite(clip, packet_spans(clip)[30][0], 20_000)  # inside the second GOP
    cpu_worker, cpu = _run(clip, "cpu")
    gpu_worker, gpu = _run(clip, "nvdec")
    assert gpu_worker.state is WorkerState.FINISHED and gpu_worker.stats()["last_error"] is None
    assert FRAMES - GOP <= len(gpu.frames) < FRAMES  # the damaged GOP at most
    assert gpu.frames[-1].pts_ns == cpu.frames[-1].pts_ns  # read on to the very end
    assert [f.seq for f in gpu.frames] == list(range(len(gpu.frames)))
    counted = gpu_worker.stats()["corrupt_packets"]
    if suffix == "mp4":
        assert counted >= 1
    report(f"damaged_{suffix}", nvdec_frames=len(gpu.frames), cpu_frames=len(cpu.frames),
           nvdec_corrupt_packets=counted, cpu_corrupt_packets=cpu_worker.stats()["corrupt_packets"])
