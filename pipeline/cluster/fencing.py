"""Fencing: a row a camera produced is stored only while the lease it was produced under allows it.

`LeaseBook` is this instance's memory of its leases: each camera's tokens and when (host clock) each was
taken. A stored row (detection, track box, track, event, stream) names its camera and its frame's capture
time (`wall_ns`); the token it was produced under is the camera's latest token taken before that moment.

`Fence.filter` runs inside the storage transaction, before the rows are written. It locks the lease rows
of those tokens that are still current, and this instance's of the cameras of rows with no token known (below),
in one statement in camera order as a renewal does (`FOR SHARE`: a takeover waits until the write commits, or
until the server ends it when it stays idle longer than a lease: the writer's process was frozen) and reads
when each earlier one ended (`fleet_handoffs`). A row is written when its token is the camera's current
lease, held by this instance and not expired, or when it was captured before its token's lease ended;
else it is refused, counted and logged. So an instance paused past its lease (SIGSTOP, a long GC, a
frozen VM) that wakes up stores nothing it captured after it lost the camera, while what it captured
before stays stored, and events it had put in its outbox keep their ids (downstream de-duplication holds).
A row this process knows no token for (an event of an earlier process of this instance, delivered from
its outbox after a restart) is written when the database shows this instance held the camera when the row
was captured: between a lease's `acquired_at` and its end.
Capture times are the host's clock and lease ends the database's: hosts keep their clocks in step (NTP).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pipeline.sinks.storage.rows import MergedRows

log = logging.getLogger(__name__)

# MergedRows list -> (index of stream_id, index of the capture time) in its tuples; `runs` are not a camera's.
# `tracks` and `streams` come a row per frame (`rows.merge`), folded after fencing: a frame's part is kept or not
FENCED_COLUMNS = {"detections": (1, 4), "track_boxes": (1, 6), "events": (2, 9), "tracks": (1, 7), "streams": (0, 3)}


KEPT_PER_CAMERA = 16
"""Tokens remembered per camera; a row of an older one is vouched for from the database's lease history."""


