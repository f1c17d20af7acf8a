"""Reading an H.264 SPS for its reordering, and declaring one free of it: what lets NVDEC hand a camera's
picture on with its own packet. The decoder side runs on a GPU (tests/gpu/test_gpu_nvdec.py); here FFmpeg's
reading of the same parameter sets and its pictures decoded with the declared ones are the references."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.sources.demux import Demuxer
from pipeline.sources.h264 import _escape, _unescape, declaring_no_reorder, parse, progressive
from pipeline.sources.nal import headers


def _annexb_units(path: Path) -> list[bytes]:
    demuxer = Demuxer(str(path), path.name)
    demuxer.open()
    try:
        return [bytes(p) for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True) if p.size]
    finally:
        demuxer.close()


def _first_sps(units: list[bytes]) -> bytes:
    return next(sps for unit in units if (sps := headers(unit, "h264").sps) is not None)


def _pictures(units: list[bytes]) -> list[np.ndarray]:
    """FFmpeg's pictures of an Annex-B stream, in output order."""
    decoder = av.CodecContext.create("h264", "r")
    frames = []
    for unit in [*units, None]:
        packet = av.Packet(unit) if unit is not None else None
        frames += [f.to_ndarray(format="yuv420p") for f in decoder.decode(packet)]
    return frames


def _x264(path: Path, params: str, profile: str = "high", frames: int = 16) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"x264-params": params, "profile": profile, "preset": "veryfast"}
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
        for i in range(frames):
            picture = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("params, profile, reorder", [
    ("bframes=0", "baseline", 0),
    ("bframes=1:b-pyramid=none", "main", 1),
    ("bframes=3:b-pyramid=normal", "high", 2),
    ("bframes=2:b-pyramid=none:nal-hrd=vbr:vbv-maxrate=500:vbv-bufsize=1000", "high", 1),
    ("bframes=3:b-pyramid=strict:nal-hrd=cbr:vbv-maxrate=400:vbv-bufsize=400:bitrate=400", "main", 2),
    ("bframes=2:interlaced=1:sar=4/3", "high", 2),
    ("bframes=0:crop-rect=0,0,0,8:colorprim=bt709:transfer=bt709:colormatrix=bt709:chromaloc=1", "high", 0),
])
def test_the_reordering_an_sps_states_is_read(tmp_path, params, profile, reorder):
    # x264 always states it (B-frames: 2 with a pyramid, else 1); reading it needs every field before it right
    # (HRD, SAR, cropping, colour, fields)
    path = _x264(tmp_path / "clip.mp4", params, profile)
    sps = parse(_first_sps(_annexb_units(path)))
    assert sps.max_num_reorder_frames == reorder
    with av.open(str(path)) as container:
        assert bool(sps.max_num_reorder_frames) == container.streams.video[0].codec_context.has_b_frames
    assert sps.frame_mbs_only == ("interlaced" not in params)
    assert declaring_no_reorder(_first_sps(_annexb_units(path))) is None  # stated already: nothing to declare


