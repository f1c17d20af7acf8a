"""The writer thread behind every storage sink: a bounded queue, batched transactions, retries.

`BatchWriter` takes items (one per frame) from a bounded queue on its own thread and hands them to
`write(items)` once `batch_size` rows are waiting or the oldest has waited `flush_interval_s`.
When `write` raises `StorageUnavailable` (the database is down or restarting) the writer keeps the
batch and retries it with exponential backoff, taking nothing new meanwhile (the same `Batch`, its `id`
included: PostgreSQL, which cannot tell whether a lost connection's last COMMIT went through, finds the
batch by it and does not store it twice); memory stays bounded because the queue is: once it is full,
`put` blocks up to `put_timeout_s` (a slow database) and then raises `SinkError` (the sink router counts
it as that sink's failure for that frame). While the database is known to be down and the queue is full,
`put` raises at once: detection never waits on a database outage (the events themselves are kept by the outbox either way). A `SinkError` from
`write` means the rows themselves are bad: they are logged, counted as rejected and dropped. When a batch of several
frames is refused for its values (`RowsRefused`), its frames are written again one by one, so only the frames the
database refuses alone are dropped, not the other frames and cameras that shared their batch.

`StorageSink` is the `Sink` shared by SQLite and PostgreSQL; a `Backend` supplies the SQL side. Its
`events` table is filled from the durable outbox (`StoredEvents`, an event output of its own), not from the
frames: so it holds exactly the events the outbox holds, a crash included (see `StoredEvents`).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Callable, Protocol

from pipeline.backoff import Backoff
from pipeline.errors import EventRefused, SinkError
from pipeline.sinks.base import BaseSink
from pipeline.sinks.storage.rows import MergedRows, event_row, frame_rows, merge, run_row
from pipeline.masking import mask_url
from pipeline.types import Event, FrameResult, Run

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400 * 10**9


class RowsRefused(SinkError):
    """The database refused the rows' values (one it cannot hold), not the connection: writing them again fails."""


UNSENDABLE = (OverflowError, UnicodeError)
"""What a database driver raises for a value it cannot send (an integer beyond 64 bits, a lone surrogate)."""


class StorageUnavailable(SinkError):
    """The database cannot be reached right now; the writer keeps the rows and retries."""


class Batch(list):
    """The items of one `write` call. `id` (unique, made when the batch is formed) stays the same across the
    batch's retries: PostgreSQL stores it with the rows, so a retry of a batch whose COMMIT went through just as
    the connection was lost is recognised and not stored again."""

    __slots__ = ("id",)

    def __init__(self, items=()):
        super().__init__(items)
        self.id = uuid.uuid4().hex


