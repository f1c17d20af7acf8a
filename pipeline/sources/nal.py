"""The headers of an Annex-B access unit (H.264 or HEVC): what NVDEC's callers must know before they decode it.

NVDEC learns a stream's parameter sets only from the bitstream, and a decoder created afresh can start only at an IDR
picture with them in front, so the decoder reads, per packet, its sequence parameter set (a new one restarts the
decoder), its parameter sets (`ParameterSets` keeps them for a fresh decoder's first packet that comes without them)
and whether it is an IDR.
"""
from __future__ import annotations

from dataclasses import dataclass

SCAN_BYTES = 4096
"""How far into a packet to look first: the parameter sets precede the first slice, mostly after at most an access
unit delimiter and a few SEI messages; a packet whose first slice lies further is read whole."""

_START = b"\x00\x00\x00\x01"


@dataclass(frozen=True)
class Headers:
    """An access unit's headers, up to its first slice."""

    sps: bytes | None = None
    """The first sequence parameter set NAL unit (H.264 type 7, HEVC type 33), without its start code."""
    parameter_sets: tuple[bytes, ...] = ()
    """Its parameter set NAL units (H.264 SPS and PPS; HEVC VPS, SPS and PPS), each after a 4-byte start code."""
    idr: bool = False
    """The first slice is an IDR picture's (H.264 type 5, HEVC types 19 and 20): a fresh decoder can start there."""


def headers(data: bytes | memoryview, codec: str) -> Headers:
    """The headers of the Annex-B access unit `data`, up to its first slice; empty for another codec."""
    if codec not in ("h264", "hevc"):
        return Headers()
    head, complete = _scan(bytes(data[:SCAN_BYTES]), codec)
    if not complete and len(data) > SCAN_BYTES:  # large SEI first: a cut-off unit must not pass for a whole one
        head, _ = _scan(bytes(data), codec)
    return head


def _scan(data: bytes, codec: str) -> tuple[Headers, bool]:
    """The headers found in `data`, and whether its first slice was reached (everything before it read whole)."""
    sps, sets = None, []
    pos = 0
    while (start := data.find(b"\x00\x00\x01", pos)) >= 0 and start + 3 < len(data):
        header = start + 3
        kind = _kind(data[header], codec)
        if codec == "h264":
            is_sps, is_set, is_slice, idr = kind == 7, kind in (7, 8), 1 <= kind <= 5, kind == 5
        else:
            is_sps, is_set, is_slice, idr = kind == 33, kind in (32, 33, 34), kind < 32, kind in (19, 20)
        if is_slice:
            return Headers(sps, tuple(sets), idr), True
        end = data.find(b"\x00\x00\x01", header)
        unit = data[header : end if end >= 0 else len(data)].rstrip(b"\x00")  # a 4-byte start code's zero
        if is_sps and sps is None:
            sps = unit
        if is_set:
            sets.append(_START + unit)
        pos = header
    return Headers(sps, tuple(sets)), False


class ParameterSets:
    """A stream's latest parameter sets, one of each kind, as it sent them (or its SDP, `out_of_band`): what a fresh
    decoder needs before its first packet when that packet has none (a camera that sends them only in its SDP, or
    only now and then)."""

    def __init__(self, codec: str, out_of_band: bytes = b""):
        self._codec = codec
        self._latest: dict[int, bytes] = {}
        self.note(headers(out_of_band, codec))

    def note(self, head: Headers) -> None:
        """Keep the parameter sets a packet carries (a PPS alone replaces only the PPS)."""
        for unit in head.parameter_sets:
            self._latest[_kind(unit[len(_START)], self._codec)] = unit

    def before(self, data: bytes | memoryview) -> bytes | memoryview:
        """`data`, an access unit, with the parameter sets in front when it has no SPS of its own."""
        if not self._latest or headers(data, self._codec).sps is not None:
            return data
        return b"".join(self._latest[kind] for kind in sorted(self._latest)) + bytes(data)


def _kind(header: int, codec: str) -> int:
    """A NAL unit's type from its first header byte."""
    return header & 0x1F if codec == "h264" else (header >> 1) & 0x3F
