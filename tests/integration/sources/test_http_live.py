"""HTTP cameras (HLS, MJPEG, MPEG-TS) through the whole pipeline, against a local camera server that sends a
PyAV-made clip at its own pace: frames flow, outages and hangs are reconnected, the other streams go on."""
from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
import pytest

from pipeline.config.models import StreamConfig
from pipeline.sources.demux import is_hls
from pipeline.sources.worker import StreamWorker, WorkerState
from tests.support.collecting_sink import CollectingSink
from tests.support.http_camera import HttpCamera, make_media
from tests.support.waiting import wait_until

pytestmark = pytest.mark.fault

PATHS = {"hls": "live.m3u8", "mjpeg": "video.mjpg", "mpegts": "stream.ts"}


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("http-camera"))


@pytest.fixture
def cameras(media):
    started = []

    def start(**options) -> HttpCamera:
        started.append(HttpCamera(media, **options).start())
        return started[-1]

    yield start
    for camera in started:
        camera.stop()





def increasing(values: list[int]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("kind", PATHS)
def test_an_http_camera_feeds_the_pipeline_live(kind, cameras, pipelines):
    camera = cameras()
    # a read timeout shorter than an HLS segment: the wait for the next segment is not a silent camera
    run = pipelines([{"id": "cam", "url": camera.url(PATHS[kind]), "read_timeout_s": 0.5}])
    assert run.runner.plan.stream("cam").live  # http(s) is a camera unless the stream says live: false
    assert run.wait_frames("cam", 40), run.stats("cam")
    snap = run.stop()
    seqs, pts = run.sink.seqs["cam"], run.sink.pts["cam"]
    assert seqs[0] == 0 and increasing(seqs) and increasing(pts) and all(type(p) is int for p in pts)
    assert snap.streams["cam"]["reconnects"] == 0 and snap.streams["cam"]["state"] == "stopped"


@pytest.mark.parametrize("kind", PATHS)
def test_a_camera_that_drops_off_reconnects_and_the_other_streams_go_on(kind, cameras, pipelines, caplog):
    flaky, steady = cameras(credentials=("viewer", "s3cret")), cameras()
    run = pipelines([{"id": "flaky", "url": flaky.url(PATHS[kind])}, {"id": "steady", "url": steady.url("video.mjpg")}])
    with caplog.at_level(logging.INFO, logger="pipeline.sources"):
        assert run.wait_frames("flaky", 20) and run.wait_frames("steady", 20), run.runner.snapshot().streams
        flaky.stop()  # connections cut mid-stream, then the port refuses
        assert wait_until(lambda: run.stats("flaky")["reconnects"] >= 1, timeout=10), run.stats("flaky")
        before, steady_before = run.count("flaky"), run.count("steady")
        flaky.start()
        assert run.wait_frames("flaky", before + 20), run.stats("flaky")
        assert run.wait_frames("steady", steady_before + 20), run.stats("steady")
        snap = run.stop()
    seqs, pts = run.sink.seqs["flaky"], run.sink.pts["flaky"]
    assert seqs[0] == 0 and increasing(seqs) and increasing(pts)  # one line across the outage, no restart at 0
    assert snap.streams["steady"]["reconnects"] == 0 and increasing(run.sink.pts["steady"])
    assert run.sink.seqs["steady"] == list(range(len(run.sink.seqs["steady"])))
    assert "flaky" in snap.streams["flaky"]["last_error"] and "***@127.0.0.1" in snap.streams["flaky"]["last_error"]
    assert "s3cret" not in caplog.text + snap.streams["flaky"]["last_error"] and "viewer" not in caplog.text


@pytest.mark.parametrize("kind", PATHS)
def test_a_hung_camera_is_timed_out_and_reconnected(kind, cameras, pipelines):
    camera = cameras()
    run = pipelines([{"id": "cam", "url": camera.url(PATHS[kind]), "read_timeout_s": 0.5}])
    assert run.wait_frames("cam", 20), run.stats("cam")
    camera.freeze()  # connections stay open; nothing is sent, the playlist stops growing
    assert wait_until(lambda: run.stats("cam")["reconnects"] >= 1, timeout=10), run.stats("cam")
    error = run.stats("cam")["last_error"]
    camera.thaw()
    assert run.wait_frames("cam", run.count("cam") + 20), run.stats("cam")
    run.stop()
    # HLS waits a segment between reads, so a stalled playlist ends the pass; the others time out after
    # read_timeout_s with no frame (a read that gets nothing, or the last bytes and then nothing)
    if kind == "hls":
        assert "stream ended" in error, error
    else:
        assert "nothing received for 0.5 s" in error or "no frame for 0.5 s" in error, error
    assert increasing(run.sink.seqs["cam"]) and increasing(run.sink.pts["cam"])


def test_an_hls_playlist_that_stops_growing_is_not_detected_again_at_each_reconnect(cameras, pipelines):
    """A hung encoder behind a web server that still answers: FFmpeg reopens the frozen playlist three segments
    before its end at each reconnect, and those seconds came through again as new frames (counts, alerts)."""
    camera = cameras()
    run = pipelines([{"id": "cam", "url": camera.url("live.m3u8"), "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}])
    assert run.wait_frames("cam", 20), run.stats("cam")
    camera.freeze()
    assert wait_until(lambda: run.stats("cam")["reconnects"] >= 2, timeout=30), run.stats("cam")
    frames = run.count("cam")  # the segments listed before the freeze have been read: nothing after is news
    assert wait_until(lambda: run.stats("cam")["reconnects"] >= 3, timeout=30), run.stats("cam")
    stats = run.stats("cam")
    assert run.count("cam") == frames and stats["replayed"] > 0 and stats["state"] != "running", stats
    camera.thaw()
    assert run.wait_frames("cam", frames + 20), run.stats("cam")  # new segments come through
    run.stop()
    assert increasing(run.sink.seqs["cam"]) and increasing(run.sink.pts["cam"])


def test_a_looped_hls_recording_is_read_again_in_full_at_every_loop(tmp_path):
    """Only a live playlist re-read at a reconnect repeats frames already delivered; a recording that loops is
    meant to play again."""
    with av.open(str(tmp_path / "vod.m3u8"), "w", format="hls", options={"hls_playlist_type": "vod"}) as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in [*range(25), None]:
            picture = None if i is None else av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), "rgb24")
            for packet in stream.encode(picture):
                out.mux(packet)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = CollectingSink()
    url = f"http://127.0.0.1:{server.server_address[1]}/vod.m3u8"
    worker = StreamWorker(StreamConfig(id="vod", url=url, live=False, loop=True), sink, decoder="cpu")
    worker.start()
    try:
        assert wait_until(lambda: len(sink.frames) >= 75, timeout=30), worker.stats()
        stats = worker.stats()
        assert stats["replayed"] == 0 and stats["loops"] >= 2, stats
    finally:
        worker.stop()
        worker.join(10)
        server.shutdown()


def test_an_http_file_marked_live_false_is_read_once_to_its_end(cameras, pipelines, media):
    camera = cameras()
    run = pipelines([{"id": "clip", "url": camera.url("clip.ts"), "live": False}])
    assert not run.runner.plan.stream("clip").live
    run.thread.join(30)  # a run whose streams are all files ends with them
    assert not run.thread.is_alive()
    frames = len(media.segments) * media.fps
    assert run.snap.streams["clip"]["state"] == "finished" and run.snap.streams["clip"]["reconnects"] == 0
    assert run.sink.seqs["clip"] == list(range(frames))  # a file loses nothing
    assert increasing(run.sink.pts["clip"])


def test_a_url_whose_scheme_is_in_capitals_is_read_like_a_lower_case_one(cameras, media):
    """The config takes `HTTP://` (schemes are case-insensitive); FFmpeg's protocols are lower case."""
    camera = cameras(credentials=("viewer", "s3cret"))
    url = camera.url("clip.ts").replace("http://", "HTTP://", 1)
    sink = CollectingSink()
    worker = StreamWorker(StreamConfig(id="clip", url=url, live=False), sink, decoder="cpu")
    worker.start()
    assert worker.join(30), worker.stats()
    assert worker.state is WorkerState.FINISHED, worker.stats()["last_error"]
    assert len(sink.frames) == len(media.segments) * media.fps
    assert is_hls(url.replace("clip.ts", "live.m3u8"))  # a live playlist's segment waits are no stall


def test_an_https_camera_with_a_self_signed_certificate_is_read(cameras, pipelines, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make the test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=30)
    camera = cameras(tls=(cert, key))
    run = pipelines([{"id": "tls", "url": camera.url("live.m3u8")}])
    assert camera.url("live.m3u8").startswith("https://")
    assert run.wait_frames("tls", 20), run.stats("tls")
    run.stop()
    assert increasing(run.sink.seqs["tls"]) and increasing(run.sink.pts["tls"])
