"""GET /api/config shows the running config without a credential, wherever a plugin keeps one."""
from __future__ import annotations

from tests.support.service import config

SECRETS = ("k-live-1234", "p4ss-word", "hunter2", "t0k3n")


def test_a_stage_s_secret_options_are_masked_at_any_depth_and_the_rest_shown(tmp_path, serve):
    options = {"api_key": "k-live-1234", "every": 3,
               "client": {"user": "ops", "password": "p4ss-word",
                          "endpoint": "https://ops:hunter2@api.example/v1?accessToken=t0k3n&region=eu"}}
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}],
                          stages=[{"python": "tests.support.stages:Notifier", "options": options}]))
    reply = served.client.get("/api/config")
    assert reply.status_code == 200 and not [s for s in SECRETS if s in reply.text]
    assert reply.json()["stages"][0]["options"] == {
        "api_key": "***", "every": 3,
        "client": {"user": "ops", "password": "***",
                   "endpoint": "https://***@api.example/v1?accessToken=***&region=eu"}}


def test_credentials_in_a_plugin_s_http_headers_and_lists_of_keys_are_masked(tmp_path, serve):
    """An HTTP client's headers name their credentials `Authorization`, `Proxy-Authorization` and `Cookie`, and a
    rotation keeps several keys under a plural (`api_keys`, `tokens`)."""
    client = {"headers": {"Authorization": "Bearer s3cr3t-b34rer", "Proxy-Authorization": "Basic cHJveHk6cHc=",
                          "Cookie": "sid=c00kie-v4lue", "Accept": "application/json"},
              "api_keys": ["k-old-1111", "k-new-2222"], "tokens": {"eu": "t0k-eu"},
              "endpoint": "https://api.example/v1?authorization=Bearer%20qu3ry-s3cret&region=eu"}
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}],
                          stages=[{"python": "tests.support.stages:Notifier",
                                   "options": {"api_key": "k", "client": client}}]))
    reply = served.client.get("/api/config")
    assert reply.status_code == 200
    leaked = [s for s in ("s3cr3t-b34rer", "cHJveHk6cHc=", "c00kie-v4lue", "k-old-1111", "k-new-2222", "t0k-eu",
                          "qu3ry-s3cret") if s in reply.text]
    assert leaked == []
    assert reply.json()["stages"][0]["options"]["client"] == {
        "headers": {"Authorization": "***", "Proxy-Authorization": "***", "Cookie": "***",
                    "Accept": "application/json"},
        "api_keys": ["***", "***"], "tokens": {"eu": "***"},
        "endpoint": "https://api.example/v1?authorization=***&region=eu"}
