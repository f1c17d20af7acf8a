"""What changed between the config a pipeline runs and a new one, and what of it can change while it runs.

Live: streams (only the added, removed and changed ones start or stop), zones, lines, alert rules,
`stages:` plugins and lane settings. Not live: the detector, the tracker, `sinks:`, `runtime:` and
`plugins:` — a change there is refused as "restart required" (the new engine would have to be built and
warmed beside the old one; outputs hold files, connections and the outbox's cursors).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.models import PipelineConfig, StreamConfig

RESTART_SECTIONS = ("detector", "tracker", "sinks", "runtime", "plugins")
"""Sections a running pipeline cannot change."""


@dataclass(frozen=True)
class ConfigDiff:
    added: list[StreamConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[StreamConfig] = field(default_factory=list)  # restart with their new config
    analytics: bool = False  # zones, lines, alert rules or stages
    lanes: bool = False
    restart_required: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.analytics or self.lanes
                    or self.restart_required)

    def summary(self) -> dict:
        """What a reply and the log say about the change."""
        return {"streams_added": [s.id for s in self.added], "streams_removed": list(self.removed),
                "streams_restarted": [s.id for s in self.changed], "analytics_changed": self.analytics,
                "lanes_changed": self.lanes}


def diff(old: PipelineConfig, new: PipelineConfig) -> ConfigDiff:
    before = {s.id: s for s in old.streams}
    after = {s.id: s for s in new.streams}
    return ConfigDiff(
        added=[s for sid, s in after.items() if sid not in before],
        removed=[sid for sid in before if sid not in after],
        changed=[s for sid, s in after.items() if sid in before and before[sid] != s],
        analytics=any(getattr(old, key) != getattr(new, key) for key in ("zones", "lines", "alerts", "stages")),
        lanes=old.lanes != new.lanes,
        restart_required=[key for key in RESTART_SECTIONS if getattr(old, key) != getattr(new, key)],
    )
