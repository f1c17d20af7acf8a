"""NVDEC decoding through PyNvVideoCodec: PyAV packets in, device NV12 frames (CuPy) out.

PyAV keeps the containers and the network (files, RTSP, timeouts); its packets, converted to
Annex-B for MP4/MKV by the demuxer, go to one hardware decoder per stream with its own CUDA stream.

Frame ownership: PyNvVideoCodec's output surfaces belong to the decoder and are reused by later
`Decode` calls, so every decoded picture is copied (device to device, on the stream's CUDA stream)
into an array the frame owns, and the stream is synchronised before the frames are handed on: a
frame is complete when a consumer sees it. The copy
costs ~3 MB of device bandwidth per 1080p frame, about 0.3% of an H100's per second at 3,700 fps.
A frame's memory goes back to CuPy's pool when its last reference drops; consumers on other streams
must have synchronised with their own work on it by then (the detector does, before it returns).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from pipeline.errors import CorruptPacket, SourceError
from pipeline.sources.h264 import progressive
from pipeline.sources.nal import ParameterSets, headers
from pipeline.sources.reorder import REORDER_SPAN, TRIAL_PACKETS, ReorderWatch
from pipeline.sources.reader import DecodedFrame
from pipeline.types import PTS_UNKNOWN, pts_to_ns

log = logging.getLogger(__name__)

CODECS = {"h264": "H264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "mpeg2video": "MPEG2", "mpeg4": "MPEG4"}
"""PyAV codec name -> PyNvVideoCodec `cudaVideoCodec` member (what NVDEC can decode)."""


def out_of_band_parameter_sets(stream: Any) -> bytes:
    """The parameter sets an H.264/HEVC stream keeps outside its packets in Annex-B form (a camera's SDP
    `sprop-parameter-sets`, which FFmpeg puts in the extradata), or b"". NVDEC learns them only from the
    bitstream, so they go before a first packet without them. (MP4's avcC/hvcC extradata is put in-band by
    the demuxer's Annex-B filter.)"""
    data = bytes(stream.codec_context.extradata or b"")
    return data if stream.codec_context.name in ("h264", "hevc") and data.startswith((b"\0\0\1", b"\0\0\0\1")) else b""


class NvdecDecoder:
    """Decodes one PyAV video stream with NVDEC into `(H*3/2, W) uint8` NV12 CuPy arrays.

    stream: the PyAV video stream (codec, time base); label: names the stream in errors.
    device: CUDA device index. A mid-stream resolution change is followed (each frame has its own
    size; a new sequence parameter set restarts the decoder). A packet NVDEC refuses raises
    `CorruptPacket` (skipped and counted, as on the CPU; NVDEC does not flag concealed frames, so
    `damaged` stays False); a decoder NVDEC cannot create for the stream (its size, profile or chroma format)
    and other errors raise SourceError naming the stream and stay with it.
    allocate: `(rows, width) -> CuPy uint8 array or None`, where pictures go (a decode process gives
    memory it shares with the main process); None, or a None from it, allocates from CuPy's pool.
    low_latency: for a camera (and a paced file, which stands in for one), a picture of a stream without B-frames
    leaves the decoder with its own packet, where the default mode holds it for two more (67 ms at 30 fps), or
    for a whole decoded picture buffer (4 to 6 pictures) when an H.264 stream does not say that it never
    reorders: NVDEC's low-latency display mode, each packet marked as a whole picture, and such an SPS declared
    free of reordering (`pipeline/sources/h264.py`) until the packets' timestamps (`reorder.py`) show that it does
    reorder. Same frames, timestamps and display order, and the same throughput (NVIDIA H100, 1080p30: 588
    frames/s in one thread either way; 150 cameras on one GPU held with equal latency in both).
    """

    wants_annexb = True
    reusable = True
    """After `flush()` the decoder takes the next pass of a looped file (`DecoderShelf`)."""

    def __init__(self, stream: Any, label: str, device: int = 0, allocate: Callable[[int, int], Any] | None = None,
                 low_latency: bool = False):
        import cupy  # noqa: PLC0415 - GPU stack
        import PyNvVideoCodec as nvc  # noqa: PLC0415 - GPU stack

        self._label = label
        self._allocate = allocate
        self._time_base = stream.time_base
        codec_name = stream.codec_context.name
        if codec_name not in CODECS:
            raise SourceError(f"{label}: NVDEC cannot decode codec '{codec_name}'; set decode: cpu for this stream")
        self._device = cupy.cuda.Device(device)
        self._nvc = nvc
        self._codec = codec_name
        self._low_latency = low_latency
        self._order = ReorderWatch(label, low_latency and codec_name == "h264" and not stream.codec_context.has_b_frames)
        self._floor: tuple[int, int] | None = None  # after decoding again: (pts ns, pictures left) not to hand on
        self._whole = False  # each packet is marked as a whole picture
        self._parameter_sets = ParameterSets(codec_name, out_of_band_parameter_sets(stream))
        with self._device:
            self.cuda_stream = cupy.cuda.Stream(non_blocking=True)
        self._decoder = self._create()
        self.frames_decoded = 0
        self._discard: set[int] = set()
        self._sps: bytes | None = None

    def _create(self) -> Any:
        import cupy  # noqa: PLC0415 - GPU stack

        nvc = self._nvc
        latency = nvc.DisplayDecodeLatencyType.LOW if self._low_latency else nvc.DisplayDecodeLatencyType.NATIVE
        self._fresh = True  # the decoder has had no packet yet: the parameter sets go in front of its first
        with self._device:
            try:
                return nvc.CreateDecoder(
                    gpuid=self._device.id, codec=getattr(nvc.cudaVideoCodec, CODECS[self._codec]),
                    cudacontext=cupy.cuda.driver.ctxGetCurrent(), cudastream=self.cuda_stream.ptr, usedevicememory=True,
                    latency=latency,
                )  # fmt: skip
            except (RuntimeError, ValueError, _nvc_error(nvc)) as exc:
                raise SourceError(f"{self._label}: cannot create an NVDEC decoder for {self._codec}: {exc}") from exc

    def decode(self, packet: Any) -> list[DecodedFrame]:
        """The frames `packet` (an Annex-B av.Packet) completed, in display order, each with its own copy.

        A new sequence parameter set (a resolution change, say) drains this decoder and starts a fresh
        one: PyNvVideoCodec does not reconfigure itself, it keeps the old surface size.
        """
        data = memoryview(packet)
        if len(data) == 0:
            return []
        pts = None if packet.pts is None else int(packet.pts)
        time_base = packet.time_base or self._time_base
        drained = []
        if self._fresh:  # before the reorder watch reads it: it may declare the SPS put in front
            data = memoryview(self._parameter_sets.before(data))
        head = headers(data, self._codec)
        self._parameter_sets.note(head)
        sps = head.sps
        if sps is not None and sps != self._sps:
            if self._sps is not None:
                log.info("%s: new sequence parameters mid-stream; restarting the NVDEC decoder", self._label)
                drained = self.flush()
                self.close()
                self._decoder = self._create()
            self._sps = sps
            # a packet is a whole picture for HEVC (a field is a picture) and progressive H.264
            self._whole = self._low_latency and (self._codec == "hevc" or progressive(sps))
        plan = self._order.read(data, head, pts, time_base, packet.is_discard)
        if plan.restart:
            drained += self._drain() if plan.restart == "drain" else []
            self.close()
            self._decoder = self._create()
            self._floor = None if plan.floor_ns is None else (plan.floor_ns, TRIAL_PACKETS + REORDER_SPAN)
        frames = drained
        for unit, at, discard in plan.feed:
            if self._fresh:  # restarted at an IDR picture, which may come without them
                unit, self._fresh = self._parameter_sets.before(unit), False
            try:
                frames += self._feed(memoryview(unit), at, discard, time_base)
            except CorruptPacket as exc:
                if len(plan.feed) == 1 and not frames:
                    raise
                log.warning("%s", exc)  # the pictures before it are kept (copied already)
        if frames:
            self._order.shown(frames[-1].pts_ns)
        return frames

    def _feed(self, data: memoryview, pts: int | None, discard: bool, time_base) -> list[DecodedFrame]:
        pd = self._nvc.PacketData()
        holder = _HostBytes(data)
        pd.bsl_data = holder.ptr
        pd.bsl = len(data)
        if self._whole:
            pd.decode_flag = self._nvc.VideoPacketFlag.ENDOFPICTURE  # hand the picture on without the next packet
        if pts is not None:
            pd.pts = pts
            if discard:
                # MP4 edit lists mark pre-roll packets "discard": decoded for reference, never shown
                # (FFmpeg's CPU decoder drops them too, so both back-ends yield the same frames).
                self._discard.add(pts)
        return self._run(pd, pts is not None, time_base)

    def flush(self) -> list[DecodedFrame]:
        """The frames NVDEC still holds at the end of the stream (an empty packet drains it)."""
        frames = self._drain()
        self._order.end()
        self._floor = None
        return frames

    def _drain(self) -> list[DecodedFrame]:
        pd = self._nvc.PacketData()
        pd.bsl = 0
        return self._run(pd, True, self._time_base)

    def _run(self, pd, has_pts: bool, time_base) -> list[DecodedFrame]:
        with self._device:
            try:
                surfaces = self._decoder.Decode(pd)
            except (RuntimeError, ValueError, _nvc_error(self._nvc)) as exc:
                reason = " ".join(str(exc).split())
                if "cuvidCreateDecoder" in reason:  # the stream itself (size, profile, chroma) is beyond NVDEC
                    raise SourceError(f"{self._label}: NVDEC cannot decode this stream ({reason}); set decode: cpu "
                                      "for it") from exc
                raise CorruptPacket(f"{self._label}: NVDEC failed to decode a packet ({reason}); set decode: cpu "
                                    "for this stream if it keeps failing") from exc
            shown = [s for s in surfaces if not (has_pts and self._discarded(int(s.getPTS())))]
            if self._floor is not None and has_pts:  # before the copy: a picture not handed on takes no memory
                shown = [s for s in shown if not self._below_floor(pts_to_ns(int(s.getPTS()), time_base))]
            frames = [self._own(s, has_pts, time_base) for s in shown]
            # The next Decode may reuse these surfaces, and PyNvVideoCodec's own copies into them are
            # not ordered with this stream, so the frame copies must have finished before it runs.
            self.cuda_stream.synchronize()
            return frames

    def _below_floor(self, pts_ns: int) -> bool:
        """Whether a picture decoded again is one handed on already, or belongs before it; the first above the
        floor (or the last the floor may drop) ends it."""
        if self._floor is None:
            return False
        floor, left = self._floor
        if pts_ns > floor or left <= 0:
            self._floor = None
            return False
        self._floor = (floor, left - 1)
        return True

    def _discarded(self, pts: int) -> bool:
        if pts in self._discard:
            self._discard.discard(pts)
            return True
        return False

    def _own(self, surface: Any, has_pts: bool, time_base) -> DecodedFrame:
        """Copy one decoder surface into a frame-owned (H*3/2, W) array on this stream."""
        import cupy  # noqa: PLC0415 - GPU stack

        with self.cuda_stream:
            view = cupy.from_dlpack(surface)
            if view.ndim == 3:  # some builds expose (H*3/2, W, 1)
                view = view[..., 0]
            rows, width = view.shape
            image = self._allocate(rows, width) if self._allocate is not None else None
            if image is None:
                image = cupy.empty((rows, width), cupy.uint8)
        # one runtime call (an elementwise copy kernel costs the decode thread far more interpreter time)
        runtime = cupy.cuda.runtime
        runtime.memcpy2DAsync(image.data.ptr, width, view.data.ptr, view.strides[0], width, rows,
                              runtime.memcpyDeviceToDevice, self.cuda_stream.ptr)
        height = rows * 2 // 3
        self.frames_decoded += 1
        pts = pts_to_ns(int(surface.getPTS()), time_base) if has_pts else PTS_UNKNOWN
        return DecodedFrame(image=image, pts_ns=pts, width=int(width), height=int(height), pixel_format="nv12")

    def close(self) -> None:
        """Let in-flight copies finish and release the hardware decoder."""
        decoder, self._decoder = getattr(self, "_decoder", None), None
        if decoder is not None:
            self.cuda_stream.synchronize()
            del decoder


def _nvc_error(nvc) -> type[BaseException]:
    """PyNvVideoCodec's own exception type (not a RuntimeError subclass), or RuntimeError."""
    return getattr(nvc, "PyNvVCException", RuntimeError)


class _HostBytes:
    """Keeps a packet's bytes alive and exposes their host address for PacketData.bsl_data."""

    def __init__(self, data: memoryview):
        import numpy as np  # noqa: PLC0415

        self.array = np.frombuffer(data, np.uint8)
        self.ptr = int(self.array.ctypes.data)
