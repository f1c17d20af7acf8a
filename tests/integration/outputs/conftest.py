"""Real receivers for the event-output tests: a local HTTP server and a Mosquitto broker."""
import pytest

from tests.support.http_server import RecordingHttpServer
from tests.support.mosquitto import mosquitto, mosquitto_persistent  # noqa: F401 - fixtures


@pytest.fixture
def http_server():
    server = RecordingHttpServer().start()
    yield server
    server.stop()
