"""Durable outbox: events are written to SQLite before anything tries to deliver them.

Every event output (webhook, MQTT, event log) has a courier thread, `outbox:<output name>`
(`pipeline.sinks.courier`), that delivers the stored events to it one at a time, in the order they
were stored, and moves that output's cursor after each success. A failing delivery is retried with
exponential backoff and jitter; the courier never skips ahead, so a down webhook sees its backlog in
order when it comes back. The cursor lives in the same database, so events stored but not yet
delivered when the process stops are delivered after the next start. Delivery is at least once (a
crash between a delivery and its cursor update, or a stop while the database cannot be written,
repeats that one event); consumers de-duplicate by `event_id`, and the outbox itself ignores an event
whose `event_id` it already holds.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.backoff import Backoff
from pipeline.errors import ConfigError, SinkError
from pipeline.sinks.base import EventOutput
from pipeline.sinks.courier import Courier, connect
from pipeline.sinks.outputs.payload import event_to_json
from pipeline.types import Event

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    stream_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    stored_ns INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    output TEXT PRIMARY KEY,
    delivered_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_ns INTEGER NOT NULL,
    PRIMARY KEY (output, seq)
);
"""


def _close_output(output: EventOutput) -> None:
    try:
        output.close()
    except Exception as exc:  # noqa: BLE001 - one output failing to close must not leave the others open
        log.warning("closing output '%s' failed: %s", output.name, exc)


def _row(event: Event) -> tuple:
    """The outbox row of one event; ValueError for what SQLite cannot hold (a time beyond 64 bits, text that is
    not Unicode)."""
    ts_ns = int(event.ts_ns)
    if not -(2**63) <= ts_ns < 2**63:
        raise ValueError(f"its time {ts_ns} ns does not fit in 64 bits")
    for text in (event.event_id, event.stream_id):
        str(text).encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
    return event.event_id, event.stream_id, ts_ns, time.time_ns(), event_to_json(event)


