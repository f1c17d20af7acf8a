"""Waiting for a condition in tests: poll it until it holds or a deadline passes."""
from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, step: float = 0.02) -> bool:
    """True as soon as `predicate()` is truthy, polled every `step` s; False if it is not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def inference_waits_for(function) -> bool:
    """Whether an inference thread is inside `function` now."""
    inference = {t.ident for t in threading.enumerate() if t.name.startswith("infer:")}
    return any(ident in inference and any(f.f_code is function.__code__ for f, _ in traceback.walk_stack(frame))
               for ident, frame in sys._current_frames().items())
