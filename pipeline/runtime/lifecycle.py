"""Stage lifecycle: a state enum, its legal transitions as data, and a threaded `Stage` base.

A stage subclasses `Stage`, implements `run()` (loop until `self.stop_requested`, use timeouts on
every blocking call) and gets `start()`, `stop(drain=True)`, `join(timeout) -> bool` and `state`.
The thread is named "<kind>:<name>", e.g. "decode:cam-3", so stack dumps and logs say who is who.
"""
from __future__ import annotations

import enum
import logging
import threading
from typing import Callable

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


class State(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.CREATED: frozenset({State.STARTING, State.STOPPED}),
    State.STARTING: frozenset({State.RUNNING, State.STOPPING, State.FAILED}),
    State.RUNNING: frozenset({State.STOPPING, State.STOPPED, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED, State.FAILED}),
    State.STOPPED: frozenset(),
    State.FAILED: frozenset(),
}


class IllegalTransition(PipelineError):
    """A stage was asked to move between states that `TRANSITIONS` does not connect."""


class StateMachine:
    """Thread-safe current state that only moves along `TRANSITIONS`.

    `on_change(old, new)` is called (outside the lock) after each move, e.g. to update a metric.
    """

    def __init__(self, owner: str, on_change: Callable[[State, State], None] | None = None):
        self.owner = owner
        self._state = State.CREATED
        self._lock = threading.Lock()
        self._on_change = on_change

    @property
    def state(self) -> State:
        return self._state

    def move(self, new: State) -> None:
        """Move to `new` or raise `IllegalTransition` naming the owner and both states."""
        with self._lock:
            old = self._state
            if new not in TRANSITIONS[old]:
                allowed = sorted(s.value for s in TRANSITIONS[old]) or "none (terminal)"
                raise IllegalTransition(f"{self.owner}: cannot go from {old.value} to {new.value}; allowed: {allowed}")
            self._state = new
        self._notify(old, new)

    def move_if(self, expected: State, new: State) -> bool:
        """Atomically move to `new` only when the state is `expected`; False (and no move) otherwise."""
        with self._lock:
            if self._state is not expected:
                return False
            if new not in TRANSITIONS[expected]:
                raise IllegalTransition(f"{self.owner}: cannot go from {expected.value} to {new.value}")
            self._state = new
        self._notify(expected, new)
        return True

    def _notify(self, old: State, new: State) -> None:
        if self._on_change is not None:
            self._on_change(old, new)


class Stage:
    """Base of a stage that runs `run()` in its own named thread.

    Subclasses implement `run()`; it should return when `stop_requested` is set, finishing the
    work in hand first when `drain` is True. An exception escaping `run()` puts the stage in
    FAILED with the exception kept in `error`; `join()` still returns.

    Args:
        kind: stage kind, the thread-name prefix ("decode", "detect", "sink").
        name: instance name, e.g. the stream id ("cam-3").
    """

    def __init__(self, kind: str, name: str):
        self.thread_name = f"{kind}:{name}"
        self.error: Exception | None = None
        self.drain = True
        self._stop = threading.Event()
        self._machine = StateMachine(self.thread_name)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement run()")

    @property
    def state(self) -> State:
        return self._machine.state

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_event(self) -> threading.Event:
        """Set by `stop()`; pass it to loops that wait, or `wait(timeout)` on it instead of sleeping."""
        return self._stop

    def start(self) -> None:
        """Start the thread; raises `IllegalTransition` if the stage was already started or stopped."""
        self._machine.move(State.STARTING)
        self._thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True) -> None:
        """Ask the stage to stop; `drain=True` lets it finish frames already taken. Idempotent."""
        self.drain = drain
        self._stop.set()
        for current, new in ((State.CREATED, State.STOPPED), (State.RUNNING, State.STOPPING), (State.STARTING, State.STOPPING)):
            if self._machine.move_if(current, new):
                return

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the thread; True when it has ended (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        self._machine.move_if(State.STARTING, State.RUNNING)
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - kept in `error`, logged, stage marked FAILED
            self.error = exc
            log.error("%s failed: %s: %s", self.thread_name, type(exc).__name__, exc, exc_info=exc)
            self._machine.move(State.FAILED)
            return
        self._machine.move(State.STOPPED)
