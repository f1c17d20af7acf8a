"""The process's log configured for one test, and put back as it was afterwards (pytest's handlers, the
root level, warnings not captured).

    with configured_log("json") as out:
        ...
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
"""
from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline import logs


@contextmanager
def configured_log(log_format: logs.LogFormat = "json", level: str = "info") -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    out = io.StringIO()
    logs.configure(level, log_format, stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        logging.captureWarnings(False)
