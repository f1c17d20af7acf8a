"""An in-memory fleet and a clock a test moves, for the coordinator's unit tests (tests/unit/cluster/)."""
from __future__ import annotations

import threading

from pipeline.cluster.coordinator import Coordinator
from pipeline.cluster.store import Claimed, FleetUnavailable
from pipeline.config.cluster import ClusterConfig

LEASE_S, HEARTBEAT_S = 3.0, 0.5
CALLS_DOWN = ("heartbeat", "renew", "cameras", "members", "claim", "rooms")  # those that fail while `down`


class MemoryFleet:
    """The statements the coordinator uses, on dicts; `down` makes every call fail as an outage would; the
    lease expiries are set at the test clock's time of the call, as the database's now() would be."""

    def __init__(self, clock, cameras: list[str]):
        self.clock, self.down = clock, False
        self.member = ("a", 1.0, 10, 10)  # name, weight, normal cap, capacity
        self.others: list[tuple] = []  # other live instances, with their lanes
        self.cameras_ = {camera: (1, {"id": camera, "url": f"rtsp://h/{camera}"}) for camera in cameras}
        self.leases: dict[str, tuple[str, int, float]] = {}  # camera -> (instance, token, expires)
        self.tokens = 0
        self.prunes: list[float] = []  # when the history was pruned
        self.analytics_version = 0  # the zones, lines and rules: none, at this version

    def tx(self, work):
        """`work(cursor)` for the statements on the zones, lines and rules (`pipeline.cluster.analytics`)."""
        return work(_Cursor(self))

    def __getattribute__(self, name):
        if name in CALLS_DOWN and object.__getattribute__(self, "down"):
            raise FleetUnavailable("connection refused")
        return object.__getattribute__(self, name)

    def connect(self): ...
    def close(self): ...
    def leave(self, name, process): ...
    def heartbeat(self, name, process, capacity, *args):
        self.announced = capacity

    def release(self, name, camera, token, reason):
        if self.leases.get(camera, ())[:2] == (name, token):
            del self.leases[camera]

    def members(self, lease_s):
        return [self.member, *self.others]

    def cameras(self):
        return dict(self.cameras_)

    def delete(self, camera):
        """As the API's delete: the camera and its lease go."""
        del self.cameras_[camera]
        self.leases.pop(camera, None)

    def renew(self, name, tokens, lease_s):
        now = self.clock()
        renewed = {c: (i, t, e) for c, (i, t, e) in self.leases.items() if i == name and t in tokens and e > now}
        self.leases.update({c: (i, t, now + lease_s) for c, (i, t, _) in renewed.items()})
        return {t for _, t, _ in renewed.values()}

    def claim(self, name, cameras, limit, lease_s, *, expired, lock_wait_s=1.0):
        out = []
        for camera in cameras[:max(0, limit)]:
            lease = self.leases.get(camera)
            if (lease is None) != expired and (lease is None or lease[2] <= self.clock()):
                self.tokens += 1
                self.leases[camera] = (name, self.tokens, self.clock() + lease_s)
                out.append(Claimed(camera, self.tokens, "takeover" if expired else "free"))
        return out

    def rooms(self, names):
        """As the store's: capacity less the leases still valid (an expired one is anyone's to take over)."""
        now, capacities = self.clock(), {member[0]: member[3] for member in [self.member, *self.others]}
        valid = [holder for holder, _, expires in self.leases.values() if expires > now]
        return {name: capacities[name] - valid.count(name) for name in names if name in capacities}

    def move_one(self, *args):
        return False

    def prune(self):
        self.prunes.append(self.clock())
        return 0


class _Cursor:
    def __init__(self, fleet: MemoryFleet):
        self.fleet, self.sql = fleet, ""

    def execute(self, sql, params=None):
        self.sql = sql

    def fetchone(self):
        return (self.fleet.analytics_version,)

    def fetchall(self):
        return [(camera,) for camera in self.fleet.cameras_] if "fleet_cameras" in self.sql else []


def coordinator(cameras: list[str]):
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    fleet = MemoryFleet(clock, cameras)
    config = ClusterConfig(dsn="postgresql://h/db", capacity=10, lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S)
    runs: list[list[str]] = []
    running = threading.Event()
    running.set()
    coord = Coordinator(config, "a", {"default"}, store=fleet, renewals=fleet, clock=clock)
    coord.attach(lambda streams: runs.append([s.id for s in streams]), running)
    return coord, fleet, now, runs


def step(coord, now, until: float) -> None:
    """Tick the coordinator as its thread would, moving the clock to each moment it asks to wake at, up to
    and including `until`."""
    wait = coord.tick()
    while now[0] + wait <= until:
        now[0] += wait
        wait = coord.tick()
