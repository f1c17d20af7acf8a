"""Where the process's log lines go: one handler on stderr, as text or as one JSON object per line
(`runtime.log_format`). Everything logs through the root logger: the pipeline, uvicorn (its own logging
config is switched off), Python warnings, and the decode processes (configured the same way).

    logs.configure("info", "json")
    logging.getLogger("pipeline.progress").info("cam-1 running", extra={"stream": "cam-1", "fps": 25.0})
    # {"level": "INFO", "logger": "pipeline.progress", "message": "cam-1 running", "process": "MainProcess",
    #  "thread": "MainThread", "stream": "cam-1", "fps": 25.0, "ts": "2026-12-04T09:15:02.114851+00:00"}
"""
from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import MemoryHandler
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

from pipeline.masking import mask_url

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

HELD_MAX = 10_000
"""Records kept while the config that says how to write them is read (a bound, not an expectation)."""


def json_formatter() -> logging.Formatter:
    """ts (ISO-8601, UTC), level, logger, message, process and thread (`decode-proc:0`, `decode:cam-3`), then
    the record's `extra` fields as they are; an exception goes in `exception` as its formatted traceback."""
    return JsonFormatter("{levelname}{name}{message}{processName}{threadName}", style="{", timestamp="ts",
                         rename_fields={"levelname": "level", "name": "logger", "processName": "process",
                                        "threadName": "thread", "exc_info": "exception"})


class MaskedFormatter(logging.Formatter):
    """What `inner` writes, with credentials masked (`mask_url`): whatever raised (a plugin, the HTTP client it uses,
    any library) may name a URL with its password or token, in the message or the traceback. Those are masked on a
    copy before `inner` writes it, not in its output, where a secret's mask would run over JSON's closing quote; the
    record is left as it is for any other handler (it is shared)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        masked = copy.copy(record)
        masked.msg, masked.args = mask_url(record.getMessage()), None
        if record.exc_info:
            masked.exc_text, masked.exc_info = self.inner.formatException(record.exc_info), None
        masked.exc_text, masked.stack_info = mask_url(masked.exc_text), mask_url(record.stack_info)
        return self.inner.format(masked)


def configure(level: str | int = "info", log_format: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Make one handler on `stream` (stderr) in `log_format` the root logger's only one, at `level`, its
    records' credentials masked; records `held` so far are written by it first."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(MaskedFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)))
    waiting = [h for h in logging.getLogger().handlers if isinstance(h, MemoryHandler)]
    _set_root_handler(handler)
    for memory in waiting:
        memory.setTarget(handler)
        memory.flush()
    logging.getLogger().setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)


def current_format() -> LogFormat:
    """The format the root handler writes ("text" when none was configured)."""
    json_handlers = [h for h in logging.getLogger().handlers
                     if isinstance(getattr(h.formatter, "inner", h.formatter), JsonFormatter)]
    return "json" if json_handlers else "text"


@contextmanager
def held() -> Iterator[None]:
    """Records logged inside wait in memory: a `configure` inside decides how they are written (so with
    `log_format: json` even the lines logged while the config itself was read come out as JSON); without
    one they go to the handler there was before."""
    root = logging.getLogger()
    before = root.handlers[:]
    memory = MemoryHandler(HELD_MAX, flushLevel=logging.CRITICAL + 1)
    _set_root_handler(memory)
    try:
        yield
    finally:
        if root.handlers == [memory]:  # not configured inside
            root.handlers[:] = before
            memory.setTarget(before[0] if before else logging.lastResort)
        memory.close()  # writes what is still held to its target


def _set_root_handler(handler: logging.Handler) -> None:
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)  # not closed: `held` may put it back
    root.addHandler(handler)
