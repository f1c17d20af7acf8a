"""Damaged files through the real reader and worker: clips made here with PyAV, then overwritten with garbage
or cut short. A damaged stretch costs its own frames, never the rest of the file."""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config.models import StreamConfig
from pipeline.errors import CorruptPacket
from pipeline.sources.pyav import NO_FRAME_PACKETS, PyAvReader
from pipeline.sources.reader import DecodedFrame
from pipeline.sources.worker import StreamWorker, WorkerState
from pipeline.types import frame_to_rgb
from tests.support.collecting_sink import CollectingSink
from tests.support.damaged_media import (
    CONTAINERS,
    FRAMES,
    GOP,
    faststart,
    last_picture,
    overwrite,
    packet_spans,
    write_clip,
)

pytestmark = pytest.mark.fault


def run_file(path: Path, caplog) -> tuple[StreamWorker, CollectingSink]:
    sink = CollectingSink()
    worker = StreamWorker(StreamConfig(id="clip", url=str(path), decode="cpu"), sink)
    with caplog.at_level(logging.WARNING, logger="pipeline.sources"):
        worker.start()
        assert worker.join(30), worker.stats()
    return worker, sink


@pytest.mark.parametrize("suffix", CONTAINERS)
def test_20_kb_of_garbage_in_the_media_data_costs_only_the_frames_it_hit(suffix, tmp_path, caplog):
    clip = write_clip(tmp_path / f"clip.{suffix}")
    expected_last = last_picture(clip)
    overwrite(clip, packet_spans(clip)[30][0], 20_000)  # inside the second GOP
    worker, sink = run_file(clip, caplog)
    stats = worker.stats()
    assert worker.state is WorkerState.FINISHED and stats["last_error"] is None
    assert FRAMES - GOP <= len(sink.frames) < FRAMES  # the damaged GOP at most
    assert np.array_equal(frame_to_rgb(sink.frames[-1]), expected_last)  # read on to the very end
    assert [f.seq for f in sink.frames] == list(range(len(sink.frames)))
    if suffix == "mp4":  # an index says where each packet is: the damaged ones reach the decoder and are counted
        assert stats["corrupt_packets"] >= 1 and "skipping it" in caplog.text and "corrupt packets:" in caplog.text
    # a raw stream has no index: FFmpeg's parser drops what is not a NAL unit, and those frames go uncounted


@pytest.mark.parametrize("suffix", CONTAINERS)
def test_a_file_cut_inside_a_frame_ends_with_a_warning_not_silently(suffix, tmp_path, caplog):
    clip = write_clip(tmp_path / f"clip.{suffix}")
    if suffix == "mp4":  # the index first (faststart), so a cut file still opens, as a recording cut off mid-write
        clip = faststart(clip, tmp_path / "faststart.mp4")
    offset, size = packet_spans(clip)[60]  # a P-frame: large enough to cut inside
    clip.write_bytes(clip.read_bytes()[:offset + size // 2])
    worker, sink = run_file(clip, caplog)
    assert worker.state is WorkerState.FINISHED
    assert 59 <= len(sink.frames) <= 61
    assert "the file looks truncated" in caplog.text and "clip" in caplog.text
    if suffix == "mp4":
        assert "ends 35 frames before the end its index lists" in caplog.text


def test_a_packet_the_decoder_refuses_in_an_avi_leaves_the_later_frames_at_their_own_time(tmp_path, caplog):
    """An AVI's frames are timed by their packets' dts in order; the refused packet's dts went to the next frame,
    and every later frame came one frame period early."""
    path = tmp_path / "cctv.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * i, np.uint8), format="rgb24")
            picture.pts, picture.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    with av.open(str(path)) as container:
        offset, size = [(p.pos, p.size) for p in container.demux(video=0) if p.size][5]
    data = bytearray(path.read_bytes())
    data[offset + 8 : offset + size] = b"\xff" * (size - 8)  # the chunk's header kept: only its frame is damaged
    path.write_bytes(bytes(data))
    worker, sink = run_file(path, caplog)
    assert worker.state is WorkerState.FINISHED and worker.stats()["corrupt_packets"] == 1
    assert [f.pts_ns for f in sink.frames] == [i * 40_000_000 for i in range(40) if i != 5]


def test_a_file_with_no_decodable_frame_for_a_long_stretch_fails_after_the_bound(tmp_path, caplog):
    clip = write_clip(tmp_path / "long.mp4", frames=NO_FRAME_PACKETS + 100, size=(64, 48))
    spans = packet_spans(clip)
    end = spans[-1][0] + spans[-1][1]
    overwrite(clip, spans[50][0], end - spans[50][0])  # all media after frame 50 is garbage; the index is intact
    worker, sink = run_file(clip, caplog)
    assert worker.state is WorkerState.FAILED
    assert len(sink.frames) == 50 and sink.ended == ["clip"]
    error = worker.stats()["last_error"]
    assert f"{NO_FRAME_PACKETS} packets in a row gave no frame" in error and "clip" in error
    assert worker.stats()["corrupt_packets"] == NO_FRAME_PACKETS


class AnnexBDecoder:
    """The way NVDEC is fed (Annex-B packets through the demuxer's filter), decoded by FFmpeg on the CPU:
    a stand-in for the GPU, which this tier does not have. Refusals raise `CorruptPacket`, as NVDEC's do."""

    wants_annexb = True
    reusable = False

    def __init__(self, stream, label: str):
        self._codec = av.CodecContext.create(stream.codec_context.name, "r")  # no avcC extradata: Annex-B in-band
        self._label = label

    def decode(self, packet) -> list[DecodedFrame]:
        try:
            return [DecodedFrame(f, 0, f.width, f.height, "avframe", f.is_corrupt) for f in self._codec.decode(packet)]
        except av.error.FFmpegError as exc:
            raise CorruptPacket(f"{self._label}: cannot decode a packet ({exc})") from exc

    def flush(self) -> list[DecodedFrame]:
        return self.decode(None)

    def close(self) -> None:
        pass


def test_the_annex_b_path_nvdec_takes_skips_the_same_damaged_packets(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    overwrite(clip, packet_spans(clip)[30][0], 20_000)
    config = StreamConfig(id="clip", url=str(clip), decode="cpu")
    on_cpu = PyAvReader(config)
    annexb = PyAvReader(config, make_decoder=AnnexBDecoder)
    cpu_frames, annexb_frames = list(on_cpu.frames()), list(annexb.frames())
    assert len(annexb_frames) == len(cpu_frames) and FRAMES - GOP <= len(cpu_frames) < FRAMES
    assert annexb.counters()["corrupt_packets"] == on_cpu.counters()["corrupt_packets"] >= 1



def test_the_stats_count_a_pass_s_corrupt_packets_while_it_runs_and_once_when_it_ends(tmp_path):
    """A live camera's pass lasts until it disconnects: what its reader counts must show as it goes (the worker
    here is held mid-file by a sink with room for 60 frames, past the damage), and the end of the pass must not
    count it again."""
    clip = write_clip(tmp_path / "clip.mp4")
    overwrite(clip, packet_spans(clip)[30][0], 20_000)  # inside the second GOP
    sink = CollectingSink(room=60)
    worker = StreamWorker(StreamConfig(id="clip", url=str(clip), decode="cpu"), sink)
    worker.start()
    try:
        assert sink.wait_for(60, 30)
        during = worker.stats()
        assert during["state"] == WorkerState.RUNNING.value and during["corrupt_packets"] >= 1
    finally:
        sink.open_room(None)
    assert worker.join(30), worker.stats()
    assert worker.stats()["corrupt_packets"] == during["corrupt_packets"]
