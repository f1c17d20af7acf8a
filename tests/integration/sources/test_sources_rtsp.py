"""Live RTSP through the real worker against a real gst-rtsp-server (and against nothing at all)."""
from __future__ import annotations

import logging
import re
import socket
import threading
import time

import numpy as np
import pytest

from pipeline.config.models import StreamConfig
from pipeline.errors import SourceError
from pipeline.sources.decode import CpuDecoder
from pipeline.sources.demux import Demuxer
from pipeline.sources.worker import StreamWorker, WorkerState
from pipeline.types import frame_to_rgb
from tests.support.http_server import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.fault


def live_config(url: str, **overrides) -> StreamConfig:
    settings = dict(id="cam-1", url=url, decode="cpu", reconnect_min_s=0.2, reconnect_max_s=1.0,
                    open_timeout_s=3.0, read_timeout_s=3.0)
    return StreamConfig(**(settings | overrides))


def stop_promptly(worker: StreamWorker, within: float = 1.5) -> None:
    started = time.monotonic()
    worker.stop()
    assert worker.join(within), f"join did not return within {within} s in state {worker.state}"
    assert time.monotonic() - started < within


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_ingest_delivers_live_frames_over_each_transport(rtsp_server, sink, transport):
    worker = StreamWorker(live_config(rtsp_server.url, transport=transport), sink)
    worker.start()
    assert sink.wait_for(30, timeout=10), worker.stats()
    assert worker.state is WorkerState.RUNNING
    stop_promptly(worker)
    assert worker.state is WorkerState.STOPPED and sink.ended == ["cam-1"]
    frames = sink.frames
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert {(f.width, f.height, frame_to_rgb(f).shape) for f in frames} == {(848, 464, (464, 848, 3))}
    pts = [f.pts_ns for f in frames]
    assert all(type(p) is int for p in pts) and all(b > a for a, b in zip(pts, pts[1:]))
    assert np.median(np.diff(pts)) == pytest.approx(1e9 / 30, rel=0.01)  # the clip's 30 fps clock
    assert worker.stats()["first_frame_s"] < 2.0