@pytest.mark.parametrize("clip", ["media/car-detection.mp4", "media/dashcam-highway-960x540.mp4"])
def test_a_declared_sps_decodes_to_the_same_pictures_and_says_nothing_else_new(shared, clip):
    # both clips come from real encoders that do not state their reordering and have no B-frames
    units = _annexb_units(shared(clip))
    sps = _first_sps(units)
    declared = declaring_no_reorder(sps)
    assert declared is not None
    before, after = parse(sps), parse(declared)
    assert before.max_num_reorder_frames is None and after.max_num_reorder_frames == 0
    assert (after.profile_idc, after.level_idc, after.pic_order_cnt_type, after.max_num_ref_frames, after.vui_at) == \
        (before.profile_idc, before.level_idc, before.pic_order_cnt_type, before.max_num_ref_frames, before.vui_at)
    assert after.restriction_at == before.restriction_at
    assert declared[: before.restriction_at // 8] == sps[: before.restriction_at // 8]
    original = _pictures(units)
    rewritten = _pictures([unit.replace(sps, declared, 1) for unit in units])
    assert len(rewritten) == len(original) == len(units)
    assert all(np.array_equal(a, b) for a, b in zip(original, rewritten))


def test_an_sps_without_vui_gets_one_that_only_declares_the_order(shared):
    units = _annexb_units(shared("media/car-detection.mp4"))
    sps = _first_sps(units)
    # the same SPS cut before its VUI: vui_parameters_present_flag 0, then the stop bit
    bits = "".join(f"{b:08b}" for b in _unescape(sps))[: parse(sps).vui_at] + "01"
    bits += "0" * (-len(bits) % 8)
    bare = _escape(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    assert parse(bare).restriction_at is None
    declared = declaring_no_reorder(bare)
    assert parse(declared).max_num_reorder_frames == 0
    plain = _pictures([u.replace(sps, bare, 1) for u in units])
    assert all(np.array_equal(a, b) for a, b in zip(plain, _pictures([u.replace(sps, declared, 1) for u in units])))
    assert len(plain) == len(units)


def test_an_sps_with_more_after_its_last_field_than_trailing_bits_is_never_declared(shared):
    # an SPS extension, or a profile read wrongly: rewriting from a misread position would corrupt the stream
    sps = _first_sps(_annexb_units(shared("media/car-detection.mp4")))
    at = parse(sps).restriction_at
    bits = "".join(f"{b:08b}" for b in _unescape(sps))[: at + 1] + "0110" + "1"
    bits += "0" * (-len(bits) % 8)
    longer = _escape(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    assert parse(longer).restriction_at == at
    assert declaring_no_reorder(longer) is None


def test_nothing_is_declared_where_the_order_is_the_decode_order_already(shared):
    sps = _first_sps(_annexb_units(shared("media/dog-phone-1080p.mp4")))
    assert parse(sps).pic_order_cnt_type == 2  # output order is decode order: NVDEC holds nothing back
    assert declaring_no_reorder(sps) is None


def test_a_scaling_matrix_and_order_count_type_1_are_read_past(tmp_path):
    # no encoder at hand writes either into an SPS: the fields are written here, by the standard's syntax
    def ue(v: int) -> str:
        code = bin(v + 1)[2:]
        return "0" * (len(code) - 1) + code

    def se(v: int) -> str:
        return ue(2 * v - 1 if v > 0 else -2 * v)

    bits = "01100111" + f"{100:08b}" + "0" * 8 + f"{40:08b}" + ue(0)  # header, High, level 4.0, sps id
    bits += ue(1) + ue(8) + ue(8) + "0"  # 4:2:0, 16-bit depths, no bypass
    bits += "1" + "1" + se(-8) + "0" * 5 + "1" + "".join(se(1) for _ in range(64)) + "0"  # lists 0 and 6
    bits += ue(0) + ue(1) + "0" + se(-2) + se(3) + ue(2) + se(1) + se(-1)  # frame_num; order count type 1
    bits += ue(3) + "0" + ue(119) + ue(67) + "1" + "1" + "1" + ue(0) + ue(0) + ue(0) + ue(4)  # refs, size, crop
    bits += "1" + "1" + f"{255:08b}" + "0" * 15 + "1" + "0" * 15 + "1"  # VUI: extended SAR 1:1
    bits += "0" * 4  # overscan, video signal, chroma location, timing
    bits += "1" + ue(1) + "0001" + "0010" + (ue(100) + ue(200) + "1") * 2 + "10111" * 4  # NAL HRD, 2 CPBs
    bits += "0" + "1" + "0"  # no VCL HRD, low delay, no picture structure
    bits += "1" + "1" + ue(2) + ue(1) + ue(16) + ue(16) + ue(3) + ue(4) + "1"  # restriction: reorder 3
    bits += "0" * (-len(bits) % 8)
    sps = parse(_escape(int(bits, 2).to_bytes(len(bits) // 8, "big")))
    assert (sps.profile_idc, sps.level_idc, sps.pic_order_cnt_type, sps.max_num_ref_frames) == (100, 40, 1, 3)
    assert sps.max_num_reorder_frames == 3
    assert progressive(_escape(int(bits, 2).to_bytes(len(bits) // 8, "big")))


def test_emulation_prevention_survives_a_rewrite():
    rbsp = bytes([0x67, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0x80])
    escaped = _escape(rbsp)
    assert b"\x00\x00\x00" not in escaped and b"\x00\x00\x01" not in escaped and b"\x00\x00\x02" not in escaped
    assert _unescape(escaped) == rbsp


@pytest.mark.parametrize("nal", [b"", b"\x68\xce\x38\x80", b"\x67\x42", b"\x67\x42\x80\x16"])
def test_what_is_not_a_whole_sps_is_refused_and_never_declared(nal):
    with pytest.raises(ValueError):
        parse(nal)
    assert declaring_no_reorder(nal) is None
    assert not progressive(nal)
