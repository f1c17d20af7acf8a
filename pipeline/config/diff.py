"""What changed between the config a pipeline runs and a new one, and what of it can change while it runs.

Live: streams (only the added, removed and changed ones start or stop), zones, lines, alert rules,
`stages:` plugins, lane settings and `sinks:` (only the added, removed and changed entries open or close).
Not live: the detector, the tracker, `runtime:` and `plugins:` — a change there is refused as "restart
required" (a new engine would have to be built and warmed beside the old one, and its batch sizes and
CUDA graphs are fixed at start; runtime settings size the threads and queues).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.models import PipelineConfig, StreamConfig

RESTART_SECTIONS = ("detector", "tracker", "runtime", "plugins")
"""Sections a running pipeline cannot change."""


@dataclass(frozen=True)
class ConfigDiff:
    added: list[StreamConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[StreamConfig] = field(default_factory=list)  # restart with their new config
    analytics: bool = False  # zones, lines, alert rules or stages
    lanes: bool = False
    sinks_added: list = field(default_factory=list)  # `sinks:` entries
    sinks_removed: list = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.analytics or self.lanes or self.sinks_added
                    or self.sinks_removed or self.restart_required)

    def summary(self) -> dict:
        """What a reply and the log say about the change."""
        return {"streams_added": [s.id for s in self.added], "streams_removed": list(self.removed),
                "streams_restarted": [s.id for s in self.changed], "analytics_changed": self.analytics,
                "lanes_changed": self.lanes, "sinks_added": [entry.type for entry in self.sinks_added],
                "sinks_removed": [entry.type for entry in self.sinks_removed]}


def diff(old: PipelineConfig, new: PipelineConfig) -> ConfigDiff:
    before = {s.id: s for s in old.streams}
    after = {s.id: s for s in new.streams}
    return ConfigDiff(
        added=[s for sid, s in after.items() if sid not in before],
        removed=[sid for sid in before if sid not in after],
        changed=[s for sid, s in after.items() if sid in before and before[sid] != s],
        analytics=any(getattr(old, key) != getattr(new, key) for key in ("zones", "lines", "alerts", "stages")),
        lanes=old.lanes != new.lanes,
        sinks_added=[entry for entry in new.sinks if entry not in old.sinks],
        sinks_removed=[entry for entry in old.sinks if entry not in new.sinks],
        restart_required=[key for key in RESTART_SECTIONS if getattr(old, key) != getattr(new, key)],
    )
