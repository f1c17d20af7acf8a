"""Events from the stages into the durable outbox, on a thread of their own (`outbox:store`).

The stage workers only append to a list in memory, so a slow or failing outbox disk (a locked database,
a full disk) never holds back tracking or detection: the events wait here and the store is retried
with backoff until it succeeds. Only when `max_pending` events are waiting do the stage workers wait
too (a bound on memory; logged). At shutdown `close` stores what is left, gives the outputs a few
seconds to take the backlog, and closes the outbox; what was not delivered stays on disk for the next start.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from pipeline.backoff import Backoff
from pipeline.errors import PipelineError, SinkError
from pipeline.sinks.base import EventOutput
from pipeline.sinks.outbox import Outbox
from pipeline.types import Event

log = logging.getLogger(__name__)


class EventPublisher:
    """`publish(events)` from any thread; `outbox` None (no event outputs) only counts them. entries: the
    `sinks:` entry and name of each of the outbox's outputs (to change them while running)."""

    def __init__(self, outbox: Outbox | None, *, entries: list[tuple[Any, str]] = (), max_pending: int = 100_000,
                 backoff: Backoff | None = None):
        self.outbox = outbox
        self.entries = list(entries)
        self.max_pending = max_pending
        self.published = 0
        self.stored = 0
        self.retries = 0
        self._backoff = backoff or Backoff(0.1, 5.0)
        self._pending: list[Event] = []
        self._listeners: tuple[Callable[[list[Event]], None], ...] = ()  # replaced, never changed
        self._delivery: dict[str, dict] = {}  # per event output, kept from the last look before close
        self._cond = threading.Condition()
        self._stats_lock = threading.Lock()  # close() sets _closing under it before it closes the outbox
        self._closing = False
        self._closed = False  # `close` began: an output added now would never be closed
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox:store", daemon=True)

    def start(self) -> None:
        if self.outbox is not None:
            self.outbox.open()
            self._thread.start()

    def add_output(self, output: EventOutput, entry: Any, outbox_path: Path) -> None:
        """An event output added while running; the first one opens the outbox at `outbox_path`. PipelineError
        once the pipeline is stopping."""
        with self._cond:  # `close` waits for it, or it sees that `close` began
            if self._closed:
                raise PipelineError(f"output {output.name} not added: the pipeline is stopping")
            if self.outbox is None:
                self.outbox = Outbox(outbox_path, [output])
                self.start()
            else:
                self.outbox.add_output(output)
            self.entries.append((entry, output.name))

    def remove_output(self, entry: Any) -> str | None:
        """Stop delivering to the output of `entry`; what it had not taken stays in the outbox. Its name, or None
        when it never started."""
        i = next((i for i, (known, _) in enumerate(self.entries) if known == entry), None)
        if i is None:
            return None
        _, name = self.entries.pop(i)
        self.outbox.remove_output(name)
        return name

    def add_listener(self, listener: Callable[[list[Event]], None]) -> None:
        """Call `listener(events)` with every published list, on the publishing thread, once they are on their way
        to the outbox (a live view: it must return at once; what it raises is logged). Not durable: a listener
        added later does not get earlier events."""
        with self._cond:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Callable[[list[Event]], None]) -> None:
        with self._cond:
            self._listeners = tuple(known for known in self._listeners if known is not listener)

    def publish(self, events: list[Event]) -> None:
        self._append(events)
        for listener in self._listeners:  # after the durable path: a failing live view loses nothing
            try:
                listener(events)
            except Exception:  # noqa: BLE001 - a live view must not stop the stages
                log.exception("event listener %r failed on %d events; the events are stored all the same",
                              listener, len(events))

    def _append(self, events: list[Event]) -> None:
        with self._cond:
            self.published += len(events)
            if self.outbox is None:
                return
            if len(self._pending) >= self.max_pending:
                log.warning("outbox: %d events waiting to be stored; the stages wait for the outbox", len(self._pending))
                while len(self._pending) >= self.max_pending and not self._closing:
                    self._cond.wait(1.0)
            self._pending.extend(events)
            self._cond.notify_all()

    def stats(self) -> dict:
        """published/stored/waiting/retries, and per event output its delivered/failed/dead/pending."""
        with self._stats_lock:  # not the publishers' lock: reading the outbox waits while it stores (a slow disk)
            if self.outbox is not None and not self._closing:
                self._delivery = self.outbox.stats()
        with self._cond:
            return {"published": self.published, "stored": self.stored, "waiting": len(self._pending),
                    "retries": self.retries, "outputs": self._delivery}

    def close(self, store_timeout: float = 10.0, deliver_timeout: float = 5.0) -> None:
        """Store what is waiting (retrying up to `store_timeout` s), give the outputs `deliver_timeout` s to
        take the backlog, close the outbox; undelivered events stay on disk for the next start."""
        with self._cond:
            self._closed = True
        if self.outbox is None or self._thread.ident is None:  # no event outputs, or never started
            return
        self._delivery = self.outbox.stats()
        with self._stats_lock, self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(store_timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join(1.0)
            log.error("outbox: %d events could not be stored before shutdown (see the errors above)",
                      len(self._pending))
        if not self.outbox.wait_delivered(deliver_timeout):
            pending = {name: s["pending"] for name, s in self.outbox.stats().items() if s["pending"]}
            log.warning("outputs still unreachable after %.0f s; events kept in the outbox for the next start: %s",
                        deliver_timeout, pending)
        self._delivery = self.outbox.stats()
        self.outbox.close()

    def _run(self) -> None:
        while not self._abandon.is_set():  # abandoned: what could not be stored stays counted as waiting
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait(1.0)
                if not self._pending:
                    return
                events, self._pending = self._pending, []
                self._cond.notify_all()
            self._store(events)

    def _store(self, events: list[Event]) -> None:
        self._backoff.reset()
        while not self._abandon.is_set():
            try:
                self.outbox.put(events)
            except SinkError as exc:
                self.retries += 1
                delay = self._backoff.next_delay()
                log.warning("outbox: %s; retrying in %.1f s", exc, delay)
                self._abandon.wait(delay)
                continue
            self.stored += len(events)
            return
        with self._cond:
            self._pending[:0] = events  # counted as not stored by close()