class BatchWriter:
    """A named thread writing queued items in batches. Thread-safe `put`; `close` flushes everything.

    batch_size: rows per `write` call (items count `item.size` rows, default 1); larger batches
    write faster but hold more rows in memory. flush_interval_s: the longest an item waits.
    queue_size: items buffered before `put` blocks. maintenance: one step of a task (retention) run on the writer
    thread between batches, at start and every `maintenance_interval_s`; it returns True while the task has more
    to do, and its next step then runs after the next batch (at once when no frame is waiting), so a long task
    holds back the writes for one step at a time, never for all of it.
    """

    def __init__(
        self,
        name: str,
        write: Callable[[list], None],
        *,
        batch_size: int,
        flush_interval_s: float,
        queue_size: int = 4096,
        put_timeout_s: float = 5.0,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 5.0,
        maintenance: Callable[[], bool] | None = None,
        maintenance_interval_s: float = 3600.0,
    ):
        self.name = name
        self._write = write
        self.batch_size, self.flush_interval_s = batch_size, flush_interval_s
        self.put_timeout_s = put_timeout_s
        self._backoff = Backoff(backoff_min_s, backoff_max_s)
        self._maintenance, self._maintenance_interval_s = maintenance, maintenance_interval_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._put_lock = threading.Lock()
        self._closing = threading.Event()
        self._abandon = threading.Event()
        self._failure: BaseException | None = None
        self._unavailable = threading.Event()  # set while a batch is being retried
        self._thread = threading.Thread(target=self._run, name=f"storage:{name}", daemon=True)
        self.counters = dict(items_written=0, rows_written=0, batches=0, retries=0, rows_rejected=0, rows_lost=0,
                             put_timeouts=0)

    def start(self) -> None:
        self._thread.start()

    def put(self, item) -> None:
        """Queue `item`; blocks up to `put_timeout_s` while the queue is full, then raises `SinkError`."""
        with self._put_lock:
            if self._failure is not None:
                raise SinkError(f"{self.name}: writer stopped after an error: {self._failure}") from self._failure
            if self._closing.is_set():
                raise SinkError(f"{self.name}: put after close(); the sink no longer accepts frames")
            try:
                timeout = 0.0 if self._unavailable.is_set() else self.put_timeout_s
                self._queue.put(item, timeout=timeout) if timeout else self._queue.put_nowait(item)
            except queue.Full:
                self.counters["put_timeouts"] += 1
                raise SinkError(
                    f"{self.name}: {self._queue.maxsize} frames waiting (its output "
                    f"{'down' if self._unavailable.is_set() else 'slow'}); this frame's rows are not stored"
                ) from None

    def close(self, timeout: float = 30.0) -> bool:
        """Write everything queued, then stop. False when rows were still unwritten at `timeout` (they are lost)."""
        with self._put_lock:
            self._closing.set()
        if not self._thread.is_alive():
            return self._queue.empty() and self._failure is None
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join(max(1.0, self._backoff.max_s))
        return self.counters["rows_lost"] == 0 and self._failure is None and self._queue.empty()

    def stats(self) -> dict:
        """The counters, `backlog` (items waiting to be written) and whether the thread is alive."""
        return {**self.counters, "backlog": self._queue.qsize(), "alive": self._thread.is_alive()}

    def _run(self) -> None:
        batch = Batch()
        size, started = 0, 0.0
        next_maintenance = time.monotonic()
        more = False  # the maintenance task is part done
        try:
            while True:
                now = time.monotonic()
                if self._maintenance is not None and not batch and (more or now >= next_maintenance):
                    more = self._maintenance()
                    if not more:
                        next_maintenance = now + self._maintenance_interval_s
                if batch and (size >= self.batch_size or now - started >= self.flush_interval_s):
                    self._flush(batch, size)
                    batch, size = Batch(), 0
                    continue
                wait = self.flush_interval_s - (now - started) if batch else 0.0 if more else 0.1
                try:
                    item = self._queue.get(timeout=max(0.001, min(wait, 0.1)))
                except queue.Empty:
                    if self._closing.is_set() and self._queue.empty():
                        if batch:
                            self._flush(batch, size)
                        return
                    continue
                if not batch:
                    started = time.monotonic()
                batch.append(item)
                size += getattr(item, "size", 1)
        except Exception as exc:  # a bug, not a database outage: surface it through put() and close()
            self._failure = exc
            log.exception("%s: writer thread stopped; %d queued frames are not stored", self.name, self._queue.qsize())
            self.counters["rows_lost"] += size

    def _flush(self, batch: Batch, size: int) -> None:
        try:
            self._write_until_answered(batch, size)
        except RowsRefused as exc:
            if len(batch) == 1:
                self._reject(size, exc)
                return
            log.warning("%s: %d rows refused (%s); writing their %d frames one by one", self.name, size, exc,
                        len(batch))
            for item in batch:
                try:
                    self._write_until_answered(Batch([item]), getattr(item, "size", 1))
                except SinkError as refused:
                    self._reject(getattr(item, "size", 1), refused)
        except SinkError as exc:
            self._reject(size, exc)

    def _write_until_answered(self, batch: Batch, size: int) -> None:
        """`write(batch)`, retried while the database is unavailable, each outage logged as it starts and ends (until
        written, or abandoned at close: the rows are counted lost); the `SinkError` of a database refusing the rows."""
        self._backoff.reset()
        while True:
            try:
                self._write(batch)
            except StorageUnavailable as exc:
                self._unavailable.set()
                self.counters["retries"] += 1
                delay = self._backoff.next_delay()
                if self._backoff.attempt == 1 or self._backoff.ceiling() >= self._backoff.max_s:
                    log.warning("%s: %s; keeping %d rows, retrying in %.2f s", self.name, exc, size, delay)
                if self._abandon.wait(delay):
                    self.counters["rows_lost"] += size
                    log.error("%s: gave up at close: %d rows not stored (%s)", self.name, size, exc)
                    return
                continue
            except SinkError:
                self._unavailable.clear()
                raise
            self._unavailable.clear()
            if self._backoff.attempt:
                log.info("%s: writing again after %.1f s down (%d rows kept)", self.name, self._backoff.down_s(), size)
            self.counters["batches"] += 1
            self.counters["items_written"] += len(batch)
            self.counters["rows_written"] += size
            return

    def _reject(self, size: int, exc: SinkError) -> None:
        self.counters["rows_rejected"] += size
        log.error("%s: %d rows rejected and dropped: %s", self.name, size, exc)


