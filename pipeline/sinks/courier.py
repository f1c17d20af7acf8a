"""An outbox's courier: the thread that delivers one output's stored events to it, in order.

It reads the events after its cursor, delivers each until the output takes it (retried with the outbox's backoff,
which an outage carries across events), refuses it for good or the output's `max_retries` runs out (a dead
letter), and moves the cursor in the database after each. See `pipeline.sinks.outbox`.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import EventRefused, SinkError
from pipeline.masking import mask_url
from pipeline.sinks.base import EventOutput
from pipeline.sinks.outputs.payload import event_from_json

if TYPE_CHECKING:
    from pipeline.sinks.outbox import Outbox

log = logging.getLogger(__name__)


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL journal, 10 s busy wait."""
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class Courier:
    """Delivers one output's backlog in order on its own thread; owns its own SQLite connection."""

    def __init__(self, outbox: "Outbox", output: EventOutput, cursor: int):
        self.output = output
        self.cursor = cursor
        self.delivered = 0
        self.failed = 0
        self.dead = 0
        self.wake = threading.Event()
        self.stopping = threading.Event()  # the outbox closes, or this output was taken out
        self._outbox = outbox
        self._max_retries = output.max_retries
        self._backoff = outbox.backoff.fresh()
        self.thread = threading.Thread(target=self._run, name=f"outbox:{output.name}", daemon=True)

    def _run(self) -> None:
        conn = None  # opened here, inside the retries: a courier that could not open it once would be gone for good
        try:
            while not self.stopping.is_set():
                try:
                    conn = conn or connect(self._outbox.path, "NORMAL")
                    if not self._deliver_next(conn):
                        return
                except sqlite3.Error as exc:  # locked past the busy timeout, no file descriptor left: try again
                    log.warning("outbox %s (output '%s'): %s; retrying", self._outbox.path, self.output.name, exc)
                    self.stopping.wait(self._outbox.backoff.max_s / 10)
        finally:
            if conn is not None:
                conn.close()

    def _deliver_next(self, conn: sqlite3.Connection) -> bool:
        """Deliver the next stored events (or wait for some); False when the outbox is stopping."""
        rows = conn.execute(
            "SELECT seq, event_id, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (self.cursor, self._outbox.batch_size),
        ).fetchall()
        if not rows:
            self.wake.wait(self._outbox.poll_s)
            self.wake.clear()
            return True
        return all(self._deliver(conn, seq, event_id, body) for seq, event_id, body in rows)

    def _deliver(self, conn: sqlite3.Connection, seq: int, event_id: str, body: str) -> bool:
        """Deliver one stored event, retrying until it lands; False when the outbox is stopping.

        The backoff is reset only by an answer: an outage goes on across the events given up after max_retries,
        and the event after one given up waits as its next retry would have.
        """
        attempt = 0
        while not self.stopping.is_set():
            attempt += 1
            try:
                self.output.deliver(event_from_json(body))
            except EventRefused as exc:  # refused for good: kept as a dead letter, the next one goes on
                self._backoff.reset()
                self._bury(conn, seq, event_id, mask_url(str(exc)), attempt)
                return True
            except SinkError as exc:  # an output's message may quote its URL, credentials and all (a plugin's)
                error = mask_url(str(exc))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - a bug in an output (a plugin's CancelledError too) must not
                # kill its courier: count, log, retry
                log.exception("output '%s' raised %s on event %s", self.output.name, type(exc).__name__, event_id)
                error = f"{type(exc).__name__}: {mask_url(str(exc))}"
            else:
                if self._backoff.attempt:  # the end of an outage is said, as its start was
                    log.info("output '%s': delivering again: event %s went through after %.1f s of failures",
                             self.output.name, event_id, self._backoff.down_s())
                self._backoff.reset()
                self._advance(conn, seq, event_id)
                self.delivered += 1
                return True
            self.failed += 1
            delay = self._backoff.next_delay()
            if self._max_retries is not None and attempt > self._max_retries:
                self._bury(conn, seq, event_id, error, attempt)
                self.stopping.wait(delay)  # the outage goes on: the next event waits as a retry would
                return True
            if attempt == 1 or attempt % 10 == 0:
                log.warning(
                    "output '%s': delivering event %s failed (attempt %d): %s; retrying in %.1f s",
                    self.output.name, event_id, attempt, error, delay,
                )
            self.stopping.wait(delay)
        return False

    def _advance(self, conn: sqlite3.Connection, seq: int, event_id: str) -> None:
        """Move the cursor past a delivered event. While the database cannot be written (locked past the busy wait),
        the write is retried, never the delivery; an outbox stopping meanwhile delivers this event again after the
        next start."""
        self.cursor = seq
        while True:
            try:
                conn.execute("UPDATE cursors SET delivered_seq = max(delivered_seq, ?) WHERE output = ?",
                             (seq, self.output.name))
                return
            except sqlite3.Error as exc:
                log.warning("outbox %s (output '%s'): cannot record the delivery of event %s: %s; retrying the record, "
                            "not the delivery", self._outbox.path, self.output.name, event_id, exc)
            if self.stopping.wait(self._outbox.backoff.max_s / 10):
                return

    def _bury(self, conn: sqlite3.Connection, seq: int, event_id: str, error: str, attempts: int) -> None:
        """Give up on one event: refused for good, or failed `max_retries` times (when the output asks for a limit)."""
        log.error(
            "output '%s': giving up on event %s after %d attempt(s): %s; it is kept in the outbox's "
            "dead_letters table (its JSON in events, joined by seq)", self.output.name, event_id, attempts, error,
        )
        conn.execute("BEGIN IMMEDIATE")
        with conn:  # commits, or rolls back when a statement fails
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?)",
                (self.output.name, seq, event_id, error[:2000], time.time_ns()),
            )
            conn.execute("UPDATE cursors SET delivered_seq = max(delivered_seq, ?) WHERE output = ?", (seq, self.output.name))
        self.cursor = seq
        self.dead += 1
