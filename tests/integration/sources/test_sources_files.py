"""Files through the real reader and worker: real clips from ../shared, decoded by PyAV."""
from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.config.models import StreamConfig
from pipeline.errors import SourceError
from pipeline.sources import open_reader
from pipeline.sources.decode import CpuDecoder
from pipeline.sources.pyav import PyAvReader
from pipeline.sources.worker import StreamWorker, WorkerState
from pipeline.types import frame_to_rgb
from tests.conftest import shared_file
from tests.support.collecting_sink import CollectingSink
from tests.support.waiting import wait_until


def read_all(url: str):
    return list(open_reader(StreamConfig(id="clip", url=str(url), decode="cpu")).frames())


def run_worker(config: StreamConfig, sink, timeout: float = 30.0) -> StreamWorker:
    worker = StreamWorker(config, sink)
    worker.start()
    assert worker.join(timeout), f"worker did not finish within {timeout} s: {worker.stats()}"
    return worker


def assert_strictly_increasing_int(pts: list) -> None:
    assert all(type(p) is int for p in pts)
    assert all(b > a for a, b in zip(pts, pts[1:]))


def rgb(frame) -> np.ndarray:
    return frame_to_rgb(frame)


def test_mp4_decodes_every_frame_with_increasing_integer_pts():
    path = shared_file("media/dog-848x464.mp4")
    frames = read_all(path)
    with av.open(str(path)) as container:
        expected = container.streams.video[0].frames
    assert len(frames) == expected == 96
    assert {f.pixel_format for f in frames} == {"avframe"}  # converted later, at the model's size
    assert {(rgb(f).shape, rgb(f).dtype) for f in frames[:3]} == {((464, 848, 3), np.dtype(np.uint8))}
    pts = [f.pts_ns for f in frames]
    assert_strictly_increasing_int(pts)
    assert pts[0] == 0 and pts[-1] == 95 * 512 * 10**9 // 15360 + 1  # 1/15360 time base, 512 ticks a frame, rounded
    assert rgb(frames[40]).std() > 10  # real picture content, not a blank buffer


