"""NVDEC decoding through PyNvVideoCodec matches PyAV's CPU decoding frame for frame."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import av
import numpy as np
import pytest

from pipeline.config.models import StreamConfig
from pipeline.detect.preprocess_gpu import matrix_for, nv12_to_rgb_reference
from pipeline.errors import SourceError
from pipeline.machine import nvdec_status
from pipeline.sources import open_reader
from pipeline.sources.demux import Demuxer
from pipeline.sources.nvdec import NvdecDecoder
from pipeline.types import pts_to_ns
from tests.gpu.helpers import decode_clip, gpu_file


def test_nvdec_reports_itself_available_on_a_gpu_machine():
    ok, reason = nvdec_status()
    assert ok, reason
    assert reason.startswith("nvdec on ")


def _rgb(decoded) -> np.ndarray:
    """Host RGB of a CPU-decoded frame (an array, or an av.VideoFrame converted late)."""
    image = decoded.image
    return image.to_ndarray(format="rgb24") if hasattr(image, "to_ndarray") else np.asarray(image)


@pytest.mark.parametrize("low_latency", [False, True], ids=["throughput", "low-latency"])
@pytest.mark.parametrize("clip", ["media/car-detection.mp4", "media/dog-phone-1080p.mp4", "media/dog-848x464.mp4",
                                  "media/person-bicycle-car-detection.mp4"])
def test_nvdec_decodes_every_frame_with_the_same_timestamps_as_pyav(clip, low_latency):
    # person-bicycle's MP4 edit list hides 8 pre-roll frames (negative pts): both must drop them; dog-848x464 has
    # B-frames, which the low-latency decoder must still hand on in display order
    path = gpu_file(clip)
    cpu = decode_clip(path, "cpu")
    gpu = decode_clip(path, "nvdec", low_latency=low_latency)
    assert len(gpu) == len(cpu) > 0
    assert [f.pts_ns for f in gpu] == [f.pts_ns for f in cpu]
    assert {(f.width, f.height) for f in gpu} == {(f.width, f.height) for f in cpu}
    first = gpu[0]
    assert first.pixel_format == "nv12"
    assert first.image.shape == (first.height * 3 // 2, first.width)


@pytest.mark.parametrize("low_latency", [False, True], ids=["throughput", "low-latency"])
def test_nvdec_follows_a_mid_stream_resolution_change(low_latency):
    path = gpu_file("media/resolution-change.h264")
    cpu = decode_clip(path, "cpu")
    gpu = decode_clip(path, "nvdec", low_latency=low_latency)
    sizes = [(f.width, f.height) for f in gpu]
    assert len(gpu) == len(cpu)
    assert sizes == [(f.width, f.height) for f in cpu]
    assert sizes[0] == (848, 464) and sizes[-1] == (424, 232)
    assert all(f.image.shape == (f.height * 3 // 2, f.width) for f in gpu)
    last = gpu[-1]
    rgb = nv12_to_rgb_reference(last.image.get(), last.width, last.height, "bt601")
    assert np.abs(rgb.astype(np.int16) - _rgb(cpu[-1]).astype(np.int16)).mean() < 2.0


@pytest.mark.parametrize("clip", ["media/car-detection.mp4", "media/dog-phone-1080p.mp4"])
def test_a_camera_picture_leaves_nvdec_with_its_own_packet(clip):
    """A live or paced stream's decoder hands each picture on with its own packet, where a file read as fast as it
    decodes holds it for later ones. Neither clip has B-frames, as cameras send; car-detection's SPS does not say
    so (NVDEC's default mode then holds a whole picture buffer, 8 packets), dog-phone's does (2)."""
    path = gpu_file(clip)
    held = {}
    for pace in (True, False):
        demuxed: list[int] = []  # each packet's pts in ns, in decode order
        config = StreamConfig(id="cam", url=str(path), decode="nvdec", pace=pace)
        reader = open_reader(config, "nvdec",
                             packet_tap=lambda _stream, packet: demuxed.append(pts_to_ns(packet.pts, packet.time_base)))
        # for each frame: how many packets were read after its own when it came out
        after = [len(demuxed) - 1 - demuxed.index(frame.pts_ns) for frame in reader.frames() if frame.pts_ns in demuxed]
        reader.close()
        assert len(after) > len(demuxed) // 2, f"few frames matched a packet by timestamp: {len(after)} of {len(demuxed)}"
        held[pace] = sorted(after)[len(after) // 2]
    assert held[True] == 0, held
    assert held[False] > 0, held


def test_a_declared_order_changes_no_pixel():
    # car-detection's SPS is declared free of reordering for the camera's decoder: the same pictures come out
    path = gpu_file("media/car-detection.mp4")
    camera = decode_clip(path, "nvdec", low_latency=True)
    file = decode_clip(path, "nvdec")
    assert len(camera) == len(file) > 300
    assert all(np.array_equal(c.image.get(), f.image.get()) for c, f in zip(camera, file))


def test_a_stream_that_reorders_after_all_is_decoded_in_display_order():
    """A stream whose B-frames its container does not announce: declared free of reordering at first, the decoder
    sees a timestamp go back, starts again from the SPS as the stream says, and repeats no picture; at most the
    few B-frames before the first one it handed on are dropped, once (`tests/unit/sources/test_reorder_watch.py`
    has the plans, this the decoder following them)."""
    path = gpu_file("media/dog-848x464.mp4")  # B-frames: 47 of its 96 packets' timestamps go back
    file = [f.pts_ns for f in decode_clip(path, "nvdec")]
    demuxer = Demuxer(str(path), path.name)
    stream = demuxer.open()
    unannounced = SimpleNamespace(time_base=stream.time_base,
                                  codec_context=SimpleNamespace(name="h264", has_b_frames=False,
                                                                extradata=stream.codec_context.extradata))
    decoder = NvdecDecoder(unannounced, path.name, low_latency=True)
    shown = []
    for demuxed in demuxer.packets():
        for packet in demuxer.for_decoder(demuxed, annexb=True):
            shown += [f.pts_ns for f in decoder.decode(packet)]
    shown += [f.pts_ns for f in decoder.flush()]
    decoder.close()
    demuxer.close()
    assert shown == sorted(set(shown))
    assert set(shown) <= set(file)
    assert len(file) - len(shown) <= 2 and shown[-40:] == file[-40:]


def _nal_units(unit: bytes) -> list[bytes]:
    """An Annex-B access unit's NAL units, each with its start code."""
    starts = [i for i in range(len(unit) - 2) if unit[i:i + 3] == b"\x00\x00\x01"]
    bounds = [i - 1 if i and unit[i - 1] == 0 else i for i in starts] + [len(unit)]
    return [unit[a:b] for a, b in zip(bounds, bounds[1:])]


def _as_sdp_only_camera(path) -> tuple[list[tuple[bytes, int, object]], list[bytes], SimpleNamespace]:
    """A clip's access units (data, pts, time base), its parameter set NAL units, and a stream that has them only in
    its extradata, as an RTSP camera that sends them only in its SDP."""
    demuxer = Demuxer(str(path), path.name)
    stream = demuxer.open()
    units = [(bytes(p), p.pts, p.time_base) for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True)]
    time_base = stream.time_base
    demuxer.close()
    sets = [n for n in _nal_units(units[0][0]) if n.lstrip(b"\x00")[1] & 0x1F in (7, 8)]
    sdp_only = SimpleNamespace(time_base=time_base, codec_context=SimpleNamespace(
        name="h264", has_b_frames=False, extradata=b"".join(sets)))
    return units, sets, sdp_only


