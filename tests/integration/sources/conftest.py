"""Fixtures for source tests: a collecting FrameSink, a looped clip, a real RTSP server and whole pipelines."""
from __future__ import annotations

import pytest

from tests.conftest import shared_file
from tests.support.collecting_sink import CollectingSink
from tests.support.http_server import free_port
from tests.support.pipelines import pipelines  # noqa: F401 - a fixture for these tests
from tests.support.rtsp_server import RtspServer, concat_clip, gst_rtsp_available


@pytest.fixture
def sink():
    return CollectingSink()


@pytest.fixture(scope="session")
def looped_clip(tmp_path_factory):
    """dog-848x464.mp4 (30 fps, 96 frames) ten times over: 32 s of H.264 for the RTSP server."""
    source = shared_file("media/dog-848x464.mp4")
    return concat_clip(source, tmp_path_factory.mktemp("rtsp") / "dog-x10.mp4", copies=10)


@pytest.fixture
def rtsp_server(looped_clip):
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    server = RtspServer(looped_clip, free_port()).start()
    yield server
    server.kill()


@pytest.fixture
def rtsp_server_factory(looped_clip):
    """`rtsp_server_factory(credentials=None, name="live")` -> a started RtspServer; all are killed after the test."""
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    started = []

    def start(**options) -> RtspServer:
        started.append(RtspServer(looped_clip, free_port(), **options).start())
        return started[-1]

    yield start
    for server in started:
        server.kill()
