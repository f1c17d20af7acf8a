"""The fleet's tables in PostgreSQL and every statement on them. All lease and heartbeat times are the
database's `now()`, so hosts whose clocks differ agree on when a lease ends.

    fleet_cameras    id, entry (the stream's keys as in YAML), revision (from a sequence), updated_at
    fleet_instances  name, capacity, normal_cap (capacity less headroom), weight, url, process (which start of
                     the instance writes the row), started_at, heartbeat_at, lanes (its pipeline's), lease_s (its own)
    fleet_leases     camera_id, instance, token (from a sequence: the fencing token), acquired_at, expires_at
    fleet_analytics  section (zones, lines, alerts), name, entry (its keys as in YAML), position (its place
                     in the list), updated_at; `fleet_analytics_version` the one number every change raises
                     (`pipeline.cluster.analytics`)
    fleet_handoffs   camera_id, from_instance, from_token, from_acquired_at, to_instance, to_token, reason
                     (takeover, rebalance, release; removed: the camera was deleted, no successor),
                     lease_ended_at, started_at, gap_s

A lease is valid while `expires_at > now()`. A camera changes hands in one transaction that locks its
`fleet_cameras` row (`FOR UPDATE SKIP LOCKED`: instances claiming at once skip each other's cameras
instead of waiting); the lease row keeps the camera's current token, a handoff row the end of every
earlier one (what fencing compares stored rows with, `pipeline.cluster.fencing`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

from pipeline.cluster.schema import SCHEMA
from pipeline.errors import ConfigError, PipelineError, first_line
from pipeline.masking import mask_url
from pipeline.sinks.storage.postgres import (_psycopg, connection_lost, dsn_problem, open_connection,
                                             storage_session)

SCHEMA_LOCK_KEY = 0x5EA7_0022
"""Serialises creating the tables between instances starting together."""
REBALANCE_LOCK_KEY = 0x5EA7_0023
"""Held while one camera moves for rebalancing: the fleet moves one camera at a time."""
HISTORY_DAYS = 30
"""Handoffs whose lease ended longer ago, and instances silent that long, are deleted (`prune`). Fencing vouches
for a row no lease of this process covers (an event delivered from an outbox after a restart) with the handoffs,
so such a row captured longer ago than this is refused."""


class FleetUnavailable(PipelineError):
    """The coordinating database cannot be reached right now (the coordinator retries each heartbeat)."""


class InstanceNameTaken(PipelineError):
    """Another running instance has this instance's name: both would write one heartbeat row and claim one share."""


@dataclass(frozen=True)
class Claimed:
    """A lease this instance just took: `reason` 'takeover' when it had expired in another's hands, else 'free'."""

    camera: str
    token: int
    reason: str