def test_a_camera_that_sends_its_parameter_sets_only_in_its_sdp_decodes_from_the_first_packet():
    path = gpu_file("media/car-detection.mp4")
    file = [f.pts_ns for f in decode_clip(path, "nvdec")]
    units, sets, sdp_only = _as_sdp_only_camera(path)
    assert len(sets) == 2  # SPS and PPS, which the camera keeps out of its packets
    decoder = NvdecDecoder(sdp_only, path.name, low_latency=True)
    at = [pts_to_ns(pts, time_base) for _, pts, time_base in units]
    shown, held = [], []
    for index, (unit, pts, time_base) in enumerate(units):
        packet = av.Packet(b"".join(n for n in _nal_units(unit) if n not in sets))
        packet.pts, packet.time_base = pts, time_base
        frames = decoder.decode(packet)
        shown += [f.pts_ns for f in frames]
        held += [index - at.index(f.pts_ns) for f in frames]
    shown += [f.pts_ns for f in decoder.flush()]
    decoder.close()
    assert shown == file
    assert max(held) == 0  # and its SPS, from the SDP, declared free of reordering


def test_an_sdp_only_camera_whose_timestamps_start_reordering_restarts_at_the_next_idr_with_its_parameter_sets():
    """The declaration ends where a fresh decoder can start: at the next IDR picture, which from such a camera comes
    without the parameter sets; the decoder puts the SDP's in front, so every picture from there on comes out."""
    path = gpu_file("media/car-detection.mp4")  # an IDR picture every 60 packets
    units, sets, sdp_only = _as_sdp_only_camera(path)
    order = list(range(40)) + [k + (1 if (k - 40) % 2 == 0 else -1) for k in range(40, 120)]  # then P B P B ...
    packet_of = {pts_to_ns(units[k][1], units[k][2]): index for index, k in enumerate(order)}
    decoder = NvdecDecoder(sdp_only, path.name, low_latency=True)
    shown, held = [], {}
    for index, k in enumerate(order):
        unit, _, time_base = units[index]
        packet = av.Packet(b"".join(n for n in _nal_units(unit) if n not in sets))
        packet.pts, packet.time_base = units[k][1], time_base
        frames = decoder.decode(packet)
        shown += [f.pts_ns for f in frames]
        held.update({packet_of[f.pts_ns]: index - packet_of[f.pts_ns] for f in frames})
    shown += [f.pts_ns for f in decoder.flush()]
    decoder.close()
    assert len(shown) == len(set(shown))
    assert set(packet_of) == set(shown)  # every picture, those from the IDR at 60 on decoded by a fresh decoder
    assert max(held[i] for i in range(60)) == 0 and max(held[i] for i in range(60, 100)) > 0  # its own SPS from 60


