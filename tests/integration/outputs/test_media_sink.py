"""MediaSink: snapshot JPEGs and event clips remuxed from tapped packets, checked by decoding them."""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config.models import AlertRule, MediaOutput
from pipeline.sinks.media import MediaSink, crop_box, media_paths
from pipeline.types import Detections, Event, Frame, FrameResult, make_event_id

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


def rule(name="door", snapshot=True, clip=False) -> AlertRule:
    return AlertRule(name=name, when="enter", zone="z", snapshot=snapshot, clip=clip)


def event_at(ts_ns: int, rule_name="door", track_id=7, stream="cam-1") -> Event:
    return Event(make_event_id(stream, rule_name, track_id, ts_ns), stream, rule_name, "enter", track_id, 0, ts_ns, {"zone": "z"})


def result_for(image: np.ndarray, events, pts_ns=0, dets=None, fmt="rgb24", size=None) -> FrameResult:
    width, height = size or (image.shape[1], image.shape[0])
    frame = Frame("cam-1", 0, pts_ns, 0, image, width, height, fmt)
    return FrameResult(frame, dets if dets is not None else Detections.empty(), list(events))


def decode_all(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def feed_clip_scenario(sink: MediaSink, clip_path: Path, event_frame: int, lead: int) -> Event:
    """Tap every packet like the worker would; the event reaches the sink `lead` packets late."""
    with av.open(str(clip_path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        event_pts = None
        for n, packet in enumerate(packets):
            sink.packet_tap("cam-1", packet)
            if n == event_frame + lead:
                # frame `event_frame` (display order) fired; its pts_ns as the decoder reports it
                pts = sorted(p.pts for p in packets)[event_frame]
                event_pts = pts * stream.time_base.numerator * 10**9 // stream.time_base.denominator
                event = event_at(event_pts)
                sink.on_frame(result_for(np.zeros((stream.height, stream.width, 3), np.uint8), [event]))
    sink.on_stream_end("cam-1")
    return event


def test_snapshot_jpeg_decodes_to_the_frame_size_with_a_crop_of_the_object(tmp_path):
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule()])
    sink.open()
    image = np.zeros((240, 320, 3), np.uint8)
    image[100:160, 50:110] = (250, 20, 20)  # the object
    dets = Detections(np.array([[50, 100, 110, 160]], np.float32), np.array([0.9], np.float32),
                      np.array([0], np.int32), track_id=np.array([7], np.int64))
    event = event_at(123)
    sink.on_frame(result_for(image, [event], dets=dets))
    sink.close()
    paths = media_paths(tmp_path, "cam-1", event.event_id)
    (full,) = decode_all(paths.snapshot)
    assert (full.width, full.height) == (320, 240)
    assert np.abs(full.to_ndarray(format="rgb24").astype(int) - image).mean() < 3
    (crop,) = decode_all(paths.crop)
    assert (crop.width, crop.height) == (72, 72)  # 60 px box + 10 % margin each side
    assert crop.to_ndarray(format="rgb24")[36, 36, 0] > 200
    assert sink.stats()["snapshots"] == 1 and sink.stats()["crops"] == 1


def test_snapshot_of_an_nv12_frame_decodes_to_the_frame_size(tmp_path):
    rgb = np.full((240, 320, 3), (30, 200, 90), np.uint8)
    nv12 = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="nv12").to_ndarray()
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule()])
    event = event_at(5)
    sink.on_frame(result_for(nv12, [event], fmt="nv12", size=(320, 240)))
    (full,) = decode_all(media_paths(tmp_path, "cam-1", event.event_id).snapshot)
    assert (full.width, full.height) == (320, 240)
    assert np.abs(full.to_ndarray(format="rgb24").astype(int) - rgb).mean() < 4


def test_rules_without_snapshot_or_unknown_rules_write_nothing(tmp_path):
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule("quiet", snapshot=False)])
    sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [event_at(1, "quiet"), event_at(2, "unknown")]))
    assert not any(tmp_path.rglob("*.jpg"))


