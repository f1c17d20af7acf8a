"""One event clip: the packets it takes, and the MP4 they are remuxed into (`pipeline.sources.packets` cuts them)."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

ClipDone = Callable[[Path, str | None], None]
"""`on_done(path, error)`: error is None when the clip was written, else what went wrong."""


@dataclass(slots=True)
class Packet:
    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    time_base: Fraction
    key: bool
    t_ns: int  # decode-order time (dts, else pts) in ns: rises packet by packet
    pts_ns: int  # display time (pts, else dts) in ns


@dataclass(slots=True)
class Clip:
    path: Path
    template: Any  # av stream owned by the stream's template container
    end_ns: int
    packets: list[Packet] = field(default_factory=list)
    shown_ns: int = -(2**63)  # latest display time among `packets`
    on_done: ClipDone | None = None

    def take(self, packet: Packet) -> bool:
        """Add the next packet (decode order); False when the clip is complete without it.

        The clip ends before the first packet that opens a new display run (its pts is later than
        every pts so far) once the run so far reaches `end_ns`: cutting there leaves no frame
        missing and none that refers to a dropped frame, even with B-frames.
        """
        if packet.pts_ns > self.shown_ns and self.shown_ns >= self.end_ns:
            return False
        self.packets.append(packet)
        self.shown_ns = max(self.shown_ns, packet.pts_ns)
        return True


def remux_clip(path: Path, template: Any, packets: Sequence[Packet]) -> None:
    """Write packets (decode order, starting at a keyframe) to an MP4 without re-encoding; the
    clip's timestamps start at 0. Written to `<path>.part` first, then renamed (removed if writing fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    base = min(p.dts if p.dts is not None else p.pts for p in packets)
    try:
        with av.open(str(partial), "w", format="mp4") as out:
            stream = out.add_stream_from_template(template)
            for p in packets:
                packet = av.Packet(p.data)
                packet.stream = stream
                packet.time_base = p.time_base
                packet.pts = None if p.pts is None else p.pts - base
                packet.dts = None if p.dts is None else p.dts - base
                packet.duration = p.duration
                packet.is_keyframe = p.key
                out.mux(packet)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)  # a full disk keeps no half clip
        raise