class LeaseBook:
    """Thread-safe: the coordinator writes, storage writers read. Bounded: a camera's oldest tokens are
    forgotten past KEPT_PER_CAMERA, and cameras deleted from the fleet (`keep`) as a whole (rows of those are
    checked as rows of an earlier process are)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._taken: dict[str, list[tuple[int, int]]] = {}  # camera -> [(taken at wall_ns, token)], as taken

    def took(self, camera: str, token: int, wall_ns: int) -> None:
        with self._lock:
            history = self._taken.setdefault(camera, [])
            history.append((wall_ns, token))
            del history[:-KEPT_PER_CAMERA]

    def keep(self, cameras: Iterable[str]) -> None:
        """Forget every camera but `cameras` (the fleet's): rows of one deleted that are still on their way are
        vouched for from the database's lease history, as rows of an earlier process are."""
        with self._lock:
            for camera in self._taken.keys() - set(cameras):
                del self._taken[camera]

    def token_for(self, camera: str, wall_ns: int) -> int | None:
        """The token `camera`'s frame captured at `wall_ns` was produced under; None when this instance held
        no lease of it then (as far as this process knows). The latest taken at or before `wall_ns`, searched
        in the order taken: after the clock stepped back the times are out of order, and frames captured since a
        take are that lease's."""
        with self._lock:
            return next((token for taken, token in reversed(self._taken.get(camera, [])) if taken <= wall_ns), None)


@dataclass
class FenceStats:
    rows_refused: int = 0
    writes_fenced: int = 0  # transactions that had at least one row refused
    by_camera: dict[str, int] = field(default_factory=dict)


class Fence:
    """What a PostgreSQL storage backend calls inside its transaction (`filter`) in cluster mode. lease_s:
    the fleet's lease time, which bounds how long the storage's transaction may stay idle (its lease rows'
    locks would hold a takeover back while this process is frozen; ended by the server, the write is
    retried and fenced again)."""

    def __init__(self, book: LeaseBook, instance: str, lease_s: float):
        self.book, self.instance, self.lease_s = book, instance, lease_s
        self.stats = FenceStats()
        self._lock = threading.Lock()

    def filter(self, cur, rows: MergedRows) -> MergedRows:
        """`rows` less those their lease no longer allows (see the module docstring)."""
        tokens = {name: [self._token(row, columns) for row in getattr(rows, name)]
                  for name, columns in FENCED_COLUMNS.items()}
        wanted = sorted({t for ts in tokens.values() for t in ts if t is not None})
        unknown = {(row[stream_index], row[wall_index]) for name, (stream_index, wall_index) in FENCED_COLUMNS.items()
                   for row, token in zip(getattr(rows, name), tokens[name]) if token is None}
        leases = self._lock_leases(cur, wanted, sorted({camera for camera, _ in unknown})) if wanted or unknown else []
        ends = self._lease_ends(cur, wanted, leases) if wanted else {}
        held = self._held_windows(cur, unknown, leases) if unknown else {}
        kept, refused = {}, {}
        for name, (stream_index, wall_index) in FENCED_COLUMNS.items():
            kept[name] = []
            for row, token in zip(getattr(rows, name), tokens[name]):
                wall = row[wall_index]
                if (wall < ends.get(token, -1) if token is not None else
                        any(start <= wall < end for start, end in held.get(row[stream_index], ()))):
                    kept[name].append(row)
                else:
                    refused[row[stream_index]] = refused.get(row[stream_index], 0) + 1
        if refused:
            self._count(refused)
        return replace(rows, **kept)

    def _token(self, row: tuple, columns: tuple[int, int]) -> int | None:
        return self.book.token_for(row[columns[0]], row[columns[1]])

    def _lock_leases(self, cur, tokens: list[int], cameras: list[str]) -> list[tuple]:
        """The lease rows of `tokens` and this instance's of `cameras`, locked in one statement in camera order,
        as a renewal locks them (in two statements, a write met a renewal mid-way and one was aborted):
        [(camera, token, holder, still valid, acquired_at and expires_at in s)]."""
        cur.execute("SELECT camera_id, token, instance, expires_at > now(), extract(epoch FROM acquired_at), "
                    "extract(epoch FROM expires_at) FROM fleet_leases WHERE token = ANY(%s) "
                    "OR (instance = %s AND camera_id = ANY(%s)) ORDER BY camera_id FOR SHARE",
                    (tokens, self.instance, cameras))
        return cur.fetchall()

    def _lease_ends(self, cur, tokens: list[int], leases: list[tuple]) -> dict[int, float]:
        """token -> capture times (ns) before this are allowed: infinity while the lease is this instance's
        and valid, else when it expired or was released."""
        wanted = set(tokens)
        ends = {token: float("inf") if holder == self.instance and valid else float(expires) * 1e9
                for _, token, holder, valid, _, expires in leases if token in wanted}
        cur.execute("SELECT from_token, extract(epoch FROM lease_ended_at) FROM fleet_handoffs "
                    "WHERE from_token = ANY(%s)", (tokens,))
        for token, ended in cur.fetchall():
            ends.setdefault(token, float(ended) * 1e9)
        return ends

    def _held_windows(self, cur, rows: set[tuple[str, int]], leases: list) -> dict[str, list[tuple[float, float]]]:
        """camera -> [(start, end)] capture times (ns) in which this instance held a lease of it, for the
        cameras of `rows` ((camera, wall_ns)), as far back as the earliest of them."""
        cameras, since = sorted({camera for camera, _ in rows}), min(wall for _, wall in rows) / 1e9
        cur.execute("SELECT camera_id, extract(epoch FROM from_acquired_at), extract(epoch FROM lease_ended_at) "
                    "FROM fleet_handoffs WHERE from_instance = %s AND camera_id = ANY(%s) "
                    "AND lease_ended_at > to_timestamp(%s)", (self.instance, cameras, since))
        ended = cur.fetchall()
        mine = [(camera, acquired, None if valid else expires) for camera, _, holder, valid, acquired, expires in leases
                if holder == self.instance and camera in cameras]
        windows: dict[str, list[tuple[float, float]]] = {}
        for camera, start, end in [*mine, *ended]:
            windows.setdefault(camera, []).append((float(start) * 1e9, float("inf") if end is None else float(end) * 1e9))
        return windows

    def _count(self, refused: dict[str, int]) -> None:
        with self._lock:
            self.stats.writes_fenced += 1
            for camera, n in refused.items():
                self.stats.rows_refused += n
                self.stats.by_camera[camera] = self.stats.by_camera.get(camera, 0) + n
        log.warning("fencing: refused %s rows of %s captured after this instance's lease ended (another "
                    "instance runs the camera now)", sum(refused.values()), ", ".join(sorted(refused)))
