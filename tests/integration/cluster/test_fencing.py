"""Fencing against a real PostgreSQL: a storage write keeps the rows captured while their lease was valid and
refuses, counts and logs those captured after it ended; a writer frozen inside its transaction holds no
takeover back past its lease."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import psycopg
import pytest

from pipeline.cluster.fencing import Fence, LeaseBook
from pipeline.cluster.store import FleetStore
from pipeline.sinks.storage.postgres import PostgresBackend
from pipeline.sinks.storage.rows import FrameRows, MergedRows, merge
from pipeline.sinks.storage.writer import StorageUnavailable
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures
from tests.support.waiting import wait_until

S = 10**9


def detection(camera: str, wall_ns: int) -> tuple:
    return ("run-x", camera, 0, 0, wall_ns, 0, "person", 0.9, 0.0, 0.0, 8.0, 8.0, -1, 0, 0)


def stored(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT stream_id, wall_ns FROM detections ORDER BY wall_ns").fetchall()


@pytest.fixture
def fleet(postgres_dsn):
    store = FleetStore(postgres_dsn)
    store.connect()
    store.put_cameras([{"id": "cam-1", "url": "rtsp://h/1"}, {"id": "cam-2", "url": "rtsp://h/2"}])
    yield store
    store.close()


def test_rows_captured_after_the_lease_ended_are_refused_and_counted(fleet, postgres_dsn, caplog):
    book = LeaseBook()
    fence = Fence(book, "x", 30.0)
    backend = PostgresBackend(postgres_dsn, fence=fence)
    backend.connect()
    [claim] = fleet.claim("x", ["cam-1"], 1, 30.0, expired=False)
    taken = time.time_ns() - 5 * S  # as if taken 5 s ago: the lease is made to end before now below
    book.took("cam-1", claim.token, taken)
    backend.write(MergedRows(detections=[detection("cam-1", taken + S), detection("cam-2", taken + S)]))
    assert stored(postgres_dsn) == [("cam-1", taken + S)]  # cam-2: never leased here

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # x pauses; its lease runs out; y takes over
        conn.execute("UPDATE fleet_leases SET expires_at = now() - interval '1 second'")
        ended = int(conn.execute("SELECT extract(epoch FROM expires_at)::numeric * 1e9 FROM fleet_leases")
                    .fetchone()[0])
    assert [c.reason for c in fleet.claim("y", ["cam-1"], 1, 30.0, expired=True)] == ["takeover"]

    before, after = ended - S // 10, ended + S // 10
    backend.write(MergedRows(detections=[detection("cam-1", before), detection("cam-1", after)]))
    assert stored(postgres_dsn) == sorted([("cam-1", taken + S), ("cam-1", before)], key=lambda row: row[1])
    assert fence.stats.rows_refused == 2 and fence.stats.by_camera == {"cam-1": 1, "cam-2": 1}
    assert "refused 1 rows of cam-1" in caplog.text
    backend.close()


def _holding_cam_1(fleet, postgres_dsn):
    """x holds cam-1's lease and its storage writes through a fence: (fence, backend, claim)."""
    book = LeaseBook()
    fence = Fence(book, "x", 30.0)
    backend = PostgresBackend(postgres_dsn, fence=fence)
    backend.connect()
    [claim] = fleet.claim("x", ["cam-1"], 1, 30.0, expired=False)
    book.took("cam-1", claim.token, time.time_ns())
    return fence, backend, claim


def test_a_released_lease_allows_what_was_captured_before_the_release(fleet, postgres_dsn):
    fence, backend, claim = _holding_cam_1(fleet, postgres_dsn)
    captured = time.time_ns()
    assert fleet.release("x", "cam-1", claim.token, "release")
    backend.write(MergedRows(detections=[detection("cam-1", captured), detection("cam-1", time.time_ns() + S)]))
    assert stored(postgres_dsn) == [("cam-1", captured)] and fence.stats.rows_refused == 1
    backend.close()


