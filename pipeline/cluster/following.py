"""What a fleet instance's coordinator does with the fleet's entries at each heartbeat: stop the cameras whose lease
was lost or that were deleted, restart those whose entry changed, let go of those it cannot run (ended leases,
reported, not claimed again until their entry changes), apply the fleet's zones, lines and rules
(`pipeline.cluster.coordinator`)."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.cluster import analytics
from pipeline.cluster.store import FleetUnavailable
from pipeline.config.models import StreamConfig
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass
class Held:
    token: int
    revision: int
    config: StreamConfig


@dataclass
class ClusterCounters:
    takeovers: int = 0
    claims: int = 0
    rebalance_moves: int = 0
    lease_losses: int = 0
    deadline_stops: int = 0
    heartbeats: int = 0
    heartbeat_failures: int = 0
    detector_giveups: int = 0
    invalid_cameras: set = field(default_factory=set)


class Following:
    """The `Coordinator`'s part that follows the fleet's entries; its fields are the coordinator's."""

    def _drop_lost(self, renewed: set[int], cameras: dict) -> bool:
        lost = [camera for camera, held in self.held.items() if held.token not in renewed]
        for camera in lost:
            del self.held[camera]
            if camera in cameras:
                self.counters.lease_losses += 1
                log.warning("cluster: lost the lease of %s (it expired and another instance took it): stopping it",
                            camera)
            else:
                log.info("cluster: %s was removed from the fleet: stopping it", camera)
        return bool(lost)

    def _follow_entries(self, cameras: dict, lanes: dict[str, str]) -> bool:
        """Restart the cameras whose entry changed; one whose new entry cannot run here (invalid, or a lane this
        instance does not have) is stopped and let go, not left running as it was."""
        changed = False
        for camera, held in list(self.held.items()):
            revision, entry = cameras.get(camera, (held.revision, None))
            if revision == held.revision:
                continue
            if lanes.get(camera) in self.lanes:
                held.revision, held.config = revision, StreamConfig.model_validate(entry)
            else:
                self._let_go(camera, revision, "its entry is invalid or names a lane this instance does not have")
            changed = True
        return changed

    def _let_go(self, camera: str, revision: int, why: str) -> None:
        """Stop running `camera` here and end its lease once stopped (`_end_let_go`); not claimed again until its
        entry changes (lock held)."""
        self._refused[camera] = (revision, why)
        held = self.held.pop(camera, None)
        if held is not None:
            self._letting_go.append((camera, held.token))

    def _still_refused(self, cameras: dict) -> dict[str, str]:
        """Forget the cameras let go whose entry changed or that left the fleet; the others, each with why
        (lock held)."""
        self._refused = {camera: (revision, why) for camera, (revision, why) in self._refused.items()
                         if cameras.get(camera, (None,))[0] == revision}
        return {camera: why for camera, (_, why) in self._refused.items()}

    def _end_let_go(self) -> None:
        """End the leases of the cameras let go, now stopped (reported here; another lane's instance may take one
        that moved lanes, while the assignment gives one this instance cannot run to none but this one)."""
        with self._lock:
            letting_go, self._letting_go = self._letting_go, []
        for camera, token in letting_go:
            try:
                self.store.release(self.instance, camera, token, "release")
            except FleetUnavailable as exc:
                log.warning("cluster: the lease of %s was not ended (it expires in %g s): %s", camera,
                            self.config.lease_s, exc)

    def _follow_analytics(self) -> None:
        """Apply the fleet's zones, lines and rules when they changed since they were last applied here (live,
        the cameras keep running); a document this instance cannot run is logged once and left as it is."""
        if self._set_analytics is None or self.store.tx(analytics.version) == self._analytics_version:
            return
        version, doc, cameras = self.store.tx(_document_and_cameras)
        try:
            with self._pipeline_change():  # it may wait for the pipeline (a reload holds it): the renewals go on
                change = self._set_analytics(doc, cameras)
        except PipelineError as exc:  # invalid here, or it needs a restart (a clip longer than the packets kept)
            log.error("cluster: the fleet's zones, lines and alert rules (version %d) cannot run here, those before "
                      "stay: %s", version, exc)
        else:
            log.info("cluster: the fleet's zones, lines and alert rules (version %d) applied: %s", version,
                     change.summary())
        self._analytics_version = version

    @contextlib.contextmanager
    def _pipeline_change(self) -> Iterator[None]:
        """While the pipeline is being changed, which may wait for it longer than a heartbeat, the renewal thread
        renews the leases (`_changing` counts the changes under way: they may overlap)."""
        with self._lock:
            self._changing += 1
        try:
            yield
        finally:
            with self._lock:
                self._changing -= 1

    def _report(self, problems: dict[str, str]) -> None:
        """Log each camera that cannot run once, until it can."""
        for camera in sorted(problems.keys() - self.counters.invalid_cameras):
            log.error("cluster: camera %s is not run: %s; fix it with `fleet import` or the API", camera, problems[camera])
        self.counters.invalid_cameras = set(problems)


def _document_and_cameras(cur) -> tuple[int, analytics.Document, set[str]]:
    """The fleet's document, then its camera ids: read after it, they hold every camera it names (a camera is
    removed only once no zone or line names it; one added after the heartbeat read the cameras may be named)."""
    version, doc = analytics.read(cur)
    cur.execute("SELECT id FROM fleet_cameras")
    return version, doc, {row[0] for row in cur.fetchall()}