@pytest.mark.parametrize("clip", ["media/car-detection.mp4", "media/dog-phone-1080p.mp4"])
def test_nvdec_pixels_match_pyav_after_colour_conversion(clip, report):
    path = gpu_file(clip)
    cpu = decode_clip(path, "cpu", limit=12)
    gpu = decode_clip(path, "nvdec", limit=12)
    diffs = []
    for c, g in zip(cpu, gpu):
        rgb = nv12_to_rgb_reference(g.image.get(), g.width, g.height, matrix_for(g.height))
        diffs.append(np.abs(rgb.astype(np.int16) - _rgb(c).astype(np.int16)))
    d = np.stack(diffs)
    report(f"nvdec_vs_pyav_rgb[{clip}]", max_abs=int(d.max()), mean_abs=float(d.mean()))
    assert d.mean() < 1.5
    assert np.percentile(d, 99.9) <= 6


def test_frames_held_by_the_pipeline_are_not_overwritten_by_later_decodes():
    path = gpu_file("media/car-detection.mp4")
    frames = decode_clip(path, "nvdec")
    early = [f.image.get() for f in decode_clip(path, "nvdec", limit=8)]
    for held, fresh in zip(frames[:8], early):
        np.testing.assert_array_equal(held.image.get(), fresh)


def test_streams_decoded_in_parallel_threads_equal_one_decoded_alone():
    path = gpu_file("media/dog-848x464.mp4")
    alone = [int(f.image.sum()) for f in decode_clip(path, "nvdec")]
    results: dict[int, list[int]] = {}

    def work(i: int) -> None:
        results[i] = [int(f.image.sum()) for f in decode_clip(path, "nvdec")]

    threads = [threading.Thread(target=work, args=(i,), name=f"decode:t{i}") for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(results[i] == alone for i in range(6))


def test_hevc_stream_decodes_like_pyav(tmp_path):
    path = tmp_path / "clip.mp4"
    try:
        _encode(path, "libx265", frames=24, size=(320, 192))
    except (av.error.FFmpegError, ValueError, av.codec.codec.UnknownCodecError) as exc:
        pytest.skip(f"this PyAV build cannot encode HEVC ({exc})")
    cpu = decode_clip(path, "cpu")
    gpu = decode_clip(path, "nvdec")
    assert len(gpu) == len(cpu) == 24
    assert [f.pts_ns for f in gpu] == [f.pts_ns for f in cpu]


def test_a_codec_nvdec_cannot_decode_raises_source_error_naming_the_stream(tmp_path):
    path = tmp_path / "clip.avi"
    _encode(path, "mjpeg", frames=2, pix_fmt="yuvj420p")
    with av.open(str(path)) as container:
        with pytest.raises(SourceError, match="stream 'cam-9'.*decode: cpu"):
            NvdecDecoder(container.streams.video[0], "stream 'cam-9'")


def test_a_stream_nvdec_rejects_fails_alone_with_a_source_error_and_others_go_on(tmp_path):
    small = tmp_path / "small.mp4"  # HEVC below NVDEC's 144x144 minimum
    try:
        _encode(small, "libx265", frames=4, size=(128, 96))
    except (av.error.FFmpegError, ValueError, av.codec.codec.UnknownCodecError) as exc:
        pytest.skip(f"this PyAV build cannot encode HEVC ({exc})")
    with pytest.raises(SourceError, match="stream 'clip'.*NVDEC"):
        decode_clip(small, "nvdec")
    assert len(decode_clip(gpu_file("media/dog-848x464.mp4"), "nvdec", limit=5)) == 5


def _encode(path, codec: str, frames: int, pix_fmt: str = "yuv420p", size=(160, 96)) -> None:
    """A small moving-gradient clip (24 fps) encoded with `codec`."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        for i in range(frames):
            x = (np.arange(w) % 256).astype(np.uint8)[None, :, None]
            image = np.broadcast_to((x + i * 5) % 255, (h, w, 3)).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_a_looped_file_keeps_its_nvdec_decoder_and_every_pass_decodes_alike(monkeypatch):
    import cupy

    from pipeline.config.models import StreamConfig
    from pipeline.sources import nvdec
    from pipeline.sources.worker import StreamWorker
    from tests.support.collecting_sink import CollectingSink

    path = gpu_file("media/dog-848x464.mp4")
    first = decode_clip(path, "nvdec")
    created = []
    create = nvdec.NvdecDecoder._create
    monkeypatch.setattr(nvdec.NvdecDecoder, "_create", lambda self: created.append(1) or create(self))
    sink = CollectingSink()
    worker = StreamWorker(StreamConfig(id="loop", url=str(path), decode="nvdec", loop=True), sink)
    worker.start()
    assert sink.wait_for(3 * len(first), timeout=60)
    worker.stop()
    assert worker.join(10)
    frames = sink.frames[: 3 * len(first)]
    for k, frame in enumerate(frames):
        assert bool(cupy.array_equal(frame.image, first[k % len(first)].image)), k
    pts = [f.pts_ns for f in sink.frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert worker.stats()["loops"] >= 2
    assert len(created) == 1  # one decoder for every pass
