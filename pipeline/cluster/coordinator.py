"""The coordinator of one instance in a fleet: a thread that keeps its share of the fleet's cameras running.

Every heartbeat (`runtime.cluster.heartbeat_s`) it
1. records that this instance is alive (`fleet_instances.heartbeat_at`),
2. renews its leases; a lease it no longer has (taken over after it expired, its camera deleted) is
   stopped here at once,
3. reads the fleet's cameras and restarts those it runs whose entry changed (one it cannot run is let go:
   `pipeline.cluster.following`); when the fleet's zones, lines and alert rules changed (one number, `pipeline.cluster.analytics`), applies them live,
4. computes the assignment over the live instances and the lanes they have (`pipeline.cluster.assignment`)
   and claims the cameras assigned to it: expired leases (takeovers) up to `capacity`, free cameras up to its
   normal cap (`capacity` less `headroom`),
5. hands on at most one camera that is assigned elsewhere (rebalancing; one move at a time in the whole
   fleet): it stops the camera here first, then ends the lease.

A watchdog thread that never calls the database stops every camera once no renewal has succeeded for
`lease_s - heartbeat_s` (`assignment.renew_deadline`), before any other instance may take them, whatever the
other threads wait for; while a change of the pipeline (`Control.set_streams`, one at a time, never under the
lock of the cameras held; or of its zones) outlasts a heartbeat, a renewal thread renews the leases on a
connection of its own.
A detector that fails every batch for a lease makes the instance hand every camera on (`health`). The why of
each: docs/SCALING.md, "How it works".
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

from pipeline.cluster import analytics
from pipeline.cluster.assignment import Member, assign, placeable, renew_deadline
from pipeline.cluster.fencing import Fence, LeaseBook
from pipeline.cluster.following import ClusterCounters, Following, Held
from pipeline.cluster.health import DetectorWatch
from pipeline.cluster.store import FleetStore, FleetUnavailable
from pipeline.config.cluster import ClusterConfig
from pipeline.config.models import StreamConfig
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 3600.0  # how often an instance deletes the fleet's history past `store.HISTORY_DAYS`


class Coordinator(Following):
    """config: this instance's `runtime.cluster`. instance: its name. lanes: the lanes its pipeline has (a
    camera naming another lane is not claimed). `fence` and `book` exist from construction (the pipeline's
    storage needs the fence when it is built); `attach(set_streams, running, set_analytics, detector)` before
    `start()`: set_streams(configs) makes the pipeline run exactly those streams; running: set while it
    accepts them; set_analytics(document, camera ids) makes it run the fleet's zones, lines and rules;
    detector() gives (batches failed, batches through) so far (`health.DetectorWatch`)."""

    def __init__(self, config: ClusterConfig, instance: str, lanes: set[str], *, store: FleetStore | None = None,
                 renewals: FleetStore | None = None, clock: Callable[[], float] = time.monotonic):
        self.config, self.instance, self.lanes = config, instance, lanes
        self.process = uuid.uuid4().hex  # this start of the instance, in its heartbeat row
        self.store = store or FleetStore(config.dsn, idle_limit_s=config.lease_s)
        # the renewal thread's, while the pipeline changes (connects when used)
        self.renewals = renewals or FleetStore(config.dsn, idle_limit_s=config.lease_s)
        self.book = LeaseBook()
        self.fence = Fence(self.book, instance, config.lease_s)
        self.counters = ClusterCounters()
        self.held: dict[str, Held] = {}
        self._clock = clock
        self._deadline = float("inf")
        self._renewal_sent = float("-inf")  # when the last renewal that succeeded was sent
        # pipeline changes under way: `_apply` (the heartbeat's or the watchdog's) and the zones' `_follow_analytics`
        # may overlap, so the first to end must not end the renewals the other still needs
        self._changing = 0
        self._next_beat = self._next_prune = float("-inf")
        self._beats = 0
        self._unapplied = False  # the pipeline refused the last change of the cameras: each beat tries again
        self._refused: dict[str, tuple[int, str]] = {}  # camera -> the revision of its entry not run here, and why
        self._letting_go: list[tuple[str, int]] = []  # (camera, token) stopped here, whose lease is to be ended
        self._stop = threading.Event()
        self._lock = threading.RLock()  # held and the deadline; never across a database call or a pipeline change
        self._applying = threading.Lock()  # one pipeline change at a time; taken before `_lock`, never inside it
        self._set_streams: Callable[[list[StreamConfig]], None] | None = None
        self._set_analytics: Callable[[analytics.Document, set[str]], object] | None = None
        self._analytics_version: int | None = None  # of the document applied (or refused) here
        self._running: threading.Event | None = None
        self._detector: DetectorWatch | None = None
        self._thread = threading.Thread(target=self._run, name=f"cluster:{instance}", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name=f"cluster-deadline:{instance}", daemon=True)
        self._renewer = threading.Thread(target=self._renew, name=f"cluster-renew:{instance}", daemon=True)

    def attach(self, set_streams: Callable[[list[StreamConfig]], None], running: threading.Event,
               set_analytics: Callable[[analytics.Document, set[str]], object] | None = None,
               detector: Callable[[], tuple[int, int]] | None = None) -> None:
        self._set_streams, self._running, self._set_analytics = set_streams, running, set_analytics
        self._detector = detector and DetectorWatch(detector, self.config.lease_s)

    def start(self) -> None:
        """Connect and announce this instance (FleetUnavailable when the database cannot be reached: a wrong DSN
        fails at start; InstanceNameTaken when a running instance has its name) and start the threads; the
        heartbeat thread claims cameras once the pipeline runs."""
        self.store.connect()
        self._heartbeat()
        self._thread.start()
        self._watchdog.start()
        self._renewer.start()

    def close(self) -> None:
        """Stop the thread and release every lease (the pipeline stopped its streams already): the others take
        the cameras at their next heartbeat instead of after the lease time."""
        self._stop.set()
        self._thread.join(30)
        self._watchdog.join(5)
        self._renewer.join(5)
        with self._lock:
            leases = sorted((camera, held.token) for camera, held in self.held.items())
        try:
            for camera, token in leases:
                self.store.release(self.instance, camera, token, "release")
            self.store.leave(self.instance, self.process)
        except FleetUnavailable as exc:
            log.warning("cluster: leases not released at stop (they expire in %g s): %s", self.config.lease_s, exc)
        self.held.clear()
        self.store.close()
        self.renewals.close()

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._running.wait(0.1):
            if self._stop.is_set():
                return
        while not self._stop.is_set():
            self._stop.wait(self.tick())

    def _watch(self) -> None:
        """The watchdog: at the deadline, stop every camera, whatever the other threads are waiting for."""
        while not self._stop.is_set():
            self._stop.wait(self.check_deadline())

    def _renew(self) -> None:
        """Renew while the pipeline is being changed (not on the watchdog's thread: a renewal may hang)."""
        while not self._stop.wait(self.config.heartbeat / 10):
            self.renew_while_changing()

    def check_deadline(self) -> float:
        """Past the deadline with cameras held: stop them all. Returns the seconds until it is worth looking again."""
        with self._lock:
            passed = bool(self.held) and self._clock() >= self._deadline
            if passed:
                self._deadline_passed()
            due = self._deadline - self._clock() if self.held else self.config.heartbeat
        if passed:
            self._apply_stops()
        return min(self.config.heartbeat, max(0.005, due))

    def renew_while_changing(self) -> None:
        """While a change of the pipeline has kept the heartbeat thread for a heartbeat or more, renew the leases
        here; the deadline moves only when every lease held was renewed, or its camera deleted from the fleet
        meanwhile (a lease lost to another instance is the heartbeat's to stop: until then, none moves it)."""
        with self._lock:
            sent = self._clock()
            if not (self._changing > 0 and self.held and sent >= self._renewal_sent + self.config.heartbeat):
                return
            tokens = [(camera, held.token) for camera, held in self.held.items()]
        try:
            renewed = self.renewals.renew(self.instance, [token for _, token in tokens], self.config.lease_s)
            lost = {camera for camera, token in tokens if token not in renewed}
            if lost and lost & set(self.renewals.cameras()):  # one still in the fleet, taken or expired: it must stop
                return
        except FleetUnavailable as exc:
            log.warning("cluster: renewal while the pipeline changes failed: %s", exc)
            return
        with self._lock:
            self._renewed(sent)

    def tick(self) -> float:
        """One step of the thread: past the deadline, stop every camera; when due, a heartbeat. Returns the
        seconds until the next step is due."""
        self.check_deadline()
        now = self._clock()
        if now >= self._next_beat:
            self._next_beat = now + self.config.heartbeat
            self._beat_safely()
        until = min(self._next_beat, self._deadline if self.held else self._next_beat)
        return max(0.005, until - self._clock())

    def _beat_safely(self) -> None:
        try:
            self.beat()
        except FleetUnavailable as exc:
            self.counters.heartbeat_failures += 1
            log.warning("cluster: heartbeat failed (cameras here stop %.1f s after the last renewal if it goes on): "
                        "%s", self.config.lease_s - self.config.heartbeat, exc)
        except PipelineError as exc:  # the pipeline refused a change (it is stopping): the next beat tries again
            log.warning("cluster: %s", exc)
        except Exception:  # noqa: BLE001 - this thread renews every lease: an unforeseen error must not end it
            self.counters.heartbeat_failures += 1
            log.exception("cluster: heartbeat failed; the next one tries again")

    def _deadline_passed(self) -> None:
        log.error("cluster: leases not renewed for %.1f s: stopping %d cameras before the leases expire (another "
                  "instance takes them)", self.config.lease_s - self.config.heartbeat, len(self.held))
        self.counters.deadline_stops += 1
        self.counters.lease_losses += len(self.held)
        self.held.clear()

    def _apply_stops(self) -> None:
        try:
            self._apply()
        except Exception as exc:  # noqa: BLE001 - fencing keeps what they store out; the next beat stops them again
            log.error("cluster: the pipeline did not stop every camera: %s", exc)

    def _renewed(self, sent: float) -> None:
        self._renewal_sent = max(self._renewal_sent, sent)
        self._deadline = renew_deadline(self._renewal_sent, self.config.lease_s, self.config.heartbeat)

    def beat(self) -> None:
        """One heartbeat (see the module docstring); the thread calls it, tests may too. The database calls run
        outside the lock, so the watchdog can stop the cameras while one of them waits."""
        cfg, store, me = self.config, self.store, self.instance
        last_contact = self._renewal_sent  # either thread's last renewal that went through
        if self._detector is not None and self._detector.failed(self._clock(), bool(self.held)):
            try:
                self._give_up()
            except Exception as exc:  # noqa: BLE001 - the cameras stay held and renewed; the next beat tries again
                log.error("cluster: the cameras could not be stopped to hand them on: %s", exc)
        sent = self._clock()
        cooling = self._detector is not None and self._detector.cooling(sent)
        self._heartbeat(cooling)
        with self._lock:
            tokens = [held.token for held in self.held.values()]
        renewed = store.renew(me, tokens, cfg.lease_s)
        cameras = store.cameras()
        members = [Member(*row) for row in store.members(cfg.lease_s)]
        self._follow_analytics()
        with self._lock:
            self._renewed(sent)
            self.counters.heartbeats += 1
            self._beats += 1
            if self._clock() - last_contact >= cfg.lease_s:
                self._beats = 1  # back after an outage the others' heartbeats may have gone stale in too: as at a
                # start, this beat only announces this instance, so it does not take every camera by itself
            lanes, problems = placeable(cameras, members)
            self._report({**problems, **self._still_refused(cameras)})
            changed = self._drop_lost(renewed, cameras)
            self.book.keep(cameras)
            changed |= self._follow_entries(cameras, lanes)
            desired = assign(list(lanes), members, lanes)
            mine = sorted(camera for camera, name in desired.items() if name == me and camera not in self.held
                          and lanes[camera] in self.lanes and camera not in self._refused)
            # the assignment goes past the normal cap only when all are at theirs
            room = 0 if cooling else cfg.capacity - len(self.held)
        claimed = []
        if self._beats > 1 and self._running.is_set():  # the first beat only announces this instance, so that
            # those starting with it are seen before anything is claimed; a pipeline that stops claims nothing
            wait = cfg.heartbeat / 4  # each claim's budget for lease rows locked elsewhere: the next beat renews
            claimed = store.claim(me, mine, room, cfg.lease_s, expired=True, lock_wait_s=wait)
            claimed += store.claim(me, [c for c in mine if c not in {x.camera for x in claimed}],
                                   room - len(claimed), cfg.lease_s, expired=False, lock_wait_s=wait)
        with self._lock:
            for claim in claimed:
                self.book.took(claim.camera, claim.token, time.time_ns())
                revision, entry = cameras[claim.camera]
                self.held[claim.camera] = Held(claim.token, revision, StreamConfig.model_validate(entry))
                self.counters.claims += 1
                self.counters.takeovers += claim.reason == "takeover"
                log.info("cluster: %s %s (lease token %d)", "took over" if claim.reason == "takeover" else "claimed",
                         claim.camera, claim.token)
            apply = changed or claimed or self._unapplied
        if apply:
            self._apply()
        else:
            self._move_one(desired)
        self._end_let_go()
        if self._clock() >= self._next_prune:
            self._next_prune = self._clock() + PRUNE_EVERY_S
            store.prune()

    def _heartbeat(self, cooling: bool = False) -> None:
        """Alive; while cooling down after its detector failed, with no capacity, so no camera is assigned here."""
        cfg = self.config
        capacity, normal_cap = (0, 0) if cooling else (cfg.capacity, cfg.normal_cap)
        self.store.heartbeat(self.instance, self.process, capacity, normal_cap, cfg.share, cfg.url, cfg.lease_s,
                             sorted(self.lanes))

    def _give_up(self) -> None:
        """Stop every camera here, then end their leases, so the other instances take them at their next heartbeat.
        A pipeline that refuses the stop keeps them held (and renewed), to be tried again."""
        with self._lock:
            given = dict(self.held)
            self.held.clear()
        log.error("cluster: the detector has failed every batch for %g s: handing on %d cameras and taking none "
                  "for %g s", self.config.lease_s, len(given), self._detector.cool_down_s)
        try:
            self._apply()
        except Exception:
            with self._lock:
                self.held = {**given, **self.held}
            raise
        self._detector.gave_up(self._clock())
        self.counters.detector_giveups += 1
        for camera, held in sorted(given.items()):
            try:
                self.store.release(self.instance, camera, held.token, "release")
            except FleetUnavailable as exc:
                log.warning("cluster: the lease of %s was not ended (it expires in %g s): %s", camera,
                            self.config.lease_s, exc)

    def _move_one(self, desired: dict[str, str]) -> None:
        """Hand on the first camera assigned elsewhere whose instance has room to claim it: one at its capacity
        would leave it dark, and no other camera could move meanwhile (it frees room by its own moves)."""
        with self._lock:
            elsewhere = sorted(camera for camera in self.held if desired.get(camera, self.instance) != self.instance)
        if not elsewhere:
            return
        rooms = self.store.rooms(sorted({desired[camera] for camera in elsewhere}))
        with self._lock:
            camera = next((c for c in elsewhere if c in self.held and rooms.get(desired[c], 0) > 0), None)
            if camera is None:
                return
            token = self.held[camera].token

        def stop_here() -> None:
            with self._lock:
                self.held.pop(camera, None)
            self._apply()

        if self.store.move_one(self.instance, camera, token, stop_here, self.config.lease_s):
            self.counters.rebalance_moves += 1
            log.info("cluster: handed %s on to %s (rebalancing)", camera, desired[camera])
        elif camera not in self.held:  # stopped here, but the lease could not be ended: it expires instead
            self.counters.lease_losses += 1

    def _apply(self) -> None:
        """Make the pipeline run the cameras held when the change begins (the caller does not hold `_lock`)."""
        with self._applying:
            with self._lock:
                streams = [held.config for _, held in sorted(self.held.items())]
                self._unapplied = True
            with self._pipeline_change():
                refused = self._set_streams(streams) or {}
            with self._lock:
                self._unapplied = False
                for camera, why in refused.items():  # not started: let go, reported until its entry changes
                    held = self.held.get(camera)
                    if held is not None:
                        self._let_go(camera, held.revision, f"this instance cannot run it: {why}")

    # -- what it shows -------------------------------------------------------------------------
    def stats(self) -> dict:
        """Leases held and the counters, for /api/cluster and the metrics."""
        counters = {key: value for key, value in vars(self.counters).items() if key != "invalid_cameras"}
        return {"instance": self.instance, "leases_held": len(self.held), **counters,
                "invalid_cameras": sorted(self.counters.invalid_cameras),
                "fenced_rows": self.fence.stats.rows_refused, "fenced_writes": self.fence.stats.writes_fenced}