class FleetStore:
    """One autocommit connection with explicit transactions, reopened after a failure. idle_limit_s: the
    server ends a transaction of this connection that stays idle longer (an instance's: its lease time, so
    an instance frozen in the middle of one never holds the fleet's rows locked past its leases)."""

    def __init__(self, dsn: str, connect_timeout_s: float = 5.0, idle_limit_s: float = 60.0):
        self.dsn, self.target = dsn, mask_url(dsn)
        self.connect_timeout_s, self.idle_limit_s = connect_timeout_s, idle_limit_s
        self._pg = _psycopg()
        self._conn = None

    # -- connection ----------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect and create the fleet's tables; ConfigError for a DSN libpq cannot read, else FleetUnavailable."""
        pg = self._pg
        if why := dsn_problem(self.dsn):
            raise ConfigError(f"the fleet's PostgreSQL DSN: {why}")
        try:
            conn = open_connection(self.dsn, self.connect_timeout_s, statement_timeout_ms=10000,
                                   idle_limit_ms=round(self.idle_limit_s * 1000))
        except pg.OperationalError as exc:
            raise FleetUnavailable(f"cannot connect to the fleet's PostgreSQL '{self.target}': {first_line(exc)}; "
                                   "check runtime.cluster.dsn and that the server is up") from exc
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                conn.execute(SCHEMA)
        except pg.Error as exc:
            conn.close()
            raise FleetUnavailable(f"fleet PostgreSQL '{self.target}': cannot create the fleet tables: "
                                   f"{first_line(exc)}") from exc
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def tx(self, work: Callable, *, lock_key: int | None = None):
        """`work(cursor)` in one transaction (None, without running it, when `lock_key`'s advisory lock is
        held elsewhere); FleetUnavailable when the database cannot be reached or refuses."""
        pg = self._pg
        if self._conn is None or self._conn.closed:
            self.connect()
        conn = self._conn
        try:
            with conn.transaction(), conn.cursor() as cur:
                if lock_key is not None:
                    cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock_key,))
                    if not cur.fetchone()[0]:
                        return None
                return work(cur)
        except pg.Error as exc:
            if connection_lost(exc, conn):
                self.close()
                raise FleetUnavailable(f"fleet PostgreSQL '{self.target}' unavailable: {first_line(exc)}") from exc
            raise FleetUnavailable(f"fleet PostgreSQL '{self.target}' refused: {first_line(exc)}") from exc

    # -- cameras -------------------------------------------------------------------------------
    def put_cameras(self, entries: list[dict], then: Callable | None = None) -> None:
        """Insert or replace cameras by id (a new revision for each); `then(cursor)` in the same transaction
        (`fleet import` writes the file's zones, lines and rules with its cameras, or neither)."""
        sql = ("INSERT INTO fleet_cameras (id, entry, revision) VALUES (%s, %s, nextval('fleet_camera_revision')) "
               "ON CONFLICT (id) DO UPDATE SET entry = excluded.entry, revision = excluded.revision, updated_at = now()")

        def put(cur) -> None:
            if entries:
                cur.executemany(sql, [(e["id"], json.dumps(e)) for e in entries])
            if then is not None:
                then(cur)

        self.tx(put)

    def add_camera(self, entry: dict) -> bool:
        """Insert a camera unless one of its id exists (False then); one statement, so of two instances adding
        one id at once exactly one does."""
        def insert(cur) -> bool:
            cur.execute("INSERT INTO fleet_cameras (id, entry, revision) VALUES (%s, %s, nextval('fleet_camera_revision')) "
                        "ON CONFLICT (id) DO NOTHING RETURNING id", (entry["id"], json.dumps(entry)))
            return cur.fetchone() is not None

        return self.tx(insert)

    def change_camera(self, camera: str, change: Callable[[dict], dict]) -> bool:
        """Replace a camera's entry by `change(entry)` with its row locked, so two changes at once apply one
        after the other and neither is lost; False when there is no such camera (what `change` raises aborts)."""
        def update(cur) -> bool:
            cur.execute("SELECT entry FROM fleet_cameras WHERE id = %s FOR UPDATE", (camera,))
            row = cur.fetchone()
            if row is None:
                return False
            cur.execute("UPDATE fleet_cameras SET entry = %s, revision = nextval('fleet_camera_revision'), "
                        "updated_at = now() WHERE id = %s", (json.dumps(change(row[0])), camera))
            return True

        return self.tx(update)

    def delete_camera(self, camera: str) -> bool:
        """Forget a camera (its lease goes with it: the holder stops it at its next heartbeat). The lease's end
        is recorded as a 'removed' handoff, so the rows its holder captured before are still stored (fencing).
        ConfigError while a zone or line names it (as a config file's would be refused)."""
        def delete(cur) -> bool:
            cur.execute("SELECT 1 FROM fleet_cameras WHERE id = %s FOR UPDATE", (camera,))  # no claim meanwhile
            if cur.fetchone() is None:
                return False
            cur.execute("SELECT section || ' -> ' || name FROM fleet_analytics WHERE entry->'streams' ? %s "
                        "ORDER BY 1 FOR SHARE", (camera,))
            naming = [row[0] for row in cur.fetchall()]
            if naming:
                raise ConfigError(f"stream '{camera}' is named by {', '.join(naming)} (their `streams`); take it out "
                                  "of them first, then remove it")
            cur.execute("WITH gone AS (DELETE FROM fleet_leases WHERE camera_id = %s RETURNING instance, token, "
                        "acquired_at, expires_at) INSERT INTO fleet_handoffs (camera_id, from_instance, from_token, "
                        "from_acquired_at, reason, lease_ended_at) SELECT %s, instance, token, acquired_at, 'removed', "
                        "least(now(), expires_at) FROM gone", (camera, camera))
            cur.execute("DELETE FROM fleet_cameras WHERE id = %s", (camera,))
            return True

        return self.tx(delete)

    def cameras(self) -> dict[str, tuple[int, dict]]:
        """camera id -> (revision, entry)."""
        def read(cur):
            cur.execute("SELECT id, revision, entry FROM fleet_cameras")
            return {row[0]: (row[1], row[2]) for row in cur.fetchall()}

        return self.tx(read)

    # -- instances -----------------------------------------------------------------------------
    def heartbeat(self, name: str, process: str, capacity: int, normal_cap: int, weight: float, url: str | None,
                  lease_s: float, lanes: list[str] | None = None) -> None:
        """This instance is alive for `lease_s`. `process`: which start of it this is; InstanceNameTaken when another
        start, one that heartbeat within its lease, writes the row of this name (two instances given the same name)."""
        def write(cur) -> bool:
            cur.execute(
                "INSERT INTO fleet_instances (name, capacity, normal_cap, weight, url, process, lanes, lease_s) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "capacity = excluded.capacity, normal_cap = excluded.normal_cap, weight = excluded.weight, "
                "url = excluded.url, process = excluded.process, lanes = excluded.lanes, lease_s = excluded.lease_s, "
                "heartbeat_at = now(), started_at = CASE WHEN fleet_instances.process = excluded.process "
                "THEN fleet_instances.started_at ELSE now() END "
                "WHERE fleet_instances.process = excluded.process OR fleet_instances.heartbeat_at <= "
                "now() - make_interval(secs => coalesce(fleet_instances.lease_s, excluded.lease_s)) RETURNING name",
                (name, capacity, normal_cap, weight, url, process, lanes, lease_s))
            return cur.fetchone() is not None

        if not self.tx(write):
            raise InstanceNameTaken(
                f"another running instance of the fleet at '{self.target}' is named '{name}'; give each instance its "
                "own name (runtime.instance, run --instance or $STREAMWEAVE_INSTANCE; the default is the host name)")

    def members(self, lease_s: float) -> list[tuple[str, float, int, int, frozenset[str] | None]]:
        """(name, weight, normal_cap, capacity, lanes or None) of every instance that heartbeat within its own lease
        (`lease_s` for one of a version that did not write it), so every instance sees the same ones alive."""
        def read(cur):
            cur.execute("SELECT name, weight, normal_cap, capacity, lanes FROM fleet_instances "
                        "WHERE heartbeat_at > now() - make_interval(secs => coalesce(lease_s, %s)) ORDER BY name",
                        (lease_s,))
            return [(*row[:4], None if row[4] is None else frozenset(row[4])) for row in cur.fetchall()]

        return self.tx(read)

    # -- leases --------------------------------------------------------------------------------
    def renew(self, name: str, tokens: list[int], lease_s: float) -> set[int]:
        """Extend this instance's still valid leases among `tokens`; the tokens renewed (one missing was
        lost: expired, taken over, or its camera deleted). The rows are locked in camera order, as a storage
        write's fencing locks them: in the table's order the two deadlocked."""
        def renew(cur):
            cur.execute("WITH mine AS (SELECT camera_id FROM fleet_leases WHERE instance = %s AND token = ANY(%s) "
                        "AND expires_at > now() ORDER BY camera_id FOR NO KEY UPDATE) UPDATE fleet_leases l "
                        "SET expires_at = now() + make_interval(secs => %s) FROM mine "
                        "WHERE l.camera_id = mine.camera_id RETURNING l.token", (name, tokens, lease_s))
            return {row[0] for row in cur.fetchall()}

        return self.tx(renew) if tokens else set()

    def claim(self, name: str, cameras: list[str], limit: int, lease_s: float, *, expired: bool,
              lock_wait_s: float = 1.0) -> list[Claimed]:
        """Take up to `limit` of `cameras` whose lease expired (`expired`) or that have none, skipping those
        another instance is taking right now, and those whose lease row is locked elsewhere (a frozen holder's
        write) for longer than what is left of `lock_wait_s`, spent over all of them: the claim must not hold the
        heartbeat back; records each takeover, and completes each release, as a handoff."""
        if not cameras or limit <= 0:
            return []
        which = "l.expires_at <= now()" if expired else "l.camera_id IS NULL"

        def claim(cur) -> list[Claimed]:
            cur.execute(
                "SELECT c.id, l.instance, l.token, l.acquired_at, l.expires_at FROM fleet_cameras c "
                "LEFT JOIN fleet_leases l ON l.camera_id = c.id "
                f"WHERE c.id = ANY(%s) AND {which} ORDER BY c.id LIMIT %s FOR UPDATE OF c SKIP LOCKED", (cameras, limit))
            found = cur.fetchall()
            _end_frozen_copies(cur, {holder for _, holder, *_ in found if holder is not None})
            out, deadline = [], time.monotonic() + lock_wait_s
            for row in found:
                left_ms = max(1, round((deadline - time.monotonic()) * 1000))  # once spent, rows free now only
                try:
                    with cur.connection.transaction():  # a savepoint: a lease row locked elsewhere skips its camera
                        cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{left_ms}ms",))
                        taken = _take(cur, name, lease_s, *row)
                except _psycopg().errors.LockNotAvailable:
                    continue
                if taken is not None:
                    out.append(taken)
            return out

        return self.tx(claim)

    def release(self, name: str, camera: str, token: int, reason: str) -> bool:
        """End this instance's lease of `camera` now (after it stopped the camera) and record the handoff,
        to be completed by whoever claims it next."""
        return self.tx(lambda cur: _end_lease(cur, name, camera, token, reason, "now()"))

    def move_one(self, name: str, camera: str, token: int, stop: Callable[[], None], lease_s: float) -> bool:
        """Rebalancing: unless another camera is moving right now (the fleet-wide advisory lock, or a camera
        released for rebalancing within `lease_s` that nobody has claimed yet), `stop()` the camera here,
        then release its lease; the lease ends when the camera has stopped (`clock_timestamp()`, not the
        transaction's start). False: not now."""
        def move(cur) -> bool:
            cur.execute("SELECT count(*) FROM fleet_handoffs h JOIN fleet_cameras c ON c.id = h.camera_id "
                        "WHERE h.reason = 'rebalance' AND h.to_instance IS NULL "
                        "AND h.lease_ended_at > now() - make_interval(secs => %s)", (lease_s,))
            if cur.fetchone()[0]:
                return False
            # stopping the camera may outlast a lease, and until then this transaction holds no row another
            # instance waits on; ending the lease locks one, so the limit is back for that
            limit = "SELECT set_config('idle_in_transaction_session_timeout', %s, true)"
            cur.execute(limit, ("0",))
            stop()
            cur.execute(limit, (str(round(self.idle_limit_s * 1000)),))
            return _end_lease(cur, name, camera, token, "rebalance", "clock_timestamp()")

        return bool(self.tx(move, lock_key=REBALANCE_LOCK_KEY))

    def rooms(self, names: list[str]) -> dict[str, int]:
        """name -> how many more cameras each of these instances may claim: its capacity less its valid leases."""
        def read(cur) -> dict[str, int]:
            cur.execute("SELECT i.name, i.capacity - count(l.camera_id) FROM fleet_instances i "
                        "LEFT JOIN fleet_leases l ON l.instance = i.name AND l.expires_at > now() "
                        "WHERE i.name = ANY(%s) GROUP BY i.name", (names,))
            return dict(cur.fetchall())

        return self.tx(read)

    def prune(self, batch: int = 10000) -> int:
        """Delete up to `batch` handoffs and instances older than HISTORY_DAYS; how many went. Rows another
        transaction holds are skipped (left for a later prune), so this never waits on one."""
        def delete(cur) -> int:
            gone = 0
            for table, key, old in (("fleet_handoffs", "id", "lease_ended_at"), ("fleet_instances", "name", "heartbeat_at")):
                cur.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {old} < now() - "
                            f"make_interval(days => %s) LIMIT %s FOR UPDATE SKIP LOCKED)", (HISTORY_DAYS, batch))
                gone += cur.rowcount
            return gone

        return self.tx(delete)

    def leave(self, name: str, process: str) -> None:
        """A clean stop: this instance's row goes (its leases were released before), unless another start took it."""
        self.tx(lambda cur: cur.execute("DELETE FROM fleet_instances WHERE name = %s AND process = %s", (name, process)))

    # -- what the fleet looks like ---------------------------------------------------------------
    def state(self, handoffs: int = 50) -> dict:
        """Instances (with seconds since their heartbeat), cameras with their lease (holder, token, seconds
        to expiry; none: no instance runs it), and the latest handoffs with their gaps, as JSON values."""
        def read(cur) -> dict:
            cur.execute("SELECT name, capacity, normal_cap, weight, url, lanes, started_at, heartbeat_at, "
                        "extract(epoch FROM now() - heartbeat_at) FROM fleet_instances ORDER BY name")
            instances = [dict(name=n, capacity=c, normal_cap=nc, weight=w, url=u, lanes=lanes, started_at=s.isoformat(),
                              heartbeat_at=h.isoformat(), heartbeat_age_s=round(float(age), 3))
                         for n, c, nc, w, u, lanes, s, h, age in cur.fetchall()]
            cur.execute("SELECT c.id, l.instance, l.token, l.acquired_at, extract(epoch FROM l.expires_at - now()) "
                        "FROM fleet_cameras c LEFT JOIN fleet_leases l ON l.camera_id = c.id ORDER BY c.id")
            cameras = [dict(id=i, instance=holder, token=token, acquired_at=acquired and acquired.isoformat(),
                            expires_in_s=None if left is None else round(float(left), 3))
                       for i, holder, token, acquired, left in cur.fetchall()]
            cur.execute("SELECT camera_id, from_instance, from_token, to_instance, to_token, reason, lease_ended_at, "
                        "started_at, gap_s FROM fleet_handoffs ORDER BY id DESC LIMIT %s", (handoffs,))
            moves = [dict(camera=c, from_instance=fi, from_token=ft, to_instance=ti, to_token=tt, reason=r,
                          lease_ended_at=e.isoformat(), started_at=s and s.isoformat(), gap_s=g)
                     for c, fi, ft, ti, tt, r, e, s, g in cur.fetchall()]
            return {"instances": instances, "cameras": cameras, "handoffs": moves}

        return self.tx(read)