def test_live_stream_reconnects_after_server_restart_and_seq_continues_in_a_new_epoch(rtsp_server, sink):
    worker = StreamWorker(live_config(rtsp_server.url), sink)
    worker.start()
    assert sink.wait_for(20, timeout=10)
    rtsp_server.kill()
    assert wait_until(lambda: worker.stats()["reconnects"] >= 1, timeout=10), worker.stats()
    before = len(sink.frames)
    rtsp_server.start()
    assert sink.wait_for(before + 20, timeout=20), worker.stats()
    assert worker.state is WorkerState.RUNNING
    stop_promptly(worker)
    seqs = [f.seq for f in sink.frames]
    assert seqs == list(range(len(seqs)))  # one sequence across the outage, no restart at 0
    pts = [f.pts_ns for f in sink.frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    pts_gap = pts[before] - pts[before - 1]
    wall_gap = sink.frames[before].wall_ns - sink.frames[before - 1].wall_ns
    assert 2e9 / 30 < pts_gap <= wall_gap  # the pts line carries the outage instead of restarting
    assert worker.stats()["reconnects"] >= 1
    places = [(f.epoch, f.index) for f in sink.frames]  # the restarted server plays its clip from the start
    assert places == [(0, i) for i in range(before)] + [(1, i) for i in range(len(places) - before)]


def test_a_stream_that_went_down_reports_no_decode_rate_until_frames_come_again(rtsp_server, sink):
    """Before, the API showed a camera reconnecting for minutes at the rate it had before it went down."""
    worker = StreamWorker(live_config(rtsp_server.url), sink)
    worker.start()
    assert sink.wait_for(40, timeout=10), worker.stats()
    assert worker.stats()["decode_fps"] > 0
    rtsp_server.kill()
    assert wait_until(lambda: worker.state is WorkerState.RECONNECTING, timeout=10), worker.stats()
    assert worker.stats()["decode_fps"] == 0
    before = len(sink.frames)
    rtsp_server.start()
    assert sink.wait_for(before + 20, timeout=20), worker.stats()
    assert worker.stats()["decode_fps"] > 0
    stop_promptly(worker)


def test_frames_resume_after_an_outage_of_refused_connections_with_the_default_schedule(rtsp_server, sink, caplog):
    defaults = StreamConfig(id="cam-1", url=rtsp_server.url)
    worker = StreamWorker(live_config(rtsp_server.url, reconnect_min_s=defaults.reconnect_min_s,
                                      reconnect_max_s=defaults.reconnect_max_s), sink)
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.worker"):
        worker.start()
        assert sink.wait_for(20, timeout=10), worker.stats()
        rtsp_server.kill()
        assert wait_until(lambda: worker.stats()["reconnects"] >= 5, timeout=30), worker.stats()
        before = len(sink.frames)
        rtsp_server.start()
        assert sink.wait_for(before + 20, timeout=20), worker.stats()
        stop_promptly(worker)
    delays = [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]
    assert len(delays) >= 5 and max(delays) <= defaults.reconnect_max_s  # refusals do not push the wait up
    assert [f.seq for f in sink.frames] == list(range(len(sink.frames)))


def test_dead_url_reconnects_with_delays_growing_to_the_cap_and_never_blocks_stop(sink, caplog):
    port = free_port()
    url = f"rtsp://admin:s3cret@127.0.0.1:{port}/live"
    worker = StreamWorker(live_config(url, reconnect_min_s=0.05, reconnect_max_s=0.4), sink)
    with caplog.at_level(logging.WARNING, logger="pipeline.sources.worker"):
        worker.start()
        assert wait_until(lambda: worker.stats()["reconnects"] >= 10, timeout=10), worker.stats()
        stop_promptly(worker, within=1.0)
    delays = [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]
    assert len(delays) >= 10
    assert delays[0] == pytest.approx(0.05, abs=0.05)
    assert all(d <= 0.4 + 0.05 for d in delays)  # printed with one decimal
    assert max(delays[4:]) > 0.1  # grew past the first delay
    error = worker.stats()["last_error"]
    assert "cam-1" in error and "rtsp://***@127.0.0.1" in error and "Connection refused" in error
    assert "s3cret" not in caplog.text and "s3cret" not in error and "admin" not in error
    assert worker.state is WorkerState.STOPPED and sink.frames == [] and sink.ended == ["cam-1"]


def test_stop_is_prompt_while_waiting_a_long_reconnect_delay(sink):
    worker = StreamWorker(live_config(f"rtsp://127.0.0.1:{free_port()}/x", reconnect_min_s=20, reconnect_max_s=60), sink)
    worker.start()
    assert wait_until(lambda: worker.state is WorkerState.RECONNECTING, timeout=5)
    stop_promptly(worker, within=1.0)
    assert worker.state is WorkerState.STOPPED


def test_a_server_that_accepts_but_never_answers_is_timed_out_and_retried(sink):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(3)], daemon=True).start()
    url = f"rtsp://127.0.0.1:{listener.getsockname()[1]}/hung"
    worker = StreamWorker(live_config(url, open_timeout_s=0.5, read_timeout_s=0.5, reconnect_min_s=0.1), sink)
    started = time.monotonic()
    worker.start()
    assert wait_until(lambda: worker.stats()["reconnects"] >= 1, timeout=5), worker.stats()
    assert time.monotonic() - started < 3.0
    stop_promptly(worker, within=2.0)
    listener.close()
    for conn, _ in accepted:
        conn.close()
    assert len(accepted) >= 1 and sink.frames == []


