"""One way to keep credentials out of logs, errors, metrics, API answers and the database.

    >>> mask_url("rtsp://admin:secret@10.0.0.5:554/live")
    'rtsp://***@10.0.0.5:554/live'
    >>> mask_url("opening http://10.0.0.7/mjpg?user=cam&pwd=s3cret failed")
    'opening http://10.0.0.7/mjpg?user=cam&pwd=*** failed'
    >>> mask_url("rtsp://10.0.0.5/live?access_token=abc&channel=1")
    'rtsp://10.0.0.5/live?access_token=***&channel=1'
    >>> mask_url("host=db password='p w' dbname=site")
    'host=db password=*** dbname=site'
    >>> mask_secrets({"url": "mqtt://u:pw@broker", "client": {"user": "ops", "api_key": "k1"}, "keyframes": 2})
    {'url': 'mqtt://***@broker', 'client': {'user': 'ops', 'api_key': '***'}, 'keyframes': 2}
"""
from __future__ import annotations

import re
from typing import Any

# Anywhere in a text, up to the last "@" of the URL (passwords may hold "@" or "/"): over-masking
# a path that contains "@" is the safe side.
_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)\S*@(?=[^\s@/]*(?:[/:?#\s]|$))")
_SECRET_KEYS = ("password|passwd|passphrase|pass|pwd|token|key|secret|sslpassword|api_key|apikey|auth|credentials|"
                "signature|sig|authorization|cookie|bearer")
_CAMEL_WORDS = ("Token|Key|Secret|Password|Passwd|Passphrase|Pass|Pwd|Auth|Credentials|Signature|Sig|Authorization|"
                "Cookie|Bearer")


def _secret_name(end: str) -> str:
    """A secret word alone or as the end of a key (`access_token`, `x-api-key`, `client_secret`, `accessToken`,
    `Proxy-Authorization`: in camel case only where a capital starts the word, so `monkey` and `turnkey` stay as
    they are), in the plural too (`api_keys`, `tokens`: several kept for a rotation), then `end`."""
    return (rf"(?:[\w.-]*[_.-])?(?:[A-Za-z0-9]*[a-z](?-i:(?=(?:{_CAMEL_WORDS})s?{end})))?"
            rf"(?:{_SECRET_KEYS})s?{end}")


_QUERY_SECRET = re.compile(rf"(?P<key>[?&;]{_secret_name('=')})[^&#\s]*", re.IGNORECASE)
_SECRET_KEY = re.compile(_secret_name("$"), re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_url(text: str | None) -> str | None:
    """`text` (a URL, a key=value DSN, or a message holding them) with every `user:password@`, every secret
    query value (`?token=`, `&pwd=`, ...) and a DSN's `password=` replaced by `***`."""
    if text is None:
        return None
    text = _USER_INFO.sub(r"\g<scheme>***@", text)
    text = _QUERY_SECRET.sub(r"\g<key>***", text)
    return _DSN_PASSWORD.sub(r"\g<key>***", text)


def mask_secrets(data: Any, secret: bool = False) -> Any:
    """A copy of `data` (JSON-like: dicts, lists, scalars; a config as `model_dump(mode="json")`) with every string
    passed through `mask_url`, and every string or number under a key that names a secret (`password`, `api_key`,
    `client_secret`, `accessToken`, ..., at any depth: what a plugin's options hold) replaced by `***`."""
    if isinstance(data, dict):
        return {key: mask_secrets(value, secret or (isinstance(key, str) and _SECRET_KEY.fullmatch(key) is not None))
                for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask_secrets(item, secret) for item in data]
    if secret and isinstance(data, (str, int, float)) and not isinstance(data, bool) and data != "":
        return "***"
    return mask_url(data) if isinstance(data, str) else data
