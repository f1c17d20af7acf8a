"""Changes over HTTP to a pipeline started without a config file (embedded in a program): the cameras the program
added or removed in code stay as they are."""
from __future__ import annotations

from pipeline.config.models import StreamConfig
from tests.support.service import config

ZONE = {"streams": ["a"], "polygon": [[0, 0], [10, 0], [10, 10]]}


def test_a_change_over_http_keeps_the_cameras_added_and_removed_in_code(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}]))
    served.runner.add_stream(StreamConfig(id="b", url="fake://b?fps=20"))
    assert served.client.put("/api/zones/dock", json=ZONE).status_code == 201
    assert [s.id for s in served.runner.streams()] == ["a", "b"]  # b was once taken for a camera to remove
    assert served.runner.remove_stream("b", timeout=20)
    assert served.client.put("/api/zones/dock", json={**ZONE, "polygon": [[0, 0], [20, 0], [20, 20]]}).status_code == 200
    assert [s.id for s in served.runner.streams()] == ["a"]  # and b one to add back


def test_a_reload_without_a_config_file_is_a_conflict_that_says_how_to_change_the_pipeline(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}]))
    reply = served.client.post("/api/reload")
    assert reply.status_code == 409  # not 503: asking again never finds a file
    assert "not started from a config file" in reply.json()["detail"] and "/api/streams" in reply.json()["detail"]
    assert [s.id for s in served.runner.streams()] == ["a"]
