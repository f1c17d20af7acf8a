"""Who may call the API: with `runtime.http.token` set, a request carries `Authorization: Bearer <token>` or
the session cookie a browser got by logging in with that token.

A browser cannot put a bearer token on `EventSource` or `<img>` requests, so the console posts the token
once to `POST /login` and gets an HttpOnly, SameSite=Strict cookie (Secure over HTTPS) holding a random
session id (kept in memory: a restart logs everyone out); `POST /logout` ends it. A change the cookie alone
authorizes must come from the server's own pages: SameSite keeps it from other sites only, not from another
port or subdomain.

Without a token the server listens on loopback only and `/login` is not needed, but a browser on this
machine reaches it from any page it opens: `LocalOnly` then answers 403 to a request whose `Host` is not a
loopback name (a page whose own name was made to point at 127.0.0.1, DNS rebinding) and to a request that
changes something (any method but GET, HEAD and OPTIONS) sent by a page of another origin (a cross-site
form or `fetch` needs no preflight). Serving other hosts needs a token.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
from collections import OrderedDict
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import Headers

from pipeline.config.models import LOOPBACK_HOSTS

COOKIE = "streamweave_session"
"""The session cookie's name, followed by `_<port>` (`cookie_name`)."""
MAX_SESSIONS = 1000
"""Sessions kept at once; logging in again beyond that ends the oldest."""
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
"""The methods that change nothing, which a page of another site may send without a token too."""


class LocalOnly:
    """ASGI middleware of a server without a token listening on `host` (a loopback address or name): 403 for a
    request whose Host header names neither a loopback name nor `host`, and for one that changes something
    whose Origin header is another origin than the server's own (`http://<its Host header>`)."""

    def __init__(self, app, host: str):
        self.app = app
        self.hosts = {_normal(name) for name in (*LOOPBACK_HOSTS, host)}

    async def __call__(self, scope, receive, send) -> None:
        refused = self.refused(scope["method"], Headers(scope=scope)) if scope["type"] == "http" else None
        if refused is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse({"detail": f"{refused}: without runtime.http.token this server answers only requests to a "
                            "loopback address from its own pages; set runtime.http.token to serve other hosts"},
                           status_code=403)(scope, receive, send)

    def refused(self, method: str, headers: Headers) -> str | None:
        """Why a request is refused, or None."""
        host = headers.get("host", "")
        try:
            name = urlsplit(f"//{host}").hostname
        except ValueError:
            name = None
        if name is None or _normal(name) not in self.hosts:
            return f"Host {host!r} is not a loopback address"
        origin = headers.get("origin")
        if method not in SAFE_METHODS and origin is not None and origin.lower() != f"http://{host}".lower():
            return f"{method} from a page of {origin!r}, another site"
        return None


def _normal(name: str) -> str:
    """A host name as compared: an address in its short form (`::1`), a name in lower case."""
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name.lower()


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str


class Sessions:
    """token: the API token (None: no login needed). Thread-safe."""

    def __init__(self, token: str | None):
        self.token = token
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def login(self, given: str) -> str | None:
        """A new session id when `given` is the token, else None."""
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._ids[session] = None
            while len(self._ids) > MAX_SESSIONS:
                self._ids.popitem(last=False)
        return session

    def logout(self, session: str) -> None:
        with self._lock:
            self._ids.pop(session, None)

    def check(self, request: Request) -> None:
        """The FastAPI dependency of every protected route: 401 unless the request carries the bearer token or a
        live session's cookie; 403 for a change that only the cookie authorizes, sent by a page of another origin
        (`from_another_origin`)."""
        if self.token is None or self._bearer(request):
            return
        if not self._session(request):
            raise HTTPException(401, "this API needs `Authorization: Bearer <runtime.http.token>` (or, in a browser, "
                                     "logging in at / with that token)", headers={"WWW-Authenticate": "Bearer"})
        refused = from_another_origin(request.method, request.headers)
        if refused is not None:
            raise HTTPException(403, f"{refused}: the console's session changes something only from this server's "
                                     "own pages; other clients send `Authorization: Bearer <runtime.http.token>`")

    def _bearer(self, request: Request) -> bool:
        """Whether the request sends the token: the scheme in any case (RFC 7235), the token compared in constant
        time."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.lstrip(" ").encode(), self.token.encode())

    def _session(self, request: Request) -> bool:
        session = request.cookies.get(cookie_name(request))
        with self._lock:
            return session is not None and session in self._ids


def from_another_origin(method: str, headers: Headers) -> str | None:
    """Why a change (any method but the SAFE_METHODS) comes from a page of another origin, or None. SameSite
    keeps a cookie from other sites only: a page of another port or subdomain of this site still sends it."""
    if method in SAFE_METHODS:
        return None
    origin, fetched_from = headers.get("origin"), headers.get("sec-fetch-site")
    if fetched_from in ("same-site", "cross-site"):
        return f"{method} from a page of {origin or 'another site'!r}"
    host = headers.get("host", "").lower()
    if fetched_from is None and origin is not None and urlsplit(origin).netloc.lower() != host:
        return f"{method} from a page of {origin!r}, another origin"
    return None


def cookie_name(request: Request) -> str:
    """`streamweave_session_<the port this server listens on>`: a browser keeps one cookie of a name per host,
    whatever its port, and the instances of one host (`run --gpus`) each have their own sessions."""
    return f"{COOKIE}_{request.scope['server'][1]}"


def router(sessions: Sessions) -> APIRouter:
    api = APIRouter(tags=["console"])

    @api.post("/login", status_code=204)
    def login(body: Login, request: Request) -> Response:
        """Exchange the API token for a session cookie (HttpOnly, SameSite=Strict) the API accepts too."""
        if sessions.token is None:
            return Response(status_code=204)
        session = sessions.login(body.token)
        if session is None:
            raise HTTPException(401, "wrong token: give the value of runtime.http.token")
        reply = Response(status_code=204)
        reply.set_cookie(cookie_name(request), session, httponly=True, samesite="strict", path="/",
                         secure=_over_https(request))
        return reply

    @api.post("/logout", status_code=204)
    def logout(request: Request) -> Response:
        session = request.cookies.get(cookie_name(request))
        if session is not None:
            sessions.logout(session)
        reply = Response(status_code=204)
        reply.delete_cookie(cookie_name(request), path="/", httponly=True, samesite="strict",
                            secure=_over_https(request))
        return reply

    return api


def _over_https(request: Request) -> bool:
    """Whether the browser reached the console over HTTPS (directly, or through a TLS proxy whose
    X-Forwarded-Proto uvicorn trusts): then the cookie is Secure, never sent over plain HTTP."""
    return request.url.scheme == "https"
