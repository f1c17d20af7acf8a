"""PacketRings: event clips remuxed from tapped packets, checked by decoding them."""
from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config.models import AlertRule, StreamConfig
from pipeline.config.outputs import MediaOutput
from pipeline.sinks.media import MediaSink, media_paths
from pipeline.sources import open_reader
from pipeline.sources.packets import PacketRings
from pipeline.types import Detections, Frame, FrameResult

FPS = 10


def barcode(i: int, size=(320, 240)) -> np.ndarray:
    """Frame i shows i in binary as 8 vertical bands (white = 1), readable after lossy coding."""
    bits = (i >> np.arange(8)) & 1
    row = np.repeat(bits * 255, size[0] // 8).astype(np.uint8)
    return np.repeat(np.broadcast_to(row, (size[1], size[0]))[..., None], 3, axis=2).copy()


def frame_index(frame: av.VideoFrame) -> int:
    row = frame.to_ndarray(format="rgb24")[frame.height // 2, :, 1]
    centers = row[(np.arange(8) * 2 + 1) * frame.width // 16]
    return int(((centers > 128) << np.arange(8)).sum())


def make_h264(path: Path, frames: int = 80, gop: int = 10, size=(320, 240)) -> Path:
    """A small H.264 MP4 (B-frames on, a keyframe every `gop` frames) of `barcode` frames."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.options = {"preset": "ultrafast", "bf": "2", "sc_threshold": "0"}
        for i in range(frames):
            picture = av.VideoFrame.from_ndarray(barcode(i, size), format="rgb24")
            picture.pts = i
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


def on_packet_clock(rings: PacketRings) -> PacketRings:
    """Rings fed here, without a worker: the events are on the packets' own clock (a first pass)."""
    rings.align("cam-1", 0)
    return rings


def decode_all(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


class Reports:
    """Collects `on_done(path, error)` calls (from the writer thread) and lets a test wait for them."""

    def __init__(self):
        self.done: list[tuple[Path, str | None]] = []
        self._changed = threading.Condition()

    def __call__(self, path: Path, error: str | None) -> None:
        with self._changed:
            self.done.append((path, error))
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.done) >= count, timeout)


def feed_clip_scenario(rings: PacketRings, source: Path, clip: Path, event_frame: int, lead: int,
                       before_s: float, after_s: float, on_done=None) -> None:
    """Tap every packet like the worker would; the clip is asked for `lead` packets after the event."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        for n, packet in enumerate(packets):
            rings.tap("cam-1", packet)
            if n == event_frame + lead:
                # frame `event_frame` (display order) fired; its pts_ns as the decoder reports it
                pts = sorted(p.pts for p in packets)[event_frame]
                event_pts = pts * stream.time_base.numerator * 10**9 // stream.time_base.denominator
                assert rings.record_clip("cam-1", event_pts, before_s, after_s, clip, on_done)
    rings.end_stream("cam-1")


def test_clip_starts_on_a_keyframe_and_spans_before_and_after_the_event(tmp_path):
    source = make_h264(tmp_path / "src.mp4", frames=80, gop=10)
    clip, reports = tmp_path / "media" / "cam-1" / "event.mp4", Reports()
    rings = on_packet_clock(PacketRings(keep_s=2.0 + 5.0))
    feed_clip_scenario(rings, source, clip, event_frame=45, lead=8, before_s=2.0, after_s=2.0, on_done=reports)
    rings.close()
    assert reports.done == [(clip, None)]
    frames = decode_all(clip)
    assert frames[0].key_frame
    # from the keyframe at 2.0 s (the last at or before 4.5 - 2.0) to 6.5 s, every frame once, in
    # order; frame 66 too, as frames 64 and 65 are B-frames that refer to it
    assert [frame_index(f) for f in frames] == list(range(20, 67))
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"  # remuxed, not re-encoded
        assert float(stream.duration * stream.time_base) == pytest.approx(4.7, abs=0.05)
    assert rings.stats()["clips_written"] == 1


def test_clip_of_real_footage_starts_at_its_sparse_keyframe(tmp_path, shared):
    source = shared("media/car-detection.mp4")  # 12.5 fps, keyframes every 4.8 s
    clip = tmp_path / "cam-1" / "event.mp4"
    rings = on_packet_clock(PacketRings(keep_s=2.0 + 5.0))
    feed_clip_scenario(rings, source, clip, event_frame=150, lead=20, before_s=2.0, after_s=3.0)  # event at 12.0 s
    rings.close()
    frames = decode_all(clip)
    assert frames[0].key_frame
    with av.open(str(source)) as original:
        reference = next(itertools.islice(original.decode(video=0), 120, None))  # the keyframe at 9.6 s
    first = frames[0].to_ndarray(format="rgb24").astype(int)
    assert np.abs(first - reference.to_ndarray(format="rgb24").astype(int)).max() == 0  # bit-exact: no re-encode
    assert len(frames) == 188 - 120 + 1  # 9.6 s up to the first frame at or after 15.0 s (frame 188, 15.04 s)


def test_clip_of_a_stream_without_tapped_packets_is_refused(tmp_path):
    rings = PacketRings(keep_s=5.0)
    reports = Reports()
    assert not rings.record_clip("cam-1", 1, 5.0, 5.0, tmp_path / "cam-1" / "event.mp4", reports)
    rings.close()
    assert not any(tmp_path.rglob("*.mp4")) and reports.done == []
    assert rings.stats() == {"clips_written": 0, "clips_dropped": 0, "errors": 0}


def test_event_reaching_the_rings_after_the_clip_end_is_written_at_once(tmp_path):
    source = make_h264(tmp_path / "src.mp4", frames=80, gop=10)
    clip, reports = tmp_path / "media" / "cam-1" / "event.mp4", Reports()
    rings = on_packet_clock(PacketRings(keep_s=1.0 + 5.0))
    with av.open(str(source)) as container:  # the tap ran 3 s ahead of the sinks (a file read fast)
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size:
                rings.tap("cam-1", packet)
                if packet.pts == 70 * 1024:
                    assert rings.record_clip("cam-1", 4 * 10**9, 1.0, 1.0, clip, reports)  # frame 40
                    assert reports.wait_for(1)  # not waiting for the stream to end
                    assert clip.exists()
    rings.close()
    assert reports.done == [(clip, None)]
    assert [frame_index(f) for f in decode_all(clip)] == list(range(30, 51))


def test_reconnect_finishes_the_pending_clip_and_the_next_connection_records_anew(tmp_path):
    first = make_h264(tmp_path / "a.mp4", frames=40, gop=10)
    second = make_h264(tmp_path / "b.mp4", frames=40, gop=10)
    rings = on_packet_clock(PacketRings(keep_s=1.0 + 5.0))
    clips = []
    for n, path in enumerate((first, second)):  # two connections: a new demuxer stream each time
        with av.open(str(path)) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    rings.tap("cam-1", packet)
                    if packet.pts == 30 * 1024:
                        clips.append(tmp_path / "media" / "cam-1" / f"event-{n}.mp4")
                        assert rings.record_clip("cam-1", 25 * 10**8 + n, 1.0, 10.0, clips[-1])  # frame 25
    rings.close()
    for clip in clips:  # each clip: from the keyframe at 1.0 s to where its connection ended
        assert [frame_index(f) for f in decode_all(clip)] == list(range(10, 40))
    assert rings.stats()["clips_written"] == 2


def test_event_on_another_clock_gets_no_clip_of_another_moment(tmp_path, caplog):
    source = make_h264(tmp_path / "src.mp4", frames=60, gop=10)
    clip, reports = tmp_path / "media" / "cam-1" / "event.mp4", Reports()
    rings = on_packet_clock(PacketRings(keep_s=1.0 + 5.0))
    with av.open(str(source)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                rings.tap("cam-1", packet)
                if packet.pts == 30 * 1024:  # newest packet shows frame 30
                    # a wall-clock time, far outside the packets' clock
                    assert not rings.record_clip("cam-1", 10**18, 1.0, 1.0, clip, reports)
    rings.close()
    assert not clip.exists() and reports.done == []
    assert "is not on the stream's clock" in caplog.text


def test_event_whose_packets_left_the_ring_gets_no_clip_and_one_still_buffered_is_cut_short(tmp_path, shared, caplog):
    """Events that reach the rings late (a slow media sink): the ring keeps 7 s, the reader is at 24 s."""
    source = shared("media/car-detection.mp4")  # 12.5 fps, keyframes every 4.8 s (frames 0, 60, 120, 180, ...)
    gone, kept = tmp_path / "cam-1" / "gone.mp4", tmp_path / "cam-1" / "kept.mp4"
    reports = Reports()
    rings = on_packet_clock(PacketRings(keep_s=2.0 + 5.0))
    with av.open(str(source)) as container:
        for packet in container.demux(container.streams.video[0]):
            rings.tap("cam-1", packet)
            if packet.pts == 300 * 2000:  # 24.0 s: the ring holds from the keyframe at 14.4 s (frame 180) on
                assert not rings.record_clip("cam-1", 170 * 80_000_000, 2.0, 3.0, gone, reports)  # frame 170
                assert rings.record_clip("cam-1", 190 * 80_000_000, 2.0, 3.0, kept, reports)  # frame 190
    rings.close()
    assert not gone.exists() and reports.done == [(kept, None)]
    assert "its packets are gone" in caplog.text
    with av.open(str(source)) as original:
        wanted = [f.to_ndarray(format="rgb24") for f in itertools.islice(original.decode(video=0), 180, 229)]
    got = [f.to_ndarray(format="rgb24") for f in decode_all(kept)]
    # from the oldest keyframe kept (1.2 s before the event instead of 2 s) to the first frame at or after 18.2 s
    assert len(got) == len(wanted) and all(np.array_equal(a, b) for a, b in zip(got, wanted))


def test_a_clip_that_cannot_be_written_leaves_no_partial_file(tmp_path, shared):
    """Run in a process of its own: the full disk is its file size limit (RLIMIT_FSIZE), below the clip's size."""
    source, clip = shared("media/car-detection.mp4"), tmp_path / "cam-1" / "event.mp4"
    script = f"""
import resource, signal
from pathlib import Path
import av
from pipeline.sources.packets import PacketRings
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
rings = PacketRings(keep_s=30.0)
rings.align("cam-1", 0)
with av.open({str(source)!r}) as container:
    for packet in container.demux(container.streams.video[0]):
        rings.tap("cam-1", packet)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
reports = []
assert rings.record_clip("cam-1", 12 * 10**9, 2.0, 3.0, Path({str(clip)!r}), lambda path, error: reports.append(error))
rings.close()
print(reports[0])
print(rings.stats())
"""
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[3])
    error, stats = done.stdout.splitlines()
    assert "File too large" in error and stats == str({"clips_written": 0, "clips_dropped": 0, "errors": 1})
    assert list(clip.parent.iterdir()) == []  # neither the clip nor its `.part`


def test_end_stream_writes_the_unfinished_clip_and_forgets_the_stream(tmp_path):
    source = make_h264(tmp_path / "src.mp4", frames=40, gop=10)
    clip, reports = tmp_path / "cam-1" / "event.mp4", Reports()
    rings = on_packet_clock(PacketRings(keep_s=1.0 + 5.0))
    with av.open(str(source)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                rings.tap("cam-1", packet)
    assert rings.record_clip("cam-1", 3 * 10**9, 1.0, 10.0, clip, reports)  # ends long after the file
    rings.end_stream("cam-1")
    assert reports.wait_for(1) and reports.done == [(clip, None)]  # written before close()
    assert [frame_index(f) for f in decode_all(clip)] == list(range(20, 40))
    assert not rings.record_clip("cam-1", 3 * 10**9, 1.0, 1.0, tmp_path / "later.mp4")
    rings.close()


def held_writer_rings(tmp_path, queue_size: int):
    """Rings of a 4-s clip whose writer is busy with clip 'a' until `release` is set."""
    source = make_h264(tmp_path / "src.mp4", frames=40, gop=10)
    rings = on_packet_clock(PacketRings(keep_s=6.0, queue_size=queue_size))
    writing, release, reports = threading.Event(), threading.Event(), Reports()

    def hold_the_writer(path, error):
        writing.set()
        release.wait(10.0)
        reports(path, error)

    with av.open(str(source)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                rings.tap("cam-1", packet)
    assert rings.record_clip("cam-1", 10**9, 0.5, 0.5, tmp_path / "a.mp4", hold_the_writer)
    assert writing.wait(5.0)
    return rings, release, reports


def test_full_writer_queue_drops_the_clip_and_reports_it(tmp_path):
    rings, release, reports = held_writer_rings(tmp_path, queue_size=1)  # the writer is busy with clip a
    # every clip ends inside the ring, so each is queued as soon as it is asked for
    assert rings.record_clip("cam-1", 2 * 10**9, 0.5, 0.5, tmp_path / "b.mp4", reports)  # queued
    assert rings.record_clip("cam-1", 3 * 10**9, 0.5, 0.5, tmp_path / "c.mp4", reports)  # no room
    assert reports.done == [(tmp_path / "c.mp4", "dropped: the clip writer's queue was full")]
    release.set()
    rings.close()
    assert sorted(reports.done) == sorted([(tmp_path / name, None) for name in ("a.mp4", "b.mp4")]
                                          + [(tmp_path / "c.mp4", "dropped: the clip writer's queue was full")])
    assert rings.stats() == {"clips_written": 2, "clips_dropped": 1, "errors": 0}
    assert not (tmp_path / "c.mp4").exists()


def test_the_clips_a_pass_end_completes_are_written_when_the_writers_queue_is_full(tmp_path):
    rings, release, reports = held_writer_rings(tmp_path, queue_size=2)
    for name in ("b", "c"):  # complete at once: they fill the writer's queue
        assert rings.record_clip("cam-1", 2 * 10**9, 0.5, 0.5, tmp_path / f"{name}.mp4", reports)
    for name in ("d", "e", "f"):  # each waits for packets after the camera's end: two of a stream may
        assert rings.record_clip("cam-1", 3 * 10**9, 0.5, 30.0, tmp_path / f"{name}.mp4", reports)
    assert reports.done == [(tmp_path / "f.mp4", "dropped: stream 'cam-1' has 2 clips waiting already")]
    rings.end_pass("cam-1")  # the camera went away: its waiting clips are written with what they have
    release.set()
    rings.close()
    assert sorted(reports.done) == sorted([(tmp_path / f"{name}.mp4", None) for name in "abcde"]
                                          + [(tmp_path / "f.mp4", "dropped: stream 'cam-1' has 2 clips waiting already")])
    assert rings.stats() == {"clips_written": 5, "clips_dropped": 1, "errors": 0}


def test_clips_a_close_cannot_wait_for_are_reported_as_not_written(tmp_path):
    rings, release, reports = held_writer_rings(tmp_path, queue_size=4)
    assert rings.record_clip("cam-1", 2 * 10**9, 0.5, 30.0, tmp_path / "b.mp4", reports)  # waits for packets
    rings.close(timeout=0.1)  # the writer is still busy with a: b, queued by the close, is given up
    assert reports.done == [(tmp_path / "b.mp4", f"not written: the clip writer was still busy at shutdown "
                                                 f"({tmp_path / 'b.mp4'})")]
    release.set()
    assert rings.stats()["errors"] == 1


def test_clip_through_the_real_reader_tap_matches_the_decoded_frame_clock(tmp_path, shared):
    """The whole path: the reader taps the rings, the media sink asks them for the event's clip."""
    source = shared("media/car-detection.mp4")
    config = MediaOutput(type="media", directory=tmp_path, clip_before_s=2.0, clip_after_s=3.0)
    rings = on_packet_clock(PacketRings(keep_s=config.clip_before_s + 5.0))
    rule = AlertRule(name="door", when="enter", zone="z", snapshot=True, clip=True)
    sink = MediaSink(config, [rule], clips=rings)
    sink.open()
    reader = open_reader(StreamConfig(id="cam-1", url=str(source), decode="cpu"), packet_tap=rings.tap)
    try:
        for i, decoded in enumerate(reader.frames()):
            if i == 150:  # 12.0 s
                image = decoded.image.to_ndarray(format="rgb24")
                frame = Frame("cam-1", 0, decoded.pts_ns, 0, image, image.shape[1], image.shape[0], "rgb24")
                result = FrameResult(frame, Detections.empty(), run_id="run-1")
                event = result.moment.event("door", "alert", 7, 0, {"zone": "z"})
                result.events.append(event)
                sink.on_frame(result)
    finally:
        reader.close()
    rings.end_stream("cam-1")
    sink.close()
    rings.close()
    paths = media_paths(tmp_path, "cam-1", event.event_id)
    frames = decode_all(paths.clip)
    assert frames[0].key_frame and len(frames) == 188 - 120 + 1  # same window as the packets alone give
    (snapshot,) = decode_all(paths.snapshot)
    assert (snapshot.width, snapshot.height) == (768, 432)
    assert sink.stats()["clips"] == 1
