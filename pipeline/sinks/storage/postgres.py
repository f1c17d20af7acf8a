"""PostgreSQL storage for fleets: the same schema as SQLite, written through psycopg 3.

A lost connection (server restart, network), or a server that does not take writes for now (read-only, shutting
down, a privilege revoked), raises `StorageUnavailable`; the writer keeps the batch and retries, reconnecting here
on the next attempt, so a restart loses no rows. Nor does it double any: when
the connection drops after COMMIT reached the server, the batch is stored but the writer cannot know it; each
batch's id goes into `stored_batches` in the batch's own transaction, and a retry that finds it there writes
nothing (ids are kept a day, `schema.STORED_BATCHES_KEPT_S`). Only rows the server refuses for their values
(`rows_at_fault`) are dropped. The password belongs
in PGPASSWORD or ~/.pgpass; the DSN is masked wherever it is shown.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time

from pipeline.config.outputs import PostgresStorage
from pipeline.errors import SinkError, first_line
from pipeline.sinks.storage.rows import MergedRows, fold
from pipeline.masking import mask_url
from pipeline.sinks.storage.schema import DETECTION_COLUMNS, TRACK_BOX_COLUMNS, create_or_upgrade, statements
from pipeline.sinks.storage.writer import UNSENDABLE, RowsRefused, StorageSink, StorageUnavailable
from pipeline.types import Run

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0
"""How often a backend deletes the ids of batches stored more than a day ago (in a batch's transaction)."""

# Serialises creating or upgrading the schema between pipelines starting together (it races otherwise).
_SCHEMA_LOCK_KEY = 0x5EA7_0001


def _psycopg():
    try:
        import psycopg  # noqa: PLC0415 - optional dependency, only for this sink
    except ImportError as exc:
        raise SinkError(
            "PostgreSQL storage needs psycopg 3: pip install 'streamweave[postgres]'"
        ) from exc
    return psycopg


def connection_lost(exc: Exception, conn) -> bool:
    """Whether `exc` (a psycopg error on `conn`) means the session is gone: the server unreachable or restarting,
    or the server ended it (a transaction left idle past `idle_limit_ms` comes back as an InternalError)."""
    pg = _psycopg()
    return isinstance(exc, (pg.OperationalError, pg.InterfaceError)) or conn.broken


SERVER_STATE_CLASSES = ("08", "25", "40", "53", "55", "57", "58")
"""SQLSTATE classes of errors that are the server's state for now, not the rows' fault: connection, read-only
transaction (a standby after a failover, a full managed disk), rollback (deadlock), insufficient resources, lock
not available, operator intervention (shutting down, a statement timeout) and system (I/O) errors."""
INSUFFICIENT_PRIVILEGE = "42501"  # a privilege revoked for now


def rows_at_fault(exc: Exception) -> bool:
    """Whether `exc` (a psycopg error, or one raised sending a value) refuses the rows, so that writing them again
    fails too: a value the column cannot hold, a constraint they break, a column or table that is not there (a
    schema another version changed). The server's state for now (`SERVER_STATE_CLASSES`, a privilege) is not:
    the rows are kept and written again."""
    state = getattr(exc, "sqlstate", None) or ""
    return not (state[:2] in SERVER_STATE_CLASSES or state == INSUFFICIENT_PRIVILEGE)


_UNPAIRED_WORD = re.compile(r'missing "=" after "[^"]*"')
_UNDECODED = re.compile(r'(?:invalid percent-encoded token|forbidden value %00 in percent-encoded value): "[^"]*"')


def dsn_problem(dsn: str) -> str | None:
    """Why libpq cannot read `dsn` (no scheme, an unknown option), or None. Said without the DSN, which libpq's own
    message repeats, password included, where masking cannot find it (`user:password@host` with no scheme)."""
    pg = _psycopg()
    try:
        pg.conninfo.conninfo_to_dict(dsn)
    except pg.ProgrammingError as exc:
        # the word libpq quotes after a space may be the rest of a password: not named
        why = _UNPAIRED_WORD.sub("missing \"=\" after a word (a value holding spaces must be quoted: "
                                 "password='a b c')", first_line(exc).replace(dsn, "..."))
        # and the part of a URL it could not percent-decode may be the password itself
        why = _UNDECODED.sub('a part of the URL is not percent-encoded (write "%" as %25)', why)
        return (f"not a DSN libpq can read ({why}); write postgresql://user@host/db or libpq's key=value form "
                "(host=... dbname=...)")
    return None


def open_connection(dsn: str, connect_timeout_s: float, statement_timeout_ms: int, idle_limit_ms: int,
                    application_name: str = "streamweave"):
    """An autocommit psycopg connection with bounded waits: on a half-open connection no statement or socket
    read blocks forever, and a transaction left idle past `idle_limit_ms` (its process frozen: SIGSTOP, a
    long pause of the VM) is ended by the server, so the locks it holds do not stop the other instances.
    psycopg.OperationalError when the server cannot be reached."""
    options = f"-c statement_timeout={statement_timeout_ms} -c idle_in_transaction_session_timeout={idle_limit_ms}"
    return _psycopg().connect(dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout_s)),
                              options=options, application_name=application_name, keepalives=1, keepalives_idle=10,
                              keepalives_interval=5, keepalives_count=3, tcp_user_timeout=60000)