def test_after_a_restart_rows_of_an_earlier_lease_are_checked_against_the_database(fleet, postgres_dsn):
    [claim] = fleet.claim("x", ["cam-1"], 1, 30.0, expired=False)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # x was killed; its lease ran out; y took over
        conn.execute("UPDATE fleet_leases SET acquired_at = now() - interval '10 seconds'")
        acquired = int(conn.execute("SELECT extract(epoch FROM acquired_at)::numeric * 1e9 FROM fleet_leases")
                       .fetchone()[0])
        conn.execute("UPDATE fleet_leases SET expires_at = now() - interval '1 second'")
        ended = int(conn.execute("SELECT extract(epoch FROM expires_at)::numeric * 1e9 FROM fleet_leases")
                    .fetchone()[0])
    assert fleet.claim("y", ["cam-1"], 1, 30.0, expired=True)
    restarted = Fence(LeaseBook(), "x", 30.0)  # a new process of x: it knows no tokens; its outbox replays events
    backend = PostgresBackend(postgres_dsn, fence=restarted)
    backend.connect()
    backend.write(MergedRows(detections=[detection("cam-1", acquired - S), detection("cam-1", (acquired + ended) // 2),
                                         detection("cam-1", ended + S // 10)]))
    assert stored(postgres_dsn) == [("cam-1", (acquired + ended) // 2)] and restarted.stats.rows_refused == 2
    backend.close()


@pytest.mark.parametrize("forgotten", [False, True])
def test_rows_captured_before_their_camera_was_deleted_are_stored_and_those_after_refused(fleet, postgres_dsn,
                                                                                         forgotten):
    """forgotten: x's heartbeat has seen the deletion, and its lease book forgot the camera, before the rows came."""
    fence, backend, claim = _holding_cam_1(fleet, postgres_dsn)
    captured = time.time_ns()
    assert fleet.delete_camera("cam-1")  # x still has rows of cam-1 buffered for storage
    if forgotten:
        fence.book.keep(fleet.cameras())
    backend.write(MergedRows(detections=[detection("cam-1", captured), detection("cam-1", time.time_ns() + S)]))
    assert stored(postgres_dsn) == [("cam-1", captured)] and fence.stats.rows_refused == 1
    fleet.put_cameras([{"id": "cam-1", "url": "rtsp://h/1"}])  # added again: a new camera, not a handoff's successor
    assert [c.reason for c in fleet.claim("y", ["cam-1"], 1, 30.0, expired=False)] == ["free"]
    handoffs = fleet.state()["handoffs"]
    assert [(h["reason"], h["from_token"], h["to_instance"]) for h in handoffs] == [("removed", claim.token, None)]
    assert not fleet.delete_camera("cam-9")
    backend.close()


def test_a_track_seen_before_and_after_its_camera_was_deleted_keeps_what_it_had_before(fleet, postgres_dsn):
    """The holder runs a deleted camera until its next heartbeat, so a storage batch spans the deletion: what its
    frames before it add to their tracks and to the stream is stored with their detections, the rest refused."""
    fence, backend, _ = _holding_cam_1(fleet, postgres_dsn)
    before = time.time_ns()
    assert fleet.delete_camera("cam-1")
    after = time.time_ns() + S
    frames = [FrameRows("run-x", "cam-1", wall, [detection("cam-1", wall)], [], {7: [0, pts, pts, 1, wall]})
              for pts, wall in ((10, before), (20, after))]
    backend.write(merge(frames, {}))
    assert stored(postgres_dsn) == [("cam-1", before)]
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT track_id, frames, last_pts_ns, last_wall_ns FROM tracks").fetchall() == [
            (7, 1, 10, before)]
        assert conn.execute("SELECT stream_id, first_seen_ns, last_seen_ns FROM streams").fetchall() == [
            ("cam-1", before, before)]
    backend.close()


class FrozenWriter(Fence):
    """A writer whose process freezes (SIGSTOP, a paused VM) in its first write, after it locked its lease rows,
    until `thaw` is set: `after_locking`, between statements (to the server, its transaction sits idle holding the
    locks); otherwise in the middle of its COPY (to the server, a statement still running)."""

    def __init__(self, *args, after_locking: bool):
        super().__init__(*args)
        self.after_locking = after_locking
        self.frozen, self.thaw = threading.Event(), threading.Event()

    def filter(self, cur, rows):
        kept = super().filter(cur, rows)
        if self.frozen.is_set():
            return kept
        if self.after_locking:
            self._freeze()
            return kept
        return replace(kept, detections=_FreezingRows(kept.detections, self._freeze))

    def _freeze(self):
        self.frozen.set()
        self.thaw.wait(60)


class _FreezingRows(list):
    """Rows whose iteration (the COPY writing them) stops after the first, in `freeze()`."""

    def __init__(self, rows, freeze):
        super().__init__(rows)
        self.freeze = freeze

    def __iter__(self):
        for i, row in enumerate(list.__iter__(self)):
            if i == 1:
                self.freeze()
            yield row


@pytest.mark.parametrize("after_locking", [True, False], ids=["between statements", "in its COPY"])
def test_a_writer_frozen_inside_its_transaction_holds_a_takeover_back_no_longer_than_its_lease(fleet, postgres_dsn,
                                                                                                after_locking):
    lease_s = 1.0
    fence = FrozenWriter(LeaseBook(), "x", lease_s, after_locking=after_locking)
    backend = PostgresBackend(postgres_dsn, fence=fence)
    backend.connect()
    [claim] = fleet.claim("x", ["cam-1"], 1, lease_s, expired=False)
    fence.book.took("cam-1", claim.token, time.time_ns())
    now = time.time_ns()
    rows = MergedRows(detections=[detection("cam-1", now), detection("cam-1", now + 1), detection("cam-1", now + 30 * S)])
    outcome = []

    def write() -> None:
        try:
            backend.write(rows)
            outcome.append("written")
        except StorageUnavailable as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert fence.frozen.wait(30)
        deadline = time.monotonic() + 30
        taken = []
        while not taken and time.monotonic() < deadline:  # nothing until the lease expires, then x's locks
            taken = fleet.claim("y", ["cam-1"], 1, 30.0, expired=True)  # would wait for the frozen write
            time.sleep(0.1)
        assert [c.reason for c in taken] == ["takeover"]
        assert time.monotonic() < deadline - 25  # within a few leases, not a statement timeout
    finally:
        fence.thaw.set()
        writer.join(30)
    [failed] = outcome  # the server ended its transaction: nothing of it was written
    assert isinstance(failed, StorageUnavailable) and stored(postgres_dsn) == []
    if not after_locking:  # ended by the takeover, not by a timeout
        assert "terminating connection due to administrator command" in str(failed.__cause__), failed.__cause__

    backend.write(rows)  # the storage writer's retry: fenced again, after the takeover
    assert stored(postgres_dsn) == [("cam-1", now), ("cam-1", now + 1)] and fence.stats.rows_refused == 1
    backend.close()


def lock_waits(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]


@pytest.mark.parametrize("locked, known", [("cam-1", ("cam-1", "cam-2")), ("cam-2", ("cam-2",))],
                         ids=["rows of known tokens", "a row of no known token"])
def test_a_renewal_and_a_storage_write_of_one_instance_at_once_do_not_deadlock(fleet, postgres_dsn, locked, known):
    """The write locks its lease rows in one statement in camera order, as the renewal does; a renewal in the
    table's order, or a write locking the rows of a camera whose token this process does not know (an event of
    its earlier process, replayed from its outbox, vouched for by this instance's lease) in a second statement,
    met the other mid-way, and the database aborted one: the heartbeat failed, or the write did. A third session
    holding `locked`'s row makes the renewal wait there, so the two meet."""
    book = LeaseBook()
    backend = PostgresBackend(postgres_dsn, fence=Fence(book, "x", 30.0))
    backend.connect()
    # cam-2 taken first: its lease row comes first in the table (as leases released and taken over time lie)
    claims = [claim for camera in ("cam-2", "cam-1") for claim in fleet.claim("x", [camera], 1, 30.0, expired=False)]
    for claim in claims:
        if claim.camera in known:
            book.took(claim.camera, claim.token, time.time_ns() - S)
    tokens = {claim.token for claim in claims}
    renewals = FleetStore(postgres_dsn)
    outcomes: dict[str, object] = {}

    def attempt(name, call):
        try:
            outcomes[name] = call()
        except Exception as exc:  # noqa: BLE001 - what the test reports
            outcomes[name] = exc

    other = psycopg.connect(postgres_dsn)
    try:
        other.execute("SELECT 1 FROM fleet_leases WHERE camera_id = %s FOR SHARE", (locked,))
        renewal = threading.Thread(target=attempt, args=("renew", lambda: renewals.renew("x", sorted(tokens), 30.0)))
        renewal.start()
        assert wait_until(lambda: lock_waits(postgres_dsn) == 1, timeout=10)
        rows = MergedRows(detections=[detection("cam-1", time.time_ns()), detection("cam-2", time.time_ns())])
        write = threading.Thread(target=attempt, args=("write", lambda: backend.write(rows)))
        write.start()
        assert wait_until(lambda: lock_waits(postgres_dsn) == 2 or "write" in outcomes, timeout=10)
    finally:
        other.rollback()
        other.close()
    renewal.join(30)
    write.join(30)
    backend.close()
    renewals.close()
    assert outcomes == {"renew": tokens, "write": None}
    assert [camera for camera, _ in stored(postgres_dsn)] == ["cam-1", "cam-2"]