def test_crop_box_grows_clips_and_keeps_even_sizes():
    assert crop_box([10, 10, 20, 20], 100, 100) == (9, 9, 21, 21)
    assert crop_box([-5, 90, 15, 120], 100, 100) == (0, 87, 16, 99)  # clipped at 0 and 100, then made even
    assert crop_box([120, 120, 130, 130], 100, 100) is None  # entirely outside the image
    assert crop_box([100, 10, 100, 20], 100, 100) is None  # zero width at the edge


def test_clip_starts_on_a_keyframe_and_spans_before_and_after_the_event(tmp_path):
    source = make_h264(tmp_path / "src.mp4", frames=80, gop=10)
    config = MediaOutput(type="media", directory=tmp_path / "media", clip_before_s=2.0, clip_after_s=2.0)
    sink = MediaSink(config, [rule(snapshot=False, clip=True)])
    sink.open()
    event = feed_clip_scenario(sink, source, event_frame=45, lead=8)
    sink.close()
    clip = media_paths(config.directory, "cam-1", event.event_id).clip
    frames = decode_all(clip)
    assert frames[0].key_frame
    # from the keyframe at 2.0 s (the last at or before 4.5 - 2.0) to 6.5 s, every frame once, in
    # order; frame 66 too, as frames 64 and 65 are B-frames that refer to it
    assert [frame_index(f) for f in frames] == list(range(20, 67))
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"  # remuxed, not re-encoded
        assert float(stream.duration * stream.time_base) == pytest.approx(4.7, abs=0.05)
    assert sink.stats()["clips"] == 1


def test_clip_of_real_footage_starts_at_its_sparse_keyframe(tmp_path, shared):
    source = shared("media/car-detection.mp4")  # 12.5 fps, keyframes every 4.8 s
    config = MediaOutput(type="media", directory=tmp_path, clip_before_s=2.0, clip_after_s=3.0)
    sink = MediaSink(config, [rule(snapshot=False, clip=True)])
    sink.open()
    event = feed_clip_scenario(sink, source, event_frame=150, lead=20)  # event at 12.0 s
    sink.close()
    clip = media_paths(tmp_path, "cam-1", event.event_id).clip
    frames = decode_all(clip)
    assert frames[0].key_frame
    with av.open(str(source)) as original:
        reference = next(itertools.islice(original.decode(video=0), 120, None))  # the keyframe at 9.6 s
    first = frames[0].to_ndarray(format="rgb24").astype(int)
    assert np.abs(first - reference.to_ndarray(format="rgb24").astype(int)).max() == 0  # bit-exact: no re-encode
    assert len(frames) == 188 - 120 + 1  # 9.6 s up to the first frame at or after 15.0 s (frame 188, 15.04 s)


def test_clip_without_tapped_packets_is_counted_as_missed(tmp_path):
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), [rule(snapshot=False, clip=True)])
    sink.open()
    sink.on_frame(result_for(np.zeros((32, 32, 3), np.uint8), [event_at(1)]))
    sink.close()
    assert sink.stats()["clips_missed"] == 1 and not any(tmp_path.rglob("*.mp4"))


def test_event_reaching_the_sink_after_the_clip_end_is_written_at_once(tmp_path):
    source = make_h264(tmp_path / "src.mp4", frames=80, gop=10)
    config = MediaOutput(type="media", directory=tmp_path / "media", clip_before_s=1.0, clip_after_s=1.0)
    sink = MediaSink(config, [rule(snapshot=False, clip=True)])
    sink.open()
    with av.open(str(source)) as container:  # the tap ran 3 s ahead of the sinks (a file read fast)
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size:
                sink.packet_tap("cam-1", packet)
                if packet.pts == 70 * 1024:
                    event = event_at(4 * 10**9)  # frame 40
                    sink.on_frame(result_for(np.zeros((240, 320, 3), np.uint8), [event]))
                    clip = media_paths(config.directory, "cam-1", event.event_id).clip
                    deadline = time.monotonic() + 5
                    while not clip.exists() and time.monotonic() < deadline:
                        time.sleep(0.01)
                    assert clip.exists()  # not waiting for the stream to end
    sink.close()
    assert [frame_index(f) for f in decode_all(clip)] == list(range(30, 51))


