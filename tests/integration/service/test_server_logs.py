"""uvicorn logs through the process's handler: with a JSON log, an error in a request is one JSON line."""
import json

import httpx

from pipeline.service.server import HttpServer
from tests.support.logs import configured_log


async def failing_app(scope, receive, send):
    raise RuntimeError("handler broke")


def test_an_error_in_a_request_is_logged_as_one_json_line_with_its_traceback():
    with configured_log("json") as out:
        server = HttpServer(failing_app, "127.0.0.1", 0).start()
        try:
            assert httpx.get(f"http://127.0.0.1:{server.port}/status", timeout=5).status_code == 500
        finally:
            server.stop()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]  # every line is JSON
    [error] = [line for line in lines if line["logger"].startswith("uvicorn")]
    assert error["level"] == "ERROR" and error["message"].startswith("Exception in ASGI application")
    assert error["exception"].endswith("RuntimeError: handler broke")
    assert error["thread"] == f"http:{server.port}"
