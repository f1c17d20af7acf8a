"""Who the HTTP API serves: the bearer token, loopback hosts without one, and tokens no client could send."""
from __future__ import annotations

import httpx
import pytest

from pipeline.config.models import HttpConfig
from tests.support.service import TOKEN, config


def test_with_a_token_the_api_needs_it_and_probes_do_not(tmp_path, serve):
    served = serve(config(tmp_path, []), token=TOKEN)
    anonymous = httpx.Client(base_url=str(served.client.base_url))
    assert anonymous.get("/api/streams").status_code == 401
    assert anonymous.get("/status").status_code == 401
    assert anonymous.post("/api/streams", json={"id": "x", "url": "fake://x"}).status_code == 401
    assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/metrics").status_code == 200
    assert served.client.get("/api/streams").json() == []  # a service may start with no camera
    anonymous.close()


def test_the_bearer_scheme_is_read_in_any_case_and_the_token_itself_exactly(tmp_path, serve):
    """HTTP auth schemes are case-insensitive (RFC 7235): clients and proxies send `bearer` or `BEARER` too."""
    served = serve(config(tmp_path, []), token=TOKEN)
    with httpx.Client(base_url=str(served.client.base_url), timeout=10) as client:
        for scheme in ("bearer", "BEARER", "BeArEr"):
            assert client.get("/api/streams", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200
        for wrong in (f"Bearer {TOKEN.upper()}", f"Basic {TOKEN}", f"Bearer{TOKEN}", TOKEN, f"Bearer {TOKEN}x"):
            assert client.get("/api/streams", headers={"Authorization": wrong}).status_code == 401, wrong


def test_without_a_token_only_loopback_hosts_and_changes_from_its_own_pages_are_served(tmp_path, serve):
    served = serve(config(tmp_path, [{"id": "a", "url": "fake://a?fps=10"}]))
    client, port = served.client, served.service.port
    rebound = {"Host": f"evil.example:{port}"}  # a page whose name was made to point at 127.0.0.1 (DNS rebinding)
    refused = client.get("/api/config", headers=rebound)
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith(f"Host 'evil.example:{port}' is not a loopback address")
    assert "set runtime.http.token to serve other hosts" in refused.json()["detail"]
    assert client.delete("/api/streams/a", headers=rebound).status_code == 403
    for origin in ("http://evil.example", "null", f"http://localhost:{port}"):  # a cross-site form post or fetch
        assert client.post("/api/streams/a/pause", headers={"Origin": origin}).status_code == 403
        assert client.post("/api/reload", headers={"Origin": origin}).status_code == 403
    assert [s["id"] for s in client.get("/api/streams").json()] == ["a"]
    assert client.get("/api/streams/a").json()["state"] != "paused"

    for host in (f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}", "127.0.0.1"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200
    own = client.post("/api/streams/a/pause", headers={"Origin": f"http://127.0.0.1:{port}"})  # the console's own
    assert own.status_code in (200, 202), own.text
    zone = {"polygon": [[0, 0], [60, 0], [60, 40]]}
    assert client.put("/api/zones/door", json=zone).status_code == 201  # no Origin: a script, not a page
    with_token = serve(config(tmp_path, []), token=TOKEN)  # a token serves any host name, and pages that have it
    assert with_token.client.get("/api/config", headers={"Host": f"edge-1.example:{port}"}).status_code == 200


def test_listening_beyond_loopback_without_a_token_is_refused():
    with pytest.raises(ValueError, match="reachable from other machines: set a token"):
        HttpConfig(host="0.0.0.0")
    assert HttpConfig(host="0.0.0.0", token=TOKEN).host == "0.0.0.0"
    assert HttpConfig(host="::1").token is None


@pytest.mark.parametrize("token", ["a-token-of-sixteen-chars\r", " a-token-of-sixteen-chars", "mot-de-passe-sécurisé"])
def test_a_token_no_client_can_send_in_its_header_is_refused_naming_the_key(token):
    """HTTP strips the spaces around a header's value and reads its bytes as Latin-1: a token with a stray
    carriage return (an environment file written on Windows) or an accented letter would answer 401 to every
    request that sends it."""
    with pytest.raises(ValueError, match=r"token\n.*ASCII letters, digits and punctuation"):
        HttpConfig(token=token)