def storage_session(instance: str) -> str:
    """The `application_name` of a fleet instance's storage connection (a takeover looks for it): a digest of the
    name, as the server keeps 63 bytes of printable ASCII and names may be longer or not ASCII."""
    return f"streamweave storage {hashlib.sha256(instance.encode()).hexdigest()[:32]}"


class PostgresBackend:
    """One autocommit connection with explicit transactions, reopened after a failure."""

    dialect = "postgres"

    def __init__(self, dsn: str, connect_timeout_s: float = 5.0, fence=None):
        self.dsn = dsn
        self.fence = fence  # in a fleet: `pipeline.cluster.fencing.Fence`, which drops rows of lost leases
        self.target = mask_url(dsn)
        self.connect_timeout_s = connect_timeout_s
        self.transactions = 0
        self.reconnects = 0
        self.batches_found_stored = 0  # retries of a batch whose earlier COMMIT went through (its answer lost)
        self._next_prune = 0.0  # time.monotonic() of the next delete of old batch ids
        self._sql = statements("postgres")
        self._pg = _psycopg()
        self._conn = None

    def connect(self) -> None:
        """Connect and create the schema; `StorageUnavailable` when the server cannot be reached or does not take
        writes now, `SinkError` for a DSN libpq cannot parse or a database that is not streamweave's."""
        pg = self._pg
        if why := dsn_problem(self.dsn):
            raise SinkError(f"PostgreSQL DSN: {why}")
        try:
            fence = self.fence
            conn = open_connection(self.dsn, self.connect_timeout_s, statement_timeout_ms=60000,
                                   idle_limit_ms=60000 if fence is None else round(fence.lease_s * 1000),
                                   application_name="streamweave storage" if fence is None else
                                   storage_session(fence.instance))
        except pg.OperationalError as exc:
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL '{self.target}': {first_line(exc)}; "
                "check the server is up and the DSN (password in PGPASSWORD)"
            ) from exc
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                create_or_upgrade(conn, self._sql, f"PostgreSQL '{self.target}'")
        except SinkError:
            conn.close()
            raise
        except pg.errors.DependentObjectsStillExist as exc:  # upgrading views that views of the user's own read
            conn.close()
            raise SinkError(f"PostgreSQL '{self.target}': cannot upgrade its views to this version: {first_line(exc)}"
                            f" ({exc.diag.message_detail or 'views of your own read them'}); drop those views, start "
                            "once to upgrade the database, then create them again") from exc
        except pg.Error as exc:  # the server's state (no rows are written here): retried, as for rows
            lost = connection_lost(exc, conn)
            conn.close()
            if not lost and rows_at_fault(exc):
                raise SinkError(f"PostgreSQL '{self.target}': cannot create or check the schema: "
                                f"{first_line(exc)}") from exc
            raise StorageUnavailable(
                f"PostgreSQL '{self.target}' lost while creating the schema: {first_line(exc)}" if lost else
                f"PostgreSQL '{self.target}': cannot create or check the schema: {first_line(exc)}; "
                "the server must accept writes and the user needs CREATE on the database"
            ) from exc
        self._conn = conn

    def write(self, rows: MergedRows) -> None:
        fence = self.fence
        prune = rows.batch is not None and time.monotonic() >= self._next_prune
        found: list[bool] = []

        def work(cur) -> None:
            found.clear()
            if rows.batch is not None:
                if prune:
                    cur.execute(self._sql.prune_batches)
                # Waits for a transaction still holding the id (an earlier attempt the server has not ended yet).
                cur.execute(self._sql.claim_batch, (rows.batch,))
                if cur.rowcount == 0:  # an earlier attempt committed it; its answer was lost with the connection
                    found.append(True)
                    return
            self._insert(cur, fold(rows if fence is None else fence.filter(cur, rows)))

        self._run(work, f"{len(rows.detections) + len(rows.track_boxes)} rows")
        if prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
        self.transactions += 1  # found: the earlier attempt's commit, which went uncounted
        if found:
            self.batches_found_stored += 1
            log.warning("PostgreSQL '%s': batch %s was stored by an earlier attempt whose answer was lost; "
                        "not written again", self.target, rows.batch)

    def delete_older_than(self, cutoff_wall_ns: int, limit: int) -> int:
        counts: list[int] = []

        def delete(cur) -> None:
            for sql in self._sql.retention:
                if sum(counts) < limit:
                    cur.execute(sql, (cutoff_wall_ns, limit - sum(counts)))
                    counts.append(cur.rowcount)

        self._run(delete, "retention")
        return sum(counts)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _insert(self, cur, rows: MergedRows) -> None:
        # COPY moves rows several times faster than INSERTs; the upserts need INSERT.
        for table, columns, values in (("detections", DETECTION_COLUMNS, rows.detections),
                                       ("track_boxes", TRACK_BOX_COLUMNS, rows.track_boxes)):
            if values:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in values:
                        copy.write_row(row)
        for sql, params in (
            (self._sql.upsert_track, rows.tracks),
            (self._sql.insert_event, rows.events),
            (self._sql.upsert_stream, rows.streams),
            (self._sql.upsert_run, rows.runs),
        ):
            if params:
                cur.executemany(sql, params)

    def _run(self, work, what: str) -> None:
        """`work(cursor)` in one transaction; reconnect first if the last attempt lost the connection."""
        pg = self._pg
        if self._conn is None or self._conn.closed:
            self.reconnects += 1
            self.connect()
        conn = self._conn
        try:
            with conn.transaction(), conn.cursor() as cur:
                work(cur)
        except (pg.Error, *UNSENDABLE) as exc:
            if isinstance(exc, pg.Error) and connection_lost(exc, conn):
                self.close()
                raise StorageUnavailable(f"PostgreSQL '{self.target}' unavailable: {first_line(exc)}") from exc
            refused = RowsRefused if rows_at_fault(exc) else StorageUnavailable  # the latter kept and retried
            raise refused(f"PostgreSQL '{self.target}' refused {what}: {first_line(exc)}") from exc


class PostgresSink(StorageSink):
    """Stores a run's detections or track boxes, tracks and events in PostgreSQL (see `StorageSink`).

    `open()` raises `SinkError` when the server cannot be reached at start (a wrong DSN fails fast);
    after that, outages are retried without losing rows. fence: in a fleet, what refuses the rows of
    cameras whose lease this instance lost (`pipeline.cluster.fencing`), in the write's own transaction.
    """

    def __init__(self, config: PostgresStorage, class_names: list[str], run: Run, fence=None, **options):
        super().__init__(PostgresBackend(config.dsn, fence=fence), config, class_names, run,
                         PostgresBackend(config.dsn, fence=fence), **options)
