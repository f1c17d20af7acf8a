"""Cameras that answer and refuse: wrong or missing credentials (401) and a path the server does not have
(404), over RTSP (gst-rtsp-server with basic auth) and HTTP. The stream reports it is reconnecting with a
last_error naming the stream, the cause and the fix, credentials masked; it retries slowly (a password
or a path does not fix itself, and cameras lock accounts out); the other cameras keep running."""
from __future__ import annotations

import logging
import re

import pytest

from pipeline.sources.worker import REFUSED_MIN_S
from tests.support.http_camera import HttpCamera, make_media
from tests.support.waiting import wait_until

pytestmark = pytest.mark.fault

USER, PASSWORD = "viewer", "s3cret"
REFUSALS = {  # url of the refused camera -> what its last_error must say
    "wrong password": (f"{USER}:wrong-{PASSWORD}@", "live",
                       "unauthorised (401): the server refused the url's user and password"),
    "no credentials": ("", "live", "unauthorised (401): the server wants a user and password"),
    "no such path": (f"{USER}:{PASSWORD}@", "no-such-camera", "not found (404): the server has no stream at this path"),
}


def retry_delay(error: str) -> float:
    return float(re.search(r"retrying in ([\d.]+) s", error).group(1))


def assert_refused(stats: dict, stream_id: str, cause: str) -> None:
    error = stats["last_error"]
    assert stats["state"] == "reconnecting" and stats["frames"] == 0, stats
    assert f"stream '{stream_id}'" in error and cause in error, error
    assert PASSWORD not in error and USER not in error, error  # the url's credentials are masked
    assert retry_delay(error) >= REFUSED_MIN_S, error  # not the 0.1-0.5 s the stream's own schedule has


def test_a_refused_rtsp_camera_reconnects_slowly_saying_why_while_the_others_run(rtsp_server_factory, pipelines,
                                                                                  caplog):
    server = rtsp_server_factory(credentials=(USER, PASSWORD))
    host = f"127.0.0.1:{server.port}"
    streams = [{"id": "good", "url": f"rtsp://{USER}:{PASSWORD}@{host}/live"}]
    streams += [{"id": name.replace(" ", "-"), "url": f"rtsp://{auth}{host}/{path}"}
                for name, (auth, path, _) in REFUSALS.items()]
    with caplog.at_level(logging.INFO, logger="pipeline.sources"):
        run = pipelines(streams)
        assert run.wait_frames("good", 30), run.runner.snapshot().streams
        for name, (_, _, cause) in REFUSALS.items():
            stream_id = name.replace(" ", "-")
            assert wait_until(lambda: run.stats(stream_id)["last_error"], timeout=10), run.stats(stream_id)
            assert_refused(run.stats(stream_id), stream_id, cause)
        before = run.count("good")
        assert run.wait_frames("good", before + 20), run.stats("good")  # still flowing beside the refusals
        snap = run.stop()
    assert snap.streams["good"]["reconnects"] == 0 and snap.streams["good"]["last_error"] is None
    assert PASSWORD not in caplog.text and f"{USER}:" not in caplog.text


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("http-camera"), seconds=4)


@pytest.mark.parametrize("case, cause", [
    ("wrong password", "unauthorised (401): the server refused the url's user and password"),
    ("no credentials", "unauthorised (401): the server wants a user and password"),
    ("no such path", "not found (404): the server has no stream at this path"),
])
def test_a_refused_http_camera_reconnects_slowly_saying_why_while_the_others_run(media, pipelines, case, cause):
    locked, steady = HttpCamera(media, credentials=(USER, PASSWORD)).start(), HttpCamera(media).start()
    try:
        url = locked.url("video.mjpg")
        if case == "wrong password":
            url = url.replace(f":{PASSWORD}@", f":wrong-{PASSWORD}@")
        elif case == "no credentials":
            url = url.replace(f"{USER}:{PASSWORD}@", "")
        else:
            url = url.replace("video.mjpg", "no-such-camera.mjpg")
        run = pipelines([{"id": "refused", "url": url}, {"id": "steady", "url": steady.url("video.mjpg")}])
        assert run.wait_frames("steady", 20), run.stats("steady")
        assert wait_until(lambda: run.stats("refused")["last_error"], timeout=10), run.stats("refused")
        assert_refused(run.stats("refused"), "refused", cause)
        snap = run.stop()
        assert snap.streams["steady"]["reconnects"] == 0
    finally:
        locked.stop()
        steady.stop()
