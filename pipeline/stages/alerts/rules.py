"""Alert rules on zone and line analytics: dwell, enter, exit, cross, occupancy; debounce and cooldown.

Rules time on the stream's pts (ns), never the wall clock, so a replay of the same stream fires the same
alerts at the same stream times (their event ids are new: each run's are, see `pipeline.types.make_event_id`).

Semantics per `AlertRule.when` (times in seconds of stream time):
- "enter": a track has been inside `zone` for `debounce_s` (0 = on the entering frame); once per visit.
- "dwell": a track has been inside `zone` for max(`min_seconds`, `debounce_s`); once per visit.
  Both fire on a frame the track is detected on: a track no longer detected (lost, or only predicted while
  its tracker coasts), whose visit the zone keeps while the tracker may find the track again, fires when it
  does (or never, if its visit ends "lost").
- "exit": a track left `zone` (walked out, or lost: the tracker gave the track up) after a visit of at
  least `debounce_s`; visits closed by the end of the stream do not fire.
- "cross": a track crossed `line` in `direction` ("in", "out" or "any"); debounce does not apply.
- "occupancy": at least `min_count` tracks inside `zone` for `debounce_s` (the zone's open visits, a hidden
  track's included until the tracker gives it up); fires once when the condition becomes true and re-arms when it
  stops being true.
`cooldown_s`: the rule does not fire again for the same track (occupancy: the same zone) within this time; a
  condition that becomes true while the cooldown runs fires when it has run out, if it still holds.
  Each rule remembers the last `MAX_COOLDOWNS` tracks it fired for whose cooldown still runs: on a scene
  busier than that within one cooldown, the track that fired longest ago may fire again early.
`classes` narrows the zone's or line's own class filter.
"""
from __future__ import annotations

from pipeline.config.models import AlertRule
from pipeline.stages.analytics.common import class_ids_for
from pipeline.stages.analytics.zones import NS, ZoneMonitor
from pipeline.types import Event, Moment

_ZONE_TIMED = ("enter", "dwell")
_NOT_LEFT = ("end_of_stream", "restarted")  # exits where the stream stopped seeing, not the object leaving
MAX_COOLDOWNS = 4096
"""Tracks per rule whose cooldown is remembered: bounds memory when cooldown_s is long and tracks are many."""


