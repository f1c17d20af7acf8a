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