def test_mkv_remux_of_the_same_clip_gives_the_same_frames(tmp_path):
    source = shared_file("media/dog-848x464.mp4")
    mkv = tmp_path / "dog.mkv"
    with av.open(str(source)) as src, av.open(str(mkv), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    mp4_frames, mkv_frames = read_all(source), read_all(mkv)
    assert len(mkv_frames) == len(mp4_frames)
    assert np.array_equal(rgb(mkv_frames[50]), rgb(mp4_frames[50]))
    assert_strictly_increasing_int([f.pts_ns for f in mkv_frames])


def test_raw_h264_with_a_resolution_change_reports_the_new_size():
    frames = read_all(shared_file("media/resolution-change.h264"))
    sizes = [(f.width, f.height) for f in frames]
    assert len(frames) == 96
    assert sizes[0] == (848, 464) and sizes[-1] == (424, 232)
    switch = sizes.index((424, 232))
    assert set(sizes[:switch]) == {(848, 464)} and set(sizes[switch:]) == {(424, 232)}
    assert all(rgb(f).shape == (f.height, f.width, 3) for f in frames)
    pts = [f.pts_ns for f in frames]
    assert_strictly_increasing_int(pts)  # raw H.264 has no timestamps: synthesized from the frame rate
    assert np.unique(np.diff(pts)).tolist() in ([33333333, 33333334], [33333334, 33333333])


def test_mpeg4_avi_with_packed_b_frames_gets_evenly_spaced_pts():
    path = shared_file("media/highway-cctv-320x240.avi")
    frames = read_all(path)
    with av.open(str(path)) as container:
        pyav_count = sum(1 for _ in container.decode(video=0))
    assert len(frames) == pyav_count > 700
    assert [f.pts_ns for f in frames[:4]] == [0, 40_000_000, 80_000_000, 120_000_000]
    assert_strictly_increasing_int([f.pts_ns for f in frames])


def write_avi_with_dropped_frames(path, kept: list[int]) -> None:
    """MPEG-4 in AVI at 25 fps holding only the frames numbered in `kept`: a recorder's dropped frames, which AVI
    keeps as empty chunks."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in kept:
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24")
            picture.pts, picture.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))


def test_an_avi_with_dropped_frames_keeps_their_time_and_is_not_taken_for_truncated(sink, tmp_path, caplog):
    """Frames were timed by their count, so those after a 2 s hole came 2 s early, and the empty chunks were
    counted as missing from the file's end."""
    path = tmp_path / "hole.avi"
    kept = list(range(50)) + list(range(100, 150))
    write_avi_with_dropped_frames(path, kept)
    worker = run_worker(StreamConfig(id="avi", url=str(path), decode="cpu"), sink)
    assert worker.state is WorkerState.FINISHED
    assert [f.pts_ns for f in sink.frames] == [i * 40_000_000 for i in kept]
    assert "truncated" not in caplog.text


def test_file_worker_delivers_every_frame_in_order_then_finishes_and_ends_the_stream(sink):
    worker = run_worker(StreamConfig(id="dog", url=str(shared_file("media/dog-848x464.mp4"))), sink)
    assert worker.state is WorkerState.FINISHED
    assert [f.seq for f in sink.frames] == list(range(96))
    assert {f.stream_id for f in sink.frames} == {"dog"} and sink.ended == ["dog"]
    assert all(f.wall_ns > 0 for f in sink.frames)
    assert worker.stats()["frames"] == 96


def test_looping_file_keeps_pts_increasing_across_loops_and_numbers_each_pass(sink, caplog, monkeypatch):
    config = StreamConfig(id="dog", url=str(shared_file("media/dog-848x464.mp4")), loop=True)
    worker = StreamWorker(config, sink)
    states = []
    set_state = StreamWorker._set_state
    monkeypatch.setattr(StreamWorker, "_set_state", lambda self, new: (states.append(new), set_state(self, new)))
    with caplog.at_level("INFO", logger="pipeline.sources.worker"):
        worker.start()
        assert sink.wait_for(96 * 2 + 10, timeout=30)
        worker.stop()
        assert worker.join(5) and worker.state is WorkerState.STOPPED
    assert states == [WorkerState.RUNNING, WorkerState.STOPPED]  # running on through every pass's seam
    assert sum("first frame after" in r.message for r in caplog.records) == 1  # not one line per pass
    pts = [f.pts_ns for f in sink.frames]
    assert_strictly_increasing_int(pts)
    step = np.diff(pts)
    assert step.max() - step.min() <= 1  # the loop seam is one frame period like every other step
    assert worker.stats()["loops"] >= 2 and sink.ended == ["dog"]
    assert [(f.epoch, f.index) for f in sink.frames] == [(i // 96, i % 96) for i in range(len(sink.frames))]


def test_fps_cap_keeps_the_capped_rate_from_a_file_and_the_kept_frames_their_source_numbers(sink):
    config = StreamConfig(id="dog", url=str(shared_file("media/dog-848x464.mp4")), fps=10)
    worker = run_worker(config, sink)
    assert len(sink.frames) == 32  # 96 frames at 30 fps = 3.2 s; 10 fps over 3.2 s
    assert np.diff([f.pts_ns for f in sink.frames]).mean() == pytest.approx(1e8, rel=0.02)
    assert worker.stats()["dropped_fps_cap"] == 64
    assert [f.seq for f in sink.frames] == list(range(32))
    assert [f.index for f in sink.frames] == list(range(0, 96, 3))  # every third frame of the 30 fps source


def test_a_full_sink_blocks_a_file_without_losing_frames():
    sink = CollectingSink(room=5)
    worker = StreamWorker(StreamConfig(id="dog", url=str(shared_file("media/dog-848x464.mp4"))), sink)
    worker.start()
    assert wait_until(lambda: worker.stats()["sink_waits"] >= 1, timeout=30)  # blocked on the full sink
    assert len(sink.frames) == 5 and worker.state is WorkerState.RUNNING
    sink.open_room(None)
    assert worker.join(30)
    assert [f.seq for f in sink.frames] == list(range(96))
    assert worker.stats()["sink_waits"] >= 1


def test_stop_returns_promptly_while_blocked_on_a_full_sink():
    sink = CollectingSink(room=1)
    worker = StreamWorker(StreamConfig(id="dog", url=str(shared_file("media/dog-848x464.mp4"))), sink)
    worker.start()
    assert sink.wait_for(1, timeout=10)
    started = time.monotonic()
    worker.stop()
    assert worker.join(2.0) and time.monotonic() - started < 1.0
    assert worker.state is WorkerState.STOPPED and sink.ended == ["dog"]


@pytest.mark.fault
def test_missing_file_fails_its_stream_with_a_clear_error(sink, tmp_path):
    worker = run_worker(StreamConfig(id="cam-9", url=str(tmp_path / "absent.mp4")), sink, timeout=5)
    assert worker.state is WorkerState.FAILED and sink.ended == ["cam-9"]
    error = worker.stats()["last_error"]
    assert "cam-9" in error and "absent.mp4" in error and "No such file" in error and "stopped" in error
    assert worker.stats()["reconnects"] == 0


@pytest.mark.fault
def test_undecodable_file_fails_its_stream_without_retrying(sink, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    worker = run_worker(StreamConfig(id="junk", url=str(junk)), sink, timeout=5)
    assert worker.state is WorkerState.FAILED and "junk" in worker.stats()["last_error"]
    assert sink.frames == [] and sink.ended == ["junk"]


@pytest.mark.fault
def test_a_decoder_crash_fails_a_file_stream_and_join_returns(sink, monkeypatch):
    calls = {"n": 0}
    original = CpuDecoder.decode

    def decode_then_crash(self, packet):
        calls["n"] += 1
        if calls["n"] > 10:
            raise RuntimeError("injected decoder bug")
        return original(self, packet)

    monkeypatch.setattr(CpuDecoder, "decode", decode_then_crash)
    worker = run_worker(StreamConfig(id="dog", url=str(shared_file("media/dog-848x464.mp4"))), sink, timeout=5)
    assert worker.state is WorkerState.FAILED
    assert "injected decoder bug" in worker.stats()["last_error"]
    assert 0 < len(sink.frames) < 96 and sink.ended == ["dog"]


@pytest.mark.fault
def test_a_source_error_mid_file_fails_the_stream(sink, monkeypatch):
    def broken(self, packet):
        raise SourceError("stream 'dog': corrupt packet (injected)")

    monkeypatch.setattr(CpuDecoder, "decode", broken)
    worker = run_worker(StreamConfig(id="dog", url=str(shared_file("media/dog-848x464.mp4"))), sink, timeout=5)
    assert worker.state is WorkerState.FAILED and "corrupt packet" in worker.stats()["last_error"]


def test_packet_tap_sees_every_demuxed_packet_and_a_failing_tap_does_not_stop_decoding(sink):
    seen = []

    class FailingRings:  # the worker's `packets`: every seventh packet cannot be kept
        def tap(self, stream_id, packet):
            seen.append((stream_id, packet.size))
            if len(seen) % 7 == 0:
                raise OSError("disk full (injected)")

        def align(self, stream_id, offset_ns):
            pass

        def end_pass(self, stream_id):
            pass

    config = StreamConfig(id="dog", url=str(shared_file("media/dog-848x464.mp4")))
    worker = StreamWorker(config, sink, packets=FailingRings())
    worker.start()
    assert worker.join(30) and worker.state is WorkerState.FINISHED
    assert len(sink.frames) == 96 and len(seen) == 96 and {s for s, _ in seen} == {"dog"}


def test_nvdec_asked_for_where_it_cannot_run_fails_the_stream_instead_of_retrying(sink):
    from pipeline.machine import nvdec_status

    available, _ = nvdec_status()
    if available:
        pytest.skip("NVDEC is available on this machine")
    config = StreamConfig(id="cam-2", url="rtsp://127.0.0.1:9/x", decode="nvdec")
    worker = run_worker(config, sink, timeout=5)
    assert worker.state is WorkerState.FAILED and worker.stats()["reconnects"] == 0
    assert "decode 'nvdec' cannot run here" in worker.stats()["last_error"] and "decode: cpu" in worker.stats()["last_error"]


def write_raw_hevc(path, frames: int, size=(160, 96)) -> list[float]:
    """Encode a small moving-gradient clip as raw Annex-B HEVC; returns each frame's mean brightness."""
    means = []
    with av.open(str(path), "w", format="hevc") as out:
        stream = out.add_stream("libx265", rate=24)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"x265-params": "log-level=error"}
        for i in range(frames):
            image = np.full((size[1], size[0], 3), (i * 9) % 256, np.uint8)
            means.append(float(image.mean()))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    return means


def test_raw_h265_elementary_stream_decodes_with_synthesized_pts(tmp_path):
    path = tmp_path / "gradient.h265"
    means = write_raw_hevc(path, frames=24)
    frames = read_all(path)
    assert len(frames) == 24 and {(f.width, f.height) for f in frames} == {(160, 96)}
    assert [f.pts_ns for f in frames[:3]] == [0, 41_666_667, 83_333_333]  # 24 fps from the stream's VUI
    decoded = [float(rgb(f).mean()) for f in frames]
    assert np.allclose(decoded, means, atol=6)  # display order, not decode order


def test_the_packet_tap_sees_every_packet_as_demuxed_also_when_the_decoder_takes_annex_b(shared):
    """Event clips are cut from tapped packets; the Annex-B filter NVDEC needs must not empty them first."""

    class AnnexBDecoder:  # takes Annex-B like NVDEC, decodes nothing
        wants_annexb = True

        def __init__(self, stream, label):
            self.packets = []

        def decode(self, packet):
            self.packets.append(bytes(packet))
            return []

        def flush(self):
            return []

        def close(self):
            self.closed = True

    clip = shared("media/car-detection.mp4")
    decoders, tapped = [], []
    reader = PyAvReader(StreamConfig(id="lot", url=str(clip)), packet_tap=lambda sid, p: tapped.append(bytes(p)),
                        make_decoder=lambda stream, label: decoders.append(AnnexBDecoder(stream, label)) or decoders[-1])
    assert list(reader.frames()) == []
    with av.open(str(clip)) as container:
        demuxed = [bytes(p) for p in container.demux(video=0) if p.size]
    assert tapped == demuxed  # as the container holds them (length-prefixed), not emptied by the filter
    fed = decoders[0].packets
    assert len(fed) == len(demuxed) and all(p.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")) for p in fed)
