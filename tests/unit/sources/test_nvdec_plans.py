"""`NvdecDecoder` following the reorder watch's plans, on the CPU: a stand-in for PyNvVideoCodec (and CuPy) that
holds pictures back as NVDEC's parser does, by what the SPS it was given states, and hands them on in timestamp
order. It checks the decoder's side of the plans (which SPS reaches which decoder, restarts, the floor after decoding
again, parameter sets put in front), not NVDEC itself: `tests/gpu/test_gpu_nvdec.py` runs the same cases on a GPU."""
from __future__ import annotations

import ctypes
import sys
from types import SimpleNamespace

import av
import pytest

from pipeline.sources.demux import Demuxer
from pipeline.sources.h264 import parse
from pipeline.types import pts_to_ns
from tests.conftest import shared_file


class _Decoder:
    """One hardware decoder: pictures wait until more than the SPS's stated reordering (a whole buffer of 6 when it
    states none; none for order count type 2) are held; slices before an SPS, or before an IDR picture, are not
    decoded."""

    def __init__(self, log: list):
        self.log, self.hold, self.started, self.held = log, None, False, []
        log.append("create")

    def Decode(self, pd):  # noqa: N802 - PyNvVideoCodec's name
        if pd.bsl == 0:
            out, self.held = sorted(self.held), []
            return [SimpleNamespace(getPTS=lambda p=p: p) for p in out]
        data, out = ctypes.string_at(pd.bsl_data, pd.bsl), []
        for unit in data.split(b"\x00\x00\x01")[1:]:
            kind = unit[0] & 0x1F
            if kind == 7:
                sps = parse(unit.rstrip(b"\x00"))
                self.hold = 0 if sps.pic_order_cnt_type == 2 else 6 if sps.max_num_reorder_frames is None \
                    else sps.max_num_reorder_frames
                self.log.append(("sps", self.hold))
            elif kind in (1, 5):
                if self.hold is None or (kind == 1 and not self.started):
                    self.log.append("skipped")
                    break
                self.started = True
                self.held.append(pd.pts)
                while len(self.held) > self.hold:
                    out.append(self.held.pop(self.held.index(min(self.held))))
                break
        return [SimpleNamespace(getPTS=lambda p=p: p) for p in out]


@pytest.fixture
def nvdec(monkeypatch):
    """NvdecDecoder's class, on the stand-ins; `.log` records each decoder made and each SPS it was given."""
    log: list = []
    array = SimpleNamespace(ndim=2, shape=(648, 768), strides=(768, 1), data=SimpleNamespace(ptr=0))
    scoped = type("Scoped", (), {"__enter__": lambda s: s, "__exit__": lambda s, *a: False})
    device = type("Device", (scoped,), {"__init__": lambda s, i=0: setattr(s, "id", i)})
    stream = type("Stream", (scoped,), {"ptr": 0, "__init__": lambda s, non_blocking=False: None,
                                        "synchronize": lambda s: None})
    monkeypatch.setitem(sys.modules, "cupy", SimpleNamespace(
        uint8="uint8", from_dlpack=lambda surface: array, empty=lambda shape, dtype: array,
        cuda=SimpleNamespace(Device=device, Stream=stream, driver=SimpleNamespace(ctxGetCurrent=lambda: 0),
                             runtime=SimpleNamespace(memcpy2DAsync=lambda *a: None, memcpyDeviceToDevice=3))))
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", SimpleNamespace(
        DisplayDecodeLatencyType=SimpleNamespace(LOW="low", NATIVE="native"), cudaVideoCodec=SimpleNamespace(H264=4),
        VideoPacketFlag=SimpleNamespace(ENDOFPICTURE=1), PacketData=lambda: SimpleNamespace(bsl=0, pts=0),
        CreateDecoder=lambda **kw: _Decoder(log)))
    from pipeline.sources.nvdec import NvdecDecoder  # noqa: PLC0415

    return SimpleNamespace(Decoder=NvdecDecoder, log=log)


