"""An H.264 sequence parameter set read far enough to say how long a decoder may hold a picture, and
rewritten to say that it need not hold one.

Why: a stream whose SPS gives no `max_num_reorder_frames` (VUI bitstream restriction absent, picture order
count type 0 or 1) lets a decoder assume pictures may come out of order, so NVDEC keeps up to a full decoded
picture buffer of them before display: 6 pictures (200 ms at 30 fps) for a 768x432 level-2.2 camera, 4 at
1080p level 4.1, even in its low-latency mode. FFmpeg's decoder instead shows pictures at once and grows
its delay when it sees one out of order. For a stream that never reorders (no B-frames: nearly every
surveillance camera), declaring `max_num_reorder_frames = 0` gives NVDEC the same: each picture leaves with
its own packet. The caller must stop declaring it for a stream that turns out to reorder
(`pipeline/sources/nvdec.py` does, from the packets' timestamps).

Syntax: ITU-T H.264 (08/2021) 7.3.2.1.1 (SPS), E.1.1 (VUI), E.1.2 (HRD).
"""
from __future__ import annotations

from dataclasses import dataclass

_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
"""profile_idc values whose SPS carries chroma format, bit depths and scaling matrices."""


class _Bits:
    """Reads an RBSP bit by bit (u(n), ue(v), se(v)), keeping the position."""

    def __init__(self, rbsp: bytes):
        self.data = rbsp
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]  # IndexError past the end: a truncated SPS
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("an Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)


@dataclass(frozen=True)
class SequenceParameters:
    """What of an SPS says how a decoder orders its pictures, and where its restriction flag is."""

    profile_idc: int
    level_idc: int
    pic_order_cnt_type: int
    max_num_ref_frames: int
    frame_mbs_only: bool
    max_num_reorder_frames: int | None
    """From the VUI bitstream restriction; None when the SPS does not say."""
    vui_at: int
    """Bit offset in the RBSP (the NAL header byte included) of vui_parameters_present_flag."""
    restriction_at: int | None
    """Bit offset of bitstream_restriction_flag; None without a VUI."""


def parse(nal: bytes) -> SequenceParameters:
    """An SPS NAL unit (header byte first, emulation prevention bytes in). ValueError when it is not one or
    is cut short."""
    if not nal or nal[0] & 0x1F != 7:
        raise ValueError("not an H.264 sequence parameter set")
    bits = _Bits(_unescape(nal))
    try:
        return _read(bits)
    except IndexError:
        raise ValueError("the sequence parameter set ends early") from None


def declaring_no_reorder(nal: bytes) -> bytes | None:
    """`nal` rewritten to say that its pictures come in display order (max_num_reorder_frames = 0), or None
    when that would change nothing or cannot be said safely: its order count is already the decode order
    (type 2), it states its reordering itself, it codes fields (interlaced), or it cannot be read (what follows the
    last field read is not the RBSP's trailing bits: an extension or a profile this reader does not know)."""
    try:
        sps = parse(nal)
    except ValueError:
        return None
    if sps.pic_order_cnt_type == 2 or sps.max_num_reorder_frames is not None or not sps.frame_mbs_only:
        return None
    bits = "".join(f"{byte:08b}" for byte in _unescape(nal))
    at = sps.vui_at if sps.restriction_at is None else sps.restriction_at
    if bits[at + 1 :].rstrip("0") != "1":  # after the absent flag, only rbsp_trailing_bits: else it was misread
        return None
    kept = bits[:at]
    if sps.restriction_at is None:
        # vui_parameters_present_flag, then aspect ratio, overscan, video signal, chroma location, timing,
        # NAL HRD, VCL HRD and picture structure all absent
        kept += "1" + "0" * 8
    kept += "1"  # bitstream_restriction_flag
    kept += "1"  # motion_vectors_over_pic_boundaries_flag (the value a decoder infers when absent)
    # max_bytes_per_pic_denom 2, max_bits_per_mb_denom 1 and log2 of the largest motion vector 15 (the values
    # inferred when absent), no reordering, and a buffer of the reference frames only
    for value in (2, 1, 15, 15, 0, max(sps.max_num_ref_frames, 1)):
        kept += _ue(value)
    kept += "1"  # rbsp_stop_one_bit
    kept += "0" * (-len(kept) % 8)
    return _escape(int(kept, 2).to_bytes(len(kept) // 8, "big"))


def progressive(nal: bytes) -> bool:
    """Whether an H.264 SPS codes frames only (no fields), so that each access unit is one whole picture."""
    try:
        return parse(nal).frame_mbs_only
    except ValueError:
        return False


def _read(bits: _Bits) -> SequenceParameters:
    bits.u(8)  # NAL header
    profile_idc = bits.u(8)
    bits.u(8)  # constraint flags
    level_idc = bits.u(8)
    bits.ue()  # seq_parameter_set_id
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            bits.u(1)  # separate_colour_plane_flag
        bits.ue(), bits.ue()  # bit depths
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.u(1)
        bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    max_num_ref_frames = bits.ue()
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(), bits.ue()  # picture width and height
    frame_mbs_only = bool(bits.u(1))
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    if bits.u(1):  # frame_cropping_flag
        for _ in range(4):
            bits.ue()
    common = dict(profile_idc=profile_idc, level_idc=level_idc, pic_order_cnt_type=poc_type,
                  max_num_ref_frames=max_num_ref_frames, frame_mbs_only=frame_mbs_only)
    vui_at = bits.pos
    if not bits.u(1):  # vui_parameters_present_flag
        return SequenceParameters(**common, max_num_reorder_frames=None, vui_at=vui_at, restriction_at=None)
    at, reorder = _read_vui(bits)
    return SequenceParameters(**common, max_num_reorder_frames=reorder, vui_at=vui_at, restriction_at=at)


def _read_vui(bits: _Bits) -> tuple[int, int | None]:
    """(bit offset of bitstream_restriction_flag, max_num_reorder_frames or None)."""
    if bits.u(1):  # aspect_ratio_info_present_flag
        if bits.u(8) == 255:  # Extended_SAR
            bits.u(32)
    if bits.u(1):  # overscan_info_present_flag
        bits.u(1)
    if bits.u(1):  # video_signal_type_present_flag
        bits.u(4)
        if bits.u(1):  # colour_description_present_flag
            bits.u(24)
    if bits.u(1):  # chroma_loc_info_present_flag
        bits.ue(), bits.ue()
    if bits.u(1):  # timing_info_present_flag
        bits.u(32), bits.u(32), bits.u(1)
    hrd = False
    for _ in range(2):  # NAL, then VCL HRD parameters
        if bits.u(1):
            hrd = True
            _skip_hrd(bits)
    if hrd:
        bits.u(1)  # low_delay_hrd_flag
    bits.u(1)  # pic_struct_present_flag
    at = bits.pos
    if not bits.u(1):  # bitstream_restriction_flag
        return at, None
    bits.u(1)
    for _ in range(4):
        bits.ue()
    return at, bits.ue()


def _skip_hrd(bits: _Bits) -> None:
    count = bits.ue() + 1  # cpb_cnt_minus1
    bits.u(8)  # bit_rate_scale, cpb_size_scale
    for _ in range(count):
        bits.ue(), bits.ue(), bits.u(1)
    bits.u(20)  # four 5-bit lengths


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last + bits.se() + 256) % 256
        last = next_scale or last


def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def _unescape(nal: bytes) -> bytes:
    """The RBSP: every 0x03 after two zero bytes (an emulation prevention byte) taken out."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00") if b"\x00\x00\x03" in nal else nal


def _escape(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)