def test_reconnect_finishes_the_pending_clip_and_the_next_connection_records_anew(tmp_path):
    first = make_h264(tmp_path / "a.mp4", frames=40, gop=10)
    second = make_h264(tmp_path / "b.mp4", frames=40, gop=10)
    config = MediaOutput(type="media", directory=tmp_path / "media", clip_before_s=1.0, clip_after_s=10.0)
    sink = MediaSink(config, [rule(snapshot=False, clip=True)])
    sink.open()
    events = []
    for n, path in enumerate((first, second)):  # two connections: a new demuxer stream each time
        with av.open(str(path)) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    sink.packet_tap("cam-1", packet)
                    if packet.pts == 30 * 1024:
                        events.append(event_at(25 * 10**8 + n))  # frame 25 of this connection
                        sink.on_frame(result_for(np.zeros((240, 320, 3), np.uint8), events[-1:]))
    sink.close()
    for event in events:  # each clip: from the keyframe at 1.0 s to where its connection ended
        frames = decode_all(media_paths(config.directory, "cam-1", event.event_id).clip)
        assert [frame_index(f) for f in frames] == list(range(10, 40))
    assert sink.stats()["clips"] == 2


def test_event_on_another_clock_is_clipped_around_the_newest_packet(tmp_path):
    source = make_h264(tmp_path / "src.mp4", frames=60, gop=10)
    config = MediaOutput(type="media", directory=tmp_path / "media", clip_before_s=1.0, clip_after_s=1.0)
    sink = MediaSink(config, [rule(snapshot=False, clip=True)])
    sink.open()
    with av.open(str(source)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                sink.packet_tap("cam-1", packet)
                if packet.pts == 30 * 1024:  # newest packet shows frame 30
                    event = event_at(10**18)  # a wall-clock time, far outside the packets' clock
                    sink.on_frame(result_for(np.zeros((240, 320, 3), np.uint8), [event]))
    sink.close()
    indices = [frame_index(f) for f in decode_all(media_paths(config.directory, "cam-1", event.event_id).clip)]
    assert indices[0] == 20 and indices[-1] in (40, 41)


def test_clip_through_the_real_reader_tap_matches_the_decoded_frame_clock(tmp_path, shared):
    from pipeline.config.models import StreamConfig
    from pipeline.sources import open_reader

    source = shared("media/car-detection.mp4")
    config = MediaOutput(type="media", directory=tmp_path, clip_before_s=2.0, clip_after_s=3.0)
    sink = MediaSink(config, [rule(snapshot=True, clip=True)])
    sink.open()
    reader = open_reader(StreamConfig(id="cam-1", url=str(source), decode="cpu"), packet_tap=sink.packet_tap)
    try:
        for i, decoded in enumerate(reader.frames()):
            if i == 150:  # 12.0 s
                event = event_at(decoded.pts_ns)
                sink.on_frame(result_for(decoded.image.to_ndarray(format="rgb24"), [event], pts_ns=decoded.pts_ns))
    finally:
        reader.close()
    sink.on_stream_end("cam-1")
    sink.close()
    paths = media_paths(tmp_path, "cam-1", event.event_id)
    frames = decode_all(paths.clip)
    assert frames[0].key_frame and len(frames) == 188 - 120 + 1  # same window as the packets alone give
    (snapshot,) = decode_all(paths.snapshot)
    assert (snapshot.width, snapshot.height) == (768, 432)
