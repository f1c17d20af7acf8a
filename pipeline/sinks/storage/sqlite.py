"""SQLite storage: zero set-up, one file, WAL mode so readers never block the writer."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from pipeline.config.outputs import SqliteStorage
from pipeline.errors import SinkError
from pipeline.sinks.storage.rows import MergedRows, fold
from pipeline.sinks.storage.schema import create_or_upgrade, statements
from pipeline.sinks.storage.writer import UNSENDABLE, RowsRefused, StorageSink, StorageUnavailable
from pipeline.types import Run

# "database is locked" / "disk I/O error" pass; a constraint or type error will not.
_TRANSIENT = (sqlite3.OperationalError,)
# The rows' values at fault (NULL or NaN where a value is required, an integer beyond 64 bits): a retry fails too.
_ROWS_AT_FAULT = (sqlite3.DataError, sqlite3.IntegrityError, *UNSENDABLE)


class SqliteBackend:
    """One connection, used by `open()` and then only by the writer thread.

    synchronous=NORMAL with WAL keeps every committed transaction across a process crash (only a
    power loss may lose the last ones) at a fraction of FULL's fsyncs.
    """

    dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout_s: float = 5.0):
        self.path = Path(path).expanduser()
        self.target = str(self.path)
        self.busy_timeout_s = busy_timeout_s
        self.transactions = 0
        self._sql = statements("sqlite")
        self._conn: sqlite3.Connection | None = None

    def connect(self) -> None:
        conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=NORMAL")
            with _transaction(conn):
                create_or_upgrade(conn, self._sql, f"SQLite storage '{self.path}'")
        except SinkError:
            conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            if getattr(exc, "sqlite_errorname", None) == "SQLITE_NOTADB":
                raise SinkError(f"SQLite storage '{self.path}': the file there is not a SQLite database; "
                                "choose another path") from exc
            raise SinkError(
                f"cannot open SQLite storage '{self.path}': {exc}; check the directory exists and is writable"
            ) from exc
        if mode.lower() != "wal":
            raise SinkError(f"SQLite storage '{self.path}': WAL mode refused (got '{mode}'); use a local disk")
        self._conn = conn

    def write(self, rows: MergedRows) -> None:
        conn, rows = self._require(), fold(rows)
        try:
            with _transaction(conn):
                conn.executemany(self._sql.insert_detection, rows.detections)
                conn.executemany(self._sql.insert_track_box, rows.track_boxes)
                conn.executemany(self._sql.upsert_track, rows.tracks)
                conn.executemany(self._sql.insert_event, rows.events)
                conn.executemany(self._sql.upsert_stream, rows.streams)
                conn.executemany(self._sql.upsert_run, rows.runs)
        except _TRANSIENT as exc:
            raise StorageUnavailable(f"SQLite '{self.path}' busy or unavailable: {exc}") from exc
        except (sqlite3.Error, *UNSENDABLE) as exc:
            count = len(rows.detections) + len(rows.track_boxes)
            refused = RowsRefused if isinstance(exc, _ROWS_AT_FAULT) else SinkError
            raise refused(f"SQLite '{self.path}' refused {count} rows: {exc}") from exc
        self.transactions += 1

    def delete_older_than(self, cutoff_wall_ns: int, limit: int) -> int:
        conn = self._require()
        deleted = 0
        try:
            with _transaction(conn):
                for sql in self._sql.retention:
                    if deleted < limit:
                        deleted += conn.execute(sql, (cutoff_wall_ns, limit - deleted)).rowcount
        except _TRANSIENT as exc:
            raise StorageUnavailable(f"SQLite '{self.path}' busy during retention: {exc}") from exc
        return deleted

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SinkError(f"SQLite storage '{self.path}' is not open; call open() first")
        return self._conn


class _transaction:
    """BEGIN ... COMMIT, or ROLLBACK when the block raises (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        return False


class SqliteSink(StorageSink):
    """Stores a run's detections or track boxes, tracks and events in a SQLite file (see `StorageSink`)."""

    def __init__(self, config: SqliteStorage, class_names: list[str], run: Run, **options):
        super().__init__(SqliteBackend(config.path), config, class_names, run, SqliteBackend(config.path), **options)
