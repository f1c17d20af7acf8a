"""Who may call the API: with `runtime.http.token` set, a request carries `Authorization: Bearer <token>` or
the session cookie a browser got by logging in with that token.

A browser cannot put a bearer token on `EventSource` or `<img>` requests, so the console posts the token
once to `POST /login` and gets an HttpOnly, SameSite=Strict cookie holding a random session id (kept in
memory: a restart logs everyone out); `POST /logout` ends it. Without a token (loopback only) every
request is let through and `/login` is not needed.
"""
from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict

COOKIE = "streamweave_session"
MAX_SESSIONS = 1000
"""Sessions kept at once; logging in again beyond that ends the oldest."""


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

    def allows(self, request: Request) -> bool:
        """The request carries the bearer token or a live session's cookie (or no token is set)."""
        if self.token is None:
            return True
        given = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(given, f"Bearer {self.token}".encode()):
            return True
        session = request.cookies.get(COOKIE)
        with self._lock:
            return session is not None and session in self._ids

    def check(self, request: Request) -> None:
        """The FastAPI dependency of every protected route: 401 unless `allows`."""
        if not self.allows(request):
            raise HTTPException(401, "this API needs `Authorization: Bearer <runtime.http.token>` (or, in a browser, "
                                     "logging in at / with that token)", headers={"WWW-Authenticate": "Bearer"})


def router(sessions: Sessions) -> APIRouter:
    api = APIRouter(tags=["console"])

    @api.post("/login", status_code=204)
    def login(body: Login, response: Response) -> Response:
        """Exchange the API token for a session cookie (HttpOnly, SameSite=Strict) the API accepts too."""
        if sessions.token is None:
            return Response(status_code=204)
        session = sessions.login(body.token)
        if session is None:
            raise HTTPException(401, "wrong token: give the value of runtime.http.token")
        reply = Response(status_code=204)
        reply.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
        return reply

    @api.post("/logout", status_code=204)
    def logout(request: Request) -> Response:
        session = request.cookies.get(COOKIE)
        if session is not None:
            sessions.logout(session)
        reply = Response(status_code=204)
        reply.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return reply

    return api