class Outbox:
    """SQLite outbox in front of a set of event outputs.

    path: database file (created with its folder; WAL journal). outputs: each needs a unique,
    stable `name` (the cursor is keyed by it, so renaming an output starts it afresh; `name:` in a webhook or
    MQTT entry keeps it when the URL or broker changes).
    backoff: retry delays for a failing output. batch_size: events read per query.
    keep_delivered_s: delivered events stay this long so that a repeated `event_id` is still
    recognised and ignored; larger remembers more, costs disk (a dead letter's event is never dropped). poll_s: how often an idle courier
    looks for events another process may have stored (events `put` here wake it at once).
    A new output starts at the newest stored event: it receives events stored from then on.
    """

    name = "outbox"

    def __init__(
        self,
        path: Path | str,
        outputs: Sequence[EventOutput],
        *,
        backoff: Backoff | None = None,
        batch_size: int = 64,
        keep_delivered_s: float = 24 * 3600.0,
        poll_s: float = 1.0,
    ):
        names = [o.name for o in outputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"event outputs need unique names; {duplicates} appear twice: give each its own `name:`")
        self.path = Path(path).expanduser()
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.batch_size = batch_size
        self.keep_delivered_s = keep_delivered_s
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._last_prune = time.monotonic()
        self._conn = self._open_database()
        try:  # the first reads of the events: where the file is damaged beyond its header, this says so
            cursors = [self._cursor_for(o.name) for o in outputs]
        except (OSError, sqlite3.Error) as exc:
            self._conn.close()
            raise self._unusable(exc) from exc
        self._couriers = [Courier(self, o, cursor) for o, cursor in zip(outputs, cursors)]
        self._started = False
        self.unencodable = 0

    def _open_database(self) -> sqlite3.Connection:
        conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path, "FULL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            raise self._unusable(exc) from exc
        return conn

    def _unusable(self, exc: OSError | sqlite3.Error) -> SinkError:
        """What to do about the database that raised `exc` as it was opened or first read."""
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            return SinkError(f"the outbox database {self.path} is damaged ({exc}): move it aside and start again (a "
                             "new one is made; the events it held that were not delivered cannot be read back)")
        # cannot open, read-only, locked: not the file's content
        return SinkError(f"cannot open the outbox database {self.path}: {exc}; check runtime.outbox_path is a "
                         "writable file")

    def _cursor_for(self, output: str) -> int:
        newest = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        self._conn.execute("INSERT OR IGNORE INTO cursors VALUES (?, ?)", (output, newest))
        return self._conn.execute("SELECT delivered_seq FROM cursors WHERE output = ?", (output,)).fetchone()[0]

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        """Start one courier thread per output; the stored backlog is delivered first."""
        if self._started:
            return
        self._started = True
        for courier in self._couriers:
            courier.thread.start()


    def add_output(self, output: EventOutput) -> None:
        """An output added while running: it starts where an output of its name left off (its cursor is
        kept in the database), or, new, at the newest stored event."""
        with self._lock:
            if any(c.output.name == output.name for c in self._couriers):
                raise ConfigError(f"event outputs need unique names; '{output.name}' is taken")
            courier = Courier(self, output, self._cursor_for(output.name))
            self._couriers = [*self._couriers, courier]
        if self._started:
            courier.thread.start()

    def remove_output(self, name: str, timeout: float = 5.0) -> None:
        """Stop delivering to one output and close it; its cursor stays, so what it had not taken waits on
        disk for an output of that name (`undelivered` counts it)."""
        with self._lock:
            courier = next((c for c in self._couriers if c.output.name == name), None)
            if courier is None:
                return
            self._couriers = [c for c in self._couriers if c is not courier]
        courier.stopping.set()
        courier.wake.set()
        if courier.thread.ident is not None:
            courier.thread.join(timeout)
        _close_output(courier.output)

    def undelivered(self, name: str) -> int:
        """Events stored after the cursor kept under `name`, whether an output of that name runs or was taken out:
        what one of that name would deliver first. 0 for a name the outbox never had. Those of an output taken out
        are dropped once older than keep_delivered_s and delivered by every output that runs."""
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM events, cursors WHERE output = ? AND seq > delivered_seq",
                                      (name,)).fetchone()[0]

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the couriers (undelivered events stay on disk), close the outputs and the database.

        Returns False when a courier was still inside a delivery after `timeout` seconds.
        """
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for courier in self._couriers:
            courier.stopping.set()
            courier.wake.set()
        for courier in self._couriers:
            if courier.thread.is_alive():
                courier.thread.join(max(0.0, deadline - time.monotonic()))
        joined = not any(c.thread.is_alive() for c in self._couriers)
        for courier in self._couriers:
            _close_output(courier.output)
        with self._lock:
            self._conn.close()
        return joined

    def __enter__(self) -> "Outbox":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- storing --------------------------------------------------------------------------------
    def put(self, events: Iterable[Event]) -> int:
        """Store events durably (one transaction, synced to disk) and wake the couriers.

        Events whose `event_id` is already stored are ignored. Returns how many were new.
        """
        rows = []
        for e in events:
            try:
                rows.append(_row(e))
            except (SinkError, TypeError, ValueError) as exc:  # one bad event must not take the others along
                self.unencodable += 1
                log.error("event %r of stream %r cannot be stored (not kept): %s", e.event_id, e.stream_id, exc)
        if not rows:
            return 0
        with self._lock:
            try:
                before = self._conn.total_changes
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT OR IGNORE INTO events (event_id, stream_id, ts_ns, stored_ns, body) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                self._conn.execute("COMMIT")
                added = self._conn.total_changes - before
            except Exception as exc:  # noqa: BLE001 - whatever failed, the transaction must not stay open
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise SinkError(f"cannot store {len(rows)} events in the outbox {self.path}: {exc}") from exc
            try:
                self._maybe_prune()
            except sqlite3.Error as exc:  # the events are stored; pruning is tried again later
                log.warning("outbox %s: dropping delivered events failed: %s", self.path, exc)
        for courier in self._couriers:
            courier.wake.set()
        return added

    def _maybe_prune(self) -> None:
        """Drop events every output has delivered and that are older than keep_delivered_s; with no output,
        every event older than that (lock held). A dead letter's event is kept: `dead_letters` joins it by seq."""
        if time.monotonic() - self._last_prune < min(60.0, self.keep_delivered_s):
            return
        self._last_prune = time.monotonic()
        names = [c.output.name for c in self._couriers]
        oldest = time.time_ns() - int(self.keep_delivered_s * 1e9)
        prunable = "stored_ns < ? AND seq NOT IN (SELECT seq FROM dead_letters)"
        if not names:  # every output was taken out: what waits for one is kept keep_delivered_s
            self._conn.execute(f"DELETE FROM events WHERE {prunable}", (oldest,))
            return
        marks = ",".join("?" * len(names))
        self._conn.execute(
            f"DELETE FROM events WHERE {prunable} AND seq <= "
            f"(SELECT MIN(delivered_seq) FROM cursors WHERE output IN ({marks}))",
            (oldest, *names),
        )

    def stats(self) -> dict[str, dict[str, int]]:
        """Per output: delivered and failed (attempts, this process), dead (given up), pending (on disk)."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for c in self._couriers:
                pending = self._conn.execute("SELECT COUNT(*) FROM events WHERE seq > ?", (c.cursor,)).fetchone()[0]
                out[c.output.name] = {"delivered": c.delivered, "failed": c.failed, "dead": c.dead, "pending": pending}
        return out

    def wait_delivered(self, timeout: float) -> bool:
        """Block until every output has no pending event (True) or `timeout` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if all(s["pending"] == 0 for s in self.stats().values()):
                return True
            if time.monotonic() >= deadline or self.stopping.is_set():
                return False
            time.sleep(0.02)