class Backend(Protocol):
    """The database side of a `StorageSink`. All methods run on the writer thread except `connect`
    at `open()`. Connection problems raise `StorageUnavailable`; bad rows raise `SinkError`."""

    dialect: str
    target: str  # where the rows go, credentials masked, for messages
    transactions: int

    def connect(self) -> None: ...

    def write(self, rows: MergedRows) -> None:
        """All of `rows` in one transaction, or nothing; nothing either when batch `rows.batch` (not None) is
        stored already (a retry after a lost connection whose COMMIT went through)."""
        ...

    def delete_older_than(self, cutoff_wall_ns: int, limit: int) -> int:
        """Delete at most `limit` of the detections, track boxes, events and tracks last seen before
        `cutoff_wall_ns`, in one transaction; rows deleted (fewer than `limit`: none of them are left)."""
        ...

    def close(self) -> None: ...


class StoredEvents:
    """The `events` table as an event output: the outbox delivers each event here, one transaction each,
    through a connection of its own (opened at the first event). Delivery from the outbox is at least
    once and resumes after a crash where this output left off, and `event_id` is the table's key: the
    table ends up with exactly the outbox's events, each once, including those stored in the outbox just
    before a crash (which a write from the frames would have lost with the frames still queued)."""

    max_retries = None  # an unreachable database is retried until it takes the event: nothing is given up

    def __init__(self, backend: Backend, name: str):
        self.backend, self.name = backend, name
        self._connected = False

    def deliver(self, event: Event) -> None:
        if not self._connected:
            self.backend.connect()
            self._connected = True
        try:
            self.backend.write(MergedRows(events=[event_row(event)]))
        except RowsRefused as exc:
            raise EventRefused(f"event {event.event_id}: {exc}") from exc

    def close(self) -> None:
        self.backend.close()


