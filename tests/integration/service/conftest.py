import pytest

from tests.support.service import Served


@pytest.fixture
def serve():
    """`serve(config, token=None, sinks=(), path=None)` starts a Served pipeline; all are stopped after the test."""
    started = []

    def start(*args, **kwargs) -> Served:
        started.append(Served(*args, **kwargs))
        return started[-1]

    yield start
    for served in started:
        if served.thread.is_alive():
            served.stop()