class RuleEngine:
    """The alert rules of one stream. Call `process` once per frame, after zones and lines updated."""

    def __init__(self, rules: list[AlertRule], class_names: list[str]):
        self.class_names = class_names
        self.rules = list(rules)
        self._allowed = {r.name: class_ids_for(r.classes, class_names, f"alert rule '{r.name}'") for r in self.rules}
        self._last_fired: dict[str, dict[int, int]] = {r.name: {} for r in self.rules}  # {track or -1: ts_ns}, oldest first
        self._fired_visits: set[tuple[str, int, int]] = set()  # (rule, track, entered_ns)
        self._occupied_since: dict[str, int | None] = {r.name: None for r in self.rules}
        self._occupancy_armed: dict[str, bool] = {r.name: True for r in self.rules}

    def reconfigured(self, rules: list[AlertRule]) -> "RuleEngine":
        """An engine for `rules` that keeps what the rules whose condition did not change remember (cooldowns,
        fired visits, occupancy), so what fired does not fire again; a rule that is new, or whose condition
        changed, starts afresh. A change of what an alert brings (`snapshot`, `clip`) or of `cooldown_s` is no
        change of the condition."""
        fresh = RuleEngine(rules, self.class_names)
        before = {rule.name: _condition(rule) for rule in self.rules}
        kept = {rule.name for rule in rules if before.get(rule.name) == _condition(rule)}
        fresh._fired_visits = {key for key in self._fired_visits if key[0] in kept}
        for name in kept:
            fresh._last_fired[name] = self._last_fired[name]
            fresh._occupied_since[name] = self._occupied_since[name]
            fresh._occupancy_armed[name] = self._occupancy_armed[name]
        return fresh

    def process(self, at: Moment, zones: dict[str, ZoneMonitor], events: list[Event]) -> list[Event]:
        """Evaluate every rule on the frame captured `at` given the zones' state and its analytics events."""
        alerts: list[Event] = []
        for rule in self.rules:
            if rule.when in _ZONE_TIMED and rule.zone in zones:
                alerts += self._timed_visits(rule, at, zones[rule.zone])
            elif rule.when == "occupancy" and rule.zone in zones:
                alerts += self._occupancy(rule, at, zones[rule.zone])
            elif rule.when in ("exit", "cross"):
                alerts += self._on_events(rule, at, events)
        self._prune_visits(zones)
        return alerts

    def _timed_visits(self, rule: AlertRule, at: Moment, zone: ZoneMonitor) -> list[Event]:
        ts_ns = at.pts_ns
        hold_s = max(rule.min_seconds, rule.debounce_s) if rule.when == "dwell" else rule.debounce_s
        out = []
        for visit in zone.inside.values():
            key = (rule.name, visit.track_id, visit.entered_ns)
            if key in self._fired_visits or visit.detected_ns != ts_ns or not self._class_ok(rule, visit.class_id):
                continue
            if visit.dwell_s(ts_ns) >= hold_s:
                fired = self._fire(rule, visit.track_id, visit.class_id, at, {"dwell_s": round(visit.dwell_s(ts_ns), 3)})
                if fired:  # not while the track's cooldown runs: then it fires once that has run out
                    self._fired_visits.add(key)
                out += fired
        return out

    def _occupancy(self, rule: AlertRule, at: Moment, zone: ZoneMonitor) -> list[Event]:
        ts_ns = at.pts_ns
        count = sum(1 for v in zone.inside.values() if self._class_ok(rule, v.class_id))
        if count < rule.min_count:
            self._occupied_since[rule.name] = None
            self._occupancy_armed[rule.name] = True
            return []
        since = self._occupied_since[rule.name]
        if since is None:
            since = self._occupied_since[rule.name] = ts_ns
        if not self._occupancy_armed[rule.name] or ts_ns - since < rule.debounce_s * NS:
            return []
        fired = self._fire(rule, -1, -1, at, {"count": count, "min_count": rule.min_count})
        if fired:
            self._occupancy_armed[rule.name] = False
        return fired

    def _on_events(self, rule: AlertRule, at: Moment, events: list[Event]) -> list[Event]:
        """exit / cross rules: fire on the matching zone_exit / line_cross events of this frame."""
        out = []
        for event in events:
            if rule.when == "exit" and self._is_exit(rule, event):
                out += self._fire(rule, event.track_id, event.class_id, at, {"dwell_s": event.payload["dwell_s"]})
            elif rule.when == "cross" and self._is_cross(rule, event):
                out += self._fire(rule, event.track_id, event.class_id, at, {"direction": event.payload["direction"]})
        return out

    def _is_exit(self, rule: AlertRule, event: Event) -> bool:
        return (event.kind == "zone_exit" and event.rule == rule.zone and event.payload["reason"] not in _NOT_LEFT
                and event.payload["dwell_s"] >= rule.debounce_s and self._class_ok(rule, event.class_id))

    def _is_cross(self, rule: AlertRule, event: Event) -> bool:
        return (event.kind == "line_cross" and event.rule == rule.line
                and rule.direction in ("any", event.payload["direction"]) and self._class_ok(rule, event.class_id))

    def _class_ok(self, rule: AlertRule, class_id: int) -> bool:
        allowed = self._allowed[rule.name]
        return allowed is None or class_id in allowed

    def _fire(self, rule: AlertRule, track_id: int, class_id: int, at: Moment, details: dict) -> list[Event]:
        """One alert event unless the rule is cooling down for this track; [] otherwise."""
        ts_ns = at.pts_ns
        if not self._cooled_down(rule, track_id, ts_ns):
            return []
        payload = {"rule": rule.name, "when": rule.when, "zone": rule.zone, "line": rule.line,
                   "snapshot": rule.snapshot, "clip": rule.clip, **details}
        return [at.event(rule.name, "alert", track_id, class_id, payload)]

    def _cooled_down(self, rule: AlertRule, track_id: int, ts_ns: int) -> bool:
        """Whether `rule` may fire for `track_id` at `ts_ns`; if so, its cooldown starts now. Only running
        cooldowns are kept (at most MAX_COOLDOWNS, the oldest dropped first)."""
        cooldown_ns = rule.cooldown_s * NS
        fired = self._last_fired[rule.name]
        last = fired.get(track_id)
        if last is not None and ts_ns - last < cooldown_ns:
            return False
        while fired and (ts_ns - next(iter(fired.values())) >= cooldown_ns or len(fired) >= MAX_COOLDOWNS):
            del fired[next(iter(fired))]  # in firing order, so the front is the oldest
        if cooldown_ns > 0:
            fired.pop(track_id, None)  # moved to the back
            fired[track_id] = ts_ns
        return True

    def _prune_visits(self, zones: dict[str, ZoneMonitor]) -> None:
        """Forget fired visits that ended, so the set stays as small as the zones' occupancy."""
        if len(self._fired_visits) < 256:
            return
        live = {(v.track_id, v.entered_ns) for z in zones.values() for v in z.inside.values()}
        self._fired_visits = {k for k in self._fired_visits if (k[1], k[2]) in live}


def _condition(rule: AlertRule) -> dict:
    """What decides when `rule` fires (all of it but what an alert brings along and its cooldown)."""
    return rule.model_dump(exclude={"snapshot", "clip", "cooldown_s"})