class StorageSink(BaseSink):
    """A `Sink` that stores runs, streams and, as `config.what` says, detections or track boxes (with the tracks
    they extend) or neither, through a `Backend`; and events through `event_output` (its own connection,
    `events_backend`, fed by the outbox).

    `open()` records the run (`runs` row); `on_frame` converts the frame to rows and queues them (cheap;
    blocks only when the queue is full, see the module docstring). `close()` flushes every queued row,
    records the run's end (when this database stopped getting its rows) and raises `SinkError` if the
    database stayed unreachable for `close_timeout_s`. config: a SqliteStorage or PostgresStorage
    (batch_size, flush_interval_s, retention_days: rows whose host time (`wall_ns`) is older are deleted at
    start and every `retention_interval_s`, `retention_chunk_rows` (at least two batches) at a time between
    batches: a large backlog takes longer to delete, but frames keep being written meanwhile; a pass left part
    done at `close()` goes on at the next start).
    """

    def __init__(
        self,
        backend: Backend,
        config,
        class_names: list[str],
        run: Run,
        events_backend: Backend,
        *,
        queue_size: int = 4096,
        put_timeout_s: float = 5.0,
        retention_interval_s: float = 3600.0,
        retention_chunk_rows: int = 10_000,
        close_timeout_s: float = 30.0,
    ):
        self.name = config.outbox_name
        self.backend = backend
        self.event_output = StoredEvents(events_backend, self.name)
        self.class_names = list(class_names)
        self.what = config.what
        self.run = run
        self.retention_days = config.retention_days
        self.close_timeout_s = close_timeout_s
        self._urls: dict[str, str] = {}  # stream id -> masked url, from its start to its end
        self.retention_chunk_rows = max(retention_chunk_rows, 2 * config.batch_size)  # one step a batch outpaces them
        self.rows_deleted = 0
        self.retention_passes = 0  # retention passes finished
        self._retention_cutoff: int | None = None  # host time (ns) the pass in progress deletes before
        self._pass_deleted = 0  # rows the pass in progress deleted
        self._writer = BatchWriter(
            self.name,
            self._write,
            batch_size=config.batch_size,
            flush_interval_s=config.flush_interval_s,
            queue_size=queue_size,
            put_timeout_s=put_timeout_s,
            maintenance=self._apply_retention if config.retention_days is not None else None,
            maintenance_interval_s=retention_interval_s,
        )

    def open(self) -> None:
        """Connect, create (or upgrade) the schema, record the run and start the writer; raises `SinkError`
        if it cannot."""
        self.backend.connect()
        self.backend.write(MergedRows(runs=[run_row(self.run)]))
        self._writer.start()

    def on_stream_start(self, stream_id: str, url: str) -> None:
        self._urls[stream_id] = mask_url(url)

    def needs_picture(self, result: FrameResult) -> bool:
        return False

    def on_frame(self, result: FrameResult) -> None:
        rows = frame_rows(result, self.class_names, self.what)
        rows.url = self._urls.get(rows.stream_id)
        self._writer.put(rows)

    def on_stream_end(self, stream_id: str) -> None:
        """Its frames carry its url: a camera removed for good leaves nothing here (rows are flushed later)."""
        self._urls.pop(stream_id, None)

    def close(self) -> None:
        drained = self._writer.close(self.close_timeout_s)
        if drained:  # else the database is unreachable, and the writer may still hold the connection
            self._record_end()
        self.backend.close()
        if not drained:
            raise SinkError(
                f"{self.name}: {self._writer.counters['rows_lost']} rows could not be stored before close "
                f"(database unreachable for {self.close_timeout_s:g} s); see the log for the cause"
            )

    def stats(self) -> dict:
        """Writer counters (`backlog`: frames waiting for the database) plus `transactions` (committed),
        `rows_deleted` (retention) and `retention_passes` (retention passes finished)."""
        return {**self._writer.stats(), "transactions": self.backend.transactions, "rows_deleted": self.rows_deleted,
                "retention_passes": self.retention_passes}

    def _record_end(self) -> None:
        try:
            self.backend.write(MergedRows(runs=[run_row(self.run, time.time_ns())]))
        except SinkError as exc:
            log.warning("%s: the end of run %s is not recorded: %s", self.name, self.run.run_id, exc)

    def _write(self, frames: list) -> None:
        rows = merge(frames, {})
        rows.batch = getattr(frames, "id", None)  # the same on every retry of this batch
        rows.runs.append(run_row(self.run))  # the run goes on: clears the end a sink replaced meanwhile recorded
        self.backend.write(rows)

    def _apply_retention(self) -> bool:
        """One step of a retention pass: at most `retention_chunk_rows` rows deleted; True while the pass has more."""
        if self._retention_cutoff is None:
            self._retention_cutoff = time.time_ns() - int(self.retention_days * NS_PER_DAY)
        try:
            deleted = self.backend.delete_older_than(self._retention_cutoff, self.retention_chunk_rows)
        except SinkError as exc:  # unavailable or refused: the rows stay until the next pass
            log.warning("%s: retention skipped this time: %s", self.name, exc)
            self._retention_cutoff, self._pass_deleted = None, 0
            return False
        self.rows_deleted += deleted
        self._pass_deleted += deleted
        if deleted >= self.retention_chunk_rows:
            return True
        if self._pass_deleted:
            log.info("%s: retention deleted %d rows older than %g days", self.name, self._pass_deleted,
                     self.retention_days)
        self._retention_cutoff, self._pass_deleted = None, 0
        self.retention_passes += 1
        return False
