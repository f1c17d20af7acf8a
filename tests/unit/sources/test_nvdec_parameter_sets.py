"""Reading the headers of Annex-B packets: how NVDEC notices a mid-stream resolution change (a new sequence
parameter set), and what a fresh decoder needs to start at an IDR picture (the parameter sets)."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.sources.demux import Demuxer
from pipeline.sources.nal import Headers, headers


def _parameter_set_runs(path: Path) -> list[bytes]:
    """The distinct SPS of a file in the order they appear (a repeat of the last one is not a new run)."""
    demuxer = Demuxer(str(path), path.name)
    stream = demuxer.open()
    runs: list[bytes] = []
    try:
        for demuxed in demuxer.packets():
            for packet in demuxer.for_decoder(demuxed, annexb=True):
                sps = headers(bytes(packet), stream.codec_context.name).sps
                if sps is not None and (not runs or runs[-1] != sps):
                    runs.append(sps)
    finally:
        demuxer.close()
    return runs


def test_the_resolution_change_clip_has_two_parameter_sets(shared):
    runs = _parameter_set_runs(shared("media/resolution-change.h264"))
    assert len(runs) == 2
    assert all(r[0] & 0x1F == 7 for r in runs)


def test_an_mp4_keeps_one_parameter_set_so_its_decoder_never_restarts(shared):
    runs = _parameter_set_runs(shared("media/car-detection.mp4"))  # avcC extradata, inserted by the Annex-B filter
    assert len(runs) == 1


def _encode_raw_hevc(path: Path, size: tuple[int, int], frames: int) -> bytes:
    w, h = size
    with av.open(str(path), "w", format="hevc") as out:
        stream = out.add_stream("libx265", rate=24, options={"x265-params": "log-level=error"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.full((h, w, 3), (i * 20) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def test_hevc_streams_joined_at_two_sizes_have_two_parameter_sets(tmp_path):
    if "libx265" not in av.codecs_available:
        pytest.skip("this PyAV build has no libx265 encoder")
    joined = tmp_path / "joined.h265"
    joined.write_bytes(_encode_raw_hevc(tmp_path / "a.h265", (160, 96), 6) + _encode_raw_hevc(tmp_path / "b.h265", (128, 64), 6))
    runs = _parameter_set_runs(joined)
    assert len(runs) == 2
    assert all((r[0] >> 1) & 0x3F == 33 for r in runs)


def test_the_search_stops_at_the_first_slice_and_trims_a_four_byte_start_code():
    aud, sps, pps = b"\x09\xf0", b"\x67\x64\x00\x1f\xac", b"\x68\xee\x3c\x80"
    unit = b"\x00\x00\x00\x01" + aud + b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + b"\x00\x00\x01\x65\x88"
    head = headers(unit, "h264")
    assert head.sps == sps and head.idr
    assert head.parameter_sets == (b"\x00\x00\x00\x01" + sps, b"\x00\x00\x00\x01" + pps)  # not the delimiter
    slice_first = b"\x00\x00\x01\x65\x88\x00\x00\x01" + sps
    assert headers(slice_first, "h264") == headers(b"\x00\x00\x01\x65\x88", "h264")  # a later SPS is the next unit's
    assert headers(slice_first, "h264").sps is None and headers(slice_first, "h264").idr
    assert not headers(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01\x41\x9a", "h264").idr  # a P slice after an SPS
    assert headers(unit, "av1") == headers(b"", "h264") == Headers()


def test_every_idr_of_an_mp4_carries_its_parameter_sets_and_no_other_picture_does(shared):
    demuxer = Demuxer(str(shared("media/car-detection.mp4")), "clip")
    stream = demuxer.open()
    try:
        units = [headers(bytes(p), "h264") for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True)]
    finally:
        demuxer.close()
    keyframes = [head for head in units if head.idr]
    assert len(keyframes) > 1 and all(head.sps is not None and head.parameter_sets for head in keyframes)
    assert all(head.sps is None and not head.parameter_sets for head in units if not head.idr)
    sps, pps = keyframes[0].parameter_sets
    assert sps == b"\x00\x00\x00\x01" + keyframes[0].sps and pps[4] & 0x1F == 8
    assert stream.codec_context.name == "h264"


def test_hevc_headers_give_its_three_parameter_sets_and_its_idr_pictures(tmp_path):
    if "libx265" not in av.codecs_available:
        pytest.skip("this PyAV build has no libx265 encoder")
    path = tmp_path / "a.h265"
    path.write_bytes(_encode_raw_hevc(tmp_path / "a.h265", (160, 96), 6))
    demuxer = Demuxer(str(path), path.name)
    demuxer.open()
    try:
        units = [headers(bytes(p), "hevc") for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True)]
    finally:
        demuxer.close()
    first = units[0]
    assert first.idr and [(nal[4] >> 1) & 0x3F for nal in first.parameter_sets] == [32, 33, 34]  # VPS, SPS, PPS
    assert first.sps is not None and first.parameter_sets[1] == b"\x00\x00\x00\x01" + first.sps
    assert not any(head.idr or head.parameter_sets for head in units[1:])


@pytest.mark.parametrize("sei_bytes", [6000, 4060])  # the parameter sets wholly past the first read; the SPS cut by it
def test_parameter_sets_behind_a_large_sei_message_are_read_whole(shared, sei_bytes):
    demuxer = Demuxer(str(shared("media/car-detection.mp4")), "clip")
    demuxer.open()
    try:
        idr = next(bytes(p) for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True))
    finally:
        demuxer.close()
    plain = headers(idr, "h264")
    assert plain.idr and plain.sps is not None
    # user data unregistered (payload type 5), its size coded in 255s; no zero byte, so no start code inside
    payload = (bytes(range(1, 256)) * (sei_bytes // 255 + 1))[:sei_bytes]
    size = b"\xff" * (sei_bytes // 255) + bytes([sei_bytes % 255])
    sei = b"\x00\x00\x00\x01\x06\x05" + size + payload + b"\x80"  # the SPS follows at byte 6,031 / 4,083
    assert headers(sei + idr, "h264") == plain