def test_an_rtsp_server_that_never_answers_the_open_is_reported_as_no_answer_not_as_invalid_data():
    """FFmpeg's RTSP demuxer reports its interrupted read of the answer as "Invalid data found when processing input"."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel accepts the connection; nothing ever answers
        url = f"rtsp://127.0.0.1:{listener.getsockname()[1]}/hung"
        demuxer = Demuxer(url, "stream 'cam-1'", open_timeout_s=0.5, read_timeout_s=0.5)
        with pytest.raises(SourceError, match=r"^stream 'cam-1': cannot open: no answer within 0.5 s$"):
            demuxer.open()


def test_a_hung_server_is_given_up_on_after_read_timeout_s_and_frames_resume_when_it_answers(rtsp_server, sink):
    worker = StreamWorker(live_config(rtsp_server.url, read_timeout_s=1.0, open_timeout_s=1.0), sink)
    worker.start()
    assert sink.wait_for(20, timeout=10), worker.stats()
    rtsp_server.freeze()  # the connection stays open; nothing more arrives
    try:
        assert wait_until(lambda: worker.stats()["reconnects"] >= 1, timeout=10), worker.stats()
        error = worker.stats()["last_error"]
        before = len(sink.frames)
    finally:
        rtsp_server.thaw()
    assert sink.wait_for(before + 20, timeout=20), worker.stats()
    stop_promptly(worker)
    assert "read failed: no frame for 1 s" in error, error
    assert [f.seq for f in sink.frames] == list(range(len(sink.frames)))


def test_a_decode_error_on_a_live_stream_reconnects_and_frames_flow_again(rtsp_server, sink, monkeypatch):
    calls = {"n": 0}
    original = CpuDecoder.decode

    def fail_once(self, packet):
        calls["n"] += 1
        if calls["n"] == 15:
            raise SourceError("stream 'cam-1': corrupt packet (injected)")
        return original(self, packet)

    monkeypatch.setattr(CpuDecoder, "decode", fail_once)
    worker = StreamWorker(live_config(rtsp_server.url), sink)
    worker.start()
    assert sink.wait_for(40, timeout=15), worker.stats()
    stop_promptly(worker)
    assert worker.stats()["reconnects"] == 1
    assert [f.seq for f in sink.frames] == list(range(len(sink.frames)))


def test_a_bug_in_the_live_decode_path_fails_the_stream_and_join_returns(rtsp_server, sink, monkeypatch):
    def crash(self, packet):
        raise ZeroDivisionError("injected bug")

    monkeypatch.setattr(CpuDecoder, "decode", crash)
    worker = StreamWorker(live_config(rtsp_server.url), sink)
    worker.start()
    assert worker.join(5)
    assert worker.state is WorkerState.FAILED and "injected bug" in worker.stats()["last_error"]
    assert sink.ended == ["cam-1"]


def test_a_cameras_sdp_parameter_sets_are_there_for_a_decoder_that_reads_them_only_in_band(rtsp_server, shared):
    # NVDEC learns the SPS and PPS only from the bitstream: a camera that sends them only in its SDP would give it
    # nothing to start from, so NvdecDecoder puts FFmpeg's copy of them before the first packet
    from pipeline.sources.nal import headers  # noqa: PLC0415
    from pipeline.sources.nvdec import out_of_band_parameter_sets  # noqa: PLC0415

    demuxer = Demuxer(rtsp_server.url, "cam")
    stream = demuxer.open()
    try:
        first = bytes(next(iter(demuxer.for_decoder(next(demuxer.packets()), annexb=True))))
    finally:
        demuxer.close()
    sets = out_of_band_parameter_sets(stream)
    assert headers(sets, "h264").sps == headers(first, "h264").sps is not None
    assert b"\x00\x00\x01\x68" in sets or b"\x00\x00\x00\x01\x68" in sets  # the PPS too
    file = Demuxer(str(shared("media/car-detection.mp4")), "file")
    try:
        assert out_of_band_parameter_sets(file.open()) == b""  # an MP4's are put in-band by the Annex-B filter
    finally:
        file.close()
