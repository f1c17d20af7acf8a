"""AnalyticsStage: zones, lines and alert rules of one stream, as a StreamStage."""
from __future__ import annotations

import numpy as np

from pipeline.config.models import AlertRule, LineConfig, ZoneConfig
from pipeline.stages.alerts.rules import RuleEngine
from pipeline.stages.analytics.lines import LineCounter
from pipeline.stages.analytics.zones import ZoneMonitor
from pipeline.types import Event, FrameResult, Moment


def alike_but_streams(a, b) -> bool:
    """Two zone, line or stage configs alike but for the streams they apply to (a stream added to a zone
    leaves the zone's state on the others alone)."""
    return a.model_dump(exclude={"streams"}) == b.model_dump(exclude={"streams"})


def _applies(item, stream_id: str) -> bool:
    return item.streams is None or stream_id in item.streams


class AnalyticsStage:
    """Per stream: updates zones and lines from the tracks and appends their events and alerts.

    Runs after TrackingStage and reads `result.tracks` (coasting tracks included, so a missed detection
    does not end a visit; rows without a track id are ignored) and `result.ended_tracks`: a zone visit whose track
    is unseen lasts until the tracker gives the track up, as it may find it again (a passing truck hides someone for
    a few seconds). Tracks from elsewhere, with no `ended_tracks`, are lost after `max_missing_s` unseen instead
    (longer rides out longer occlusions but reports exits later). Zones and lines whose `streams`
    list excludes this stream are skipped; rules on those zones/lines then never fire for it.
    Events are made at the frame's `moment` (time: its `pts_ns`). Per frame: zone_enter/zone_exit, line_cross,
    then alerts. A new `frame.epoch` (a file that loops, a camera that reconnected) is a restart: open visits
    close (zone_exit, reason "restarted", at the last frame before it) and lines forget which side each track
    was on, as the tracker starts with no tracks; a loop's seam or an outage is no dwell and no crossing.
    """

    name = "analytics"

    def __init__(self, stream_id: str, zones: list[ZoneConfig], lines: list[LineConfig], rules: list[AlertRule],
                 class_names: list[str], max_missing_s: float = 2.0):
        self.stream_id, self.class_names, self.max_missing_s = stream_id, class_names, max_missing_s
        self.zones = {z.name: ZoneMonitor(z, class_names, max_missing_s) for z in zones if _applies(z, stream_id)}
        self.lines = {ln.name: LineCounter(ln, class_names) for ln in lines if _applies(ln, stream_id)}
        self.rules = RuleEngine(rules, class_names)
        self._epoch: int | None = None
        self._last: Moment | None = None  # the moment of the last frame processed

    def process(self, result: FrameResult) -> None:
        dets = result.tracks.to_host()
        at = result.moment
        columns = (np.asarray(dets.track_id), np.asarray(dets.class_id), np.asarray(dets.score), np.asarray(dets.xyxy))
        events: list[Event] = []
        if self._last is not None and result.frame.epoch != self._epoch:
            events += self.end(self._last, reason="restarted")
            for line in self.lines.values():
                line.forget_tracks()
        self._epoch, self._last = result.frame.epoch, at
        for zone in self.zones.values():
            events += zone.update(at, *columns)
            events += zone.lose(at, result.ended_tracks)
        for line in self.lines.values():
            events += line.update(at, *columns)
        events += self.rules.process(at, self.zones, events)
        result.events.extend(events)

    def reconfigure(self, zones: list[ZoneConfig], lines: list[LineConfig], rules: list[AlertRule],
                    at: Moment) -> list[Event]:
        """Take new zones, lines and rules while running. Unchanged ones keep their state (who is inside,
        counts, cooldowns); a changed or removed zone closes its open visits (zone_exit, reason
        "reconfigured", at the stream's last frame `at`), and a changed zone sees the objects inside it enter anew.
        Tracks are untouched."""
        new = AnalyticsStage(self.stream_id, zones, lines, rules, self.class_names, self.max_missing_s)
        events: list[Event] = []
        for name, zone in self.zones.items():
            if name in new.zones and alike_but_streams(new.zones[name].config, zone.config):
                new.zones[name] = zone
            else:
                events += zone.close(at, reason="reconfigured")
        for name, line in self.lines.items():
            if name in new.lines and alike_but_streams(new.lines[name].config, line.config):
                new.lines[name] = line
        self.zones, self.lines, self.rules = new.zones, new.lines, self.rules.reconfigured(rules)
        return events

    def end(self, at: Moment, reason: str = "end_of_stream") -> list[Event]:
        """Close open zone visits (zone_exit, `reason`); rules see them but exits do not fire."""
        events = [e for zone in self.zones.values() for e in zone.close(at, reason)]
        return events + self.rules.process(at, self.zones, events)

    def stats(self) -> dict:
        """Occupancy and entries per zone, in/out counts per line."""
        return {
            "zones": {n: {"occupancy": z.occupancy, "entered": z.entered_total} for n, z in self.zones.items()},
            "lines": {n: dict(line.counts) for n, line in self.lines.items()},
        }
