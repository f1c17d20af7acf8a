"""One way to keep credentials out of logs, errors, metrics, API answers and the database.

    >>> mask_url("rtsp://admin:secret@10.0.0.5:554/live")
    'rtsp://***@10.0.0.5:554/live'
    >>> mask_url("opening http://10.0.0.7/mjpg?user=cam&pwd=s3cret failed")
    'opening http://10.0.0.7/mjpg?user=cam&pwd=*** failed'
    >>> mask_url("rtsp://10.0.0.5/live?access_token=abc&channel=1")
    'rtsp://10.0.0.5/live?access_token=***&channel=1'
    >>> mask_url("host=db password='p w' dbname=site")
    'host=db password=*** dbname=site'
"""
from __future__ import annotations

import re

# Anywhere in a text, up to the last "@" of the URL (passwords may hold "@" or "/"): over-masking
# a path that contains "@" is the safe side.
_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)\S*@(?=[^\s@/]*(?:[/:?#\s]|$))")
_SECRET_KEYS = "password|passwd|pass|pwd|token|key|secret|sslpassword|api_key|apikey|auth|signature|sig"
# a secret word alone or as the end of the key (`access_token`, `x-api-key`, `client_secret`, `accessToken`: in
# camel case only where a capital starts the word, so `monkey` and `turnkey` stay as they are)
_CAMEL_END = r"(?-i:(?=(?:Token|Key|Secret|Password|Passwd|Pass|Pwd|Auth|Signature|Sig)=))"
_QUERY_SECRET = re.compile(rf"(?P<key>[?&;](?:[\w.-]*[_.-])?(?:[A-Za-z0-9]*[a-z]{_CAMEL_END})?(?:{_SECRET_KEYS})=)"
                           r"[^&#\s]*", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_url(text: str | None) -> str | None:
    """`text` (a URL, a key=value DSN, or a message holding them) with every `user:password@`, every secret
    query value (`?token=`, `&pwd=`, ...) and a DSN's `password=` replaced by `***`."""
    if text is None:
        return None
    text = _USER_INFO.sub(r"\g<scheme>***@", text)
    text = _QUERY_SECRET.sub(r"\g<key>***", text)
    return _DSN_PASSWORD.sub(r"\g<key>***", text)