def _units(clip: str):
    """(the stream as NvdecDecoder reads it, [(Annex-B unit, pts, time base), ...])."""
    demuxer = Demuxer(str(shared_file(clip)), clip)
    stream = demuxer.open()
    codec = stream.codec_context
    info = SimpleNamespace(time_base=stream.time_base, codec_context=SimpleNamespace(
        name=codec.name, has_b_frames=codec.has_b_frames, extradata=codec.extradata))
    units = [(bytes(p), p.pts, p.time_base) for d in demuxer.packets() for p in demuxer.for_decoder(d, annexb=True)
             if p.size]
    demuxer.close()
    return info, units


def _camera(stream, extradata=None):
    """The stream as a camera's decoder sees it: its container announces no B-frames."""
    codec = SimpleNamespace(name="h264", has_b_frames=False,
                            extradata=stream.codec_context.extradata if extradata is None else extradata)
    return SimpleNamespace(time_base=stream.time_base, codec_context=codec)


def _play(decoder, units, stamps=None):
    """Feed every unit (with `stamps[i]`'s timestamp if given); returns (pts shown in order, packets each was held)."""
    stamps = stamps or [pts for _, pts, _ in units]
    index_of = {pts_to_ns(pts, tb): i for i, (pts, (_, _, tb)) in enumerate(zip(stamps, units))}
    shown, held = [], []
    for index, ((data, _, time_base), pts) in enumerate(zip(units, stamps)):
        packet = av.Packet(data)
        packet.pts, packet.time_base = pts, time_base
        for frame in decoder.decode(packet):
            shown.append(frame.pts_ns)
            held.append(index - index_of[frame.pts_ns])
    shown += [frame.pts_ns for frame in decoder.flush()]
    return shown, held


def test_a_camera_decoder_gets_the_declared_sps_and_holds_no_picture(nvdec):
    stream, units = _units("media/car-detection.mp4")
    shown, held = _play(nvdec.Decoder(_camera(stream), "cam", low_latency=True), units)
    assert max(held) == 0 and len(shown) == len(units) == len(set(shown))
    assert nvdec.log[:2] == ["create", ("sps", 0)] and nvdec.log.count("create") == 1
    file, held = _play(nvdec.Decoder(stream, "file"), units)
    assert file == shown and max(held) == 6  # a file's decoder gets the stream as it is


def test_b_frames_the_container_hides_are_decoded_again_in_order_with_none_repeated(nvdec):
    stream, units = _units("media/dog-848x464.mp4")
    shown, _ = _play(nvdec.Decoder(_camera(stream), "cam", low_latency=True), units)
    everything, _ = _play(nvdec.Decoder(stream, "file"), units)
    assert shown == sorted(set(shown)) and set(shown) <= set(everything) and len(everything) - len(shown) <= 2
    assert nvdec.log.count("create") == 3  # the camera's, its fresh one from the SPS, the file's


def test_a_clock_leap_back_in_the_trial_loses_no_picture(nvdec):
    stream, units = _units("media/car-detection.mp4")
    leap = int(10 / stream.time_base)  # 10 s back at the tenth packet
    stamps = [pts if i < 10 else pts - leap for i, (_, pts, _) in enumerate(units[:60])]
    shown, _ = _play(nvdec.Decoder(_camera(stream), "cam", low_latency=True), units[:60], stamps)
    assert len(shown) == 60 and nvdec.log.count("create") == 1


def test_an_sdp_only_camera_that_starts_reordering_gets_a_fresh_decoder_at_the_next_idr_with_its_parameter_sets(nvdec):
    stream, units = _units("media/car-detection.mp4")
    first = units[0][0]
    sets = first[: first.index(b"\x00\x00\x01\x65")]  # SPS and PPS, before the IDR slice
    stripped = [(data.replace(sets, b""), pts, tb) for data, pts, tb in units[:120]]
    pts = [p for _, p, _ in units[:120]]
    stamps = pts[:40] + [pts[k + (1 if (k - 40) % 2 == 0 else -1)] for k in range(40, 120)]  # then P B P B ...
    shown, _ = _play(nvdec.Decoder(_camera(stream, extradata=sets), "cam", low_latency=True), stripped, stamps)
    assert len(shown) == len(set(shown)) == 120 and "skipped" not in nvdec.log
    assert nvdec.log == ["create", ("sps", 0), "create", ("sps", 6)]  # the fresh decoder at packet 60, its own SPS