def _end_lease(cur, name: str, camera: str, token: int, reason: str, ended: str) -> bool:
    """Delete this instance's lease and record its end (`ended`: SQL for the moment) as an open handoff."""
    cur.execute("WITH gone AS (DELETE FROM fleet_leases WHERE camera_id = %s AND instance = %s AND token = %s "
                "RETURNING acquired_at) INSERT INTO fleet_handoffs (camera_id, from_instance, from_token, "
                f"from_acquired_at, reason, lease_ended_at) SELECT %s, %s, %s, acquired_at, %s, {ended} FROM gone",
                (camera, name, token, camera, name, token, reason))
    return cur.rowcount > 0


def _take(cur, name: str, lease_s: float, camera: str, holder, old_token, old_acquired, expired_at) -> Claimed | None:
    """Take one camera found free (`holder` None) or with an expired lease; None when another instance took it
    first: a claimer that committed between the finding statement's snapshot and its lock changed the lease, not
    the camera row, so the lease's own state decides."""
    cur.execute("SELECT nextval('fleet_lease_token')")
    token = cur.fetchone()[0]
    if holder is None:
        cur.execute("INSERT INTO fleet_leases VALUES (%s, %s, %s, now(), now() + make_interval(secs => %s)) "
                    "ON CONFLICT (camera_id) DO NOTHING", (camera, name, token, lease_s))
        if cur.rowcount == 0:
            return None
        cur.execute(  # the release that freed it, if one did: now it has a successor
            "UPDATE fleet_handoffs SET to_instance = %s, to_token = %s, started_at = now(), "
            "gap_s = extract(epoch FROM now() - lease_ended_at) WHERE id = (SELECT max(id) FROM "
            "fleet_handoffs WHERE camera_id = %s) AND to_instance IS NULL AND reason <> 'removed'",
            (name, token, camera))
        return Claimed(camera, token, "free")
    cur.execute("UPDATE fleet_leases SET instance = %s, token = %s, acquired_at = now(), "
                "expires_at = now() + make_interval(secs => %s) WHERE camera_id = %s AND token = %s "
                "AND expires_at <= now()", (name, token, lease_s, camera, old_token))
    if cur.rowcount == 0:
        return None
    cur.execute("INSERT INTO fleet_handoffs (camera_id, from_instance, from_token, from_acquired_at, "
                "to_instance, to_token, reason, lease_ended_at, started_at, gap_s) VALUES (%s, %s, %s, %s, "
                "%s, %s, 'takeover', %s, now(), extract(epoch FROM now() - %s))",
                (camera, holder, old_token, old_acquired, name, token, expired_at, expired_at))
    return Claimed(camera, token, "takeover")


def _end_frozen_copies(cur, holders: set[str]) -> None:
    """End the storage sessions of `holders` (whose leases expired) that wait in the middle of a statement for
    their client: a process frozen in its COPY, whose lease rows' locks would hold this takeover back until it
    resumes. PostgreSQL cancels no statement while it waits for the client's data, and the idle limit only ends
    idle transactions; terminating the session ends it. The write is retried, fenced, when the process resumes
    (a write of an instance still running whose lease expired may be ended too, and is retried the same way).
    Not permitted, or the sessions not visible (another database role without `pg_signal_backend` and
    `pg_read_all_stats`): nothing is ended, and the claim waits for the locks as before."""
    if not holders:
        return
    try:
        with cur.connection.transaction():
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ANY(%s) "
                        "AND state = 'active' AND wait_event = 'ClientRead' AND pid <> pg_backend_pid()",
                        ([storage_session(holder) for holder in sorted(holders)],))
    except _psycopg().errors.InsufficientPrivilege:
        return
