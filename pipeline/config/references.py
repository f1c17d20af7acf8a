"""Cross-references of a whole config, checked when it is read: names are unique, every name a key refers
to exists, and no two outputs write to the same place (two sinks on one SQLite file, two MQTT outputs
with one topic prefix on one broker: their rows or events would mix, or one would take the other's
delivery cursor). Pure: paths are compared as written, nothing is opened (see `pipeline.runtime.preflight`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline import plugins
from pipeline.config.fields import KeyPathError, key_path, same_place
from pipeline.config.outputs import is_event_output, uses_outbox

if TYPE_CHECKING:
    from pipeline.config.models import PipelineConfig

_ZONE_RULES = ("dwell", "occupancy", "enter", "exit")


def check(config: PipelineConfig) -> None:
    """Raise KeyPathError at the first key that refers to nothing, repeats a name or shares an output."""
    _unique("streams", [s.id for s in config.streams], "id")
    _unique("lanes", [lane.name for lane in config.lanes], "name")
    lanes = {lane.name for lane in config.lanes}
    stream_ids = {s.id for s in config.streams}
    for i, s in enumerate(config.streams):
        if s.lane not in lanes:
            raise KeyPathError(("streams", i, "lane"), f"unknown lane '{s.lane}'; defined lanes: {sorted(lanes)}")
    analytics(config, stream_ids)
    if not config.tracker.enabled and (config.zones or config.lines):
        key = "zones" if config.zones else "lines"
        raise KeyPathError(("tracker", "enabled"), f"the {key} follow tracks, and the tracker is off: they would never "
                           "fire; turn the tracker on or take the zones and lines out")
    _stream_references("stages", config.stages, stream_ids)
    outputs(config)


def analytics(config: Any, stream_ids: set[str]) -> None:
    """The checks of `config.zones`, `.lines` and `.alerts` (names unique, every zone, line and stream named
    exists, a rule's classes reach it); `stream_ids`: the streams there are (a fleet's are in its database)."""
    _unique("zones", [z.name for z in config.zones], "name")
    _unique("lines", [ln.name for ln in config.lines], "name")
    _unique("alerts", [rule.name for rule in config.alerts], "name")
    _stream_references("zones", config.zones, stream_ids)
    _stream_references("lines", config.lines, stream_ids)
    _rules(config)


def _stream_references(key: str, items: list, stream_ids: set[str]) -> None:
    for i, item in enumerate(items):
        for sid in item.streams or []:
            if sid not in stream_ids:
                raise KeyPathError((key, i, "streams"), f"unknown stream '{sid}'; defined streams: {sorted(stream_ids)}")


def _rules(config: Any) -> None:
    zones = {z.name: z for z in config.zones}
    lines = {ln.name: ln for ln in config.lines}
    for i, rule in enumerate(config.alerts):
        if rule.when in _ZONE_RULES and rule.zone not in zones:
            raise KeyPathError(("alerts", i, "zone"), f"rule '{rule.name}' needs a zone; defined zones: {sorted(zones)}")
        if rule.when == "cross" and rule.line not in lines:
            raise KeyPathError(("alerts", i, "line"), f"rule '{rule.name}' needs a line; defined lines: {sorted(lines)}")
        target = zones[rule.zone] if rule.when in _ZONE_RULES else lines[rule.line]
        outside = [c for c in rule.classes or [] if target.classes is not None and c not in target.classes]
        if outside:
            kind = "zone" if rule.when in _ZONE_RULES else "line"
            raise KeyPathError(("alerts", i, "classes"), f"{outside} never reach rule '{rule.name}': its {kind} "
                               f"'{target.name}' counts only {target.classes}; add them there or remove them here")


def outputs(config: PipelineConfig) -> None:
    """No two sinks write one file or folder, or deliver to one destination under one name."""
    places: dict[Any, tuple] = {}

    def claim(place: Any, loc: tuple, what: str) -> None:
        if place in places:
            raise KeyPathError(loc, f"{what} is already written by {key_path(places[place])}; give each its own")
        places[place] = loc

    names: dict[str, tuple] = {}
    events = False
    for i, entry in enumerate(config.sinks):
        events = events or uses_outbox(entry)
        writes = plugins.output(entry.type).writes
        if writes is not None:
            value = getattr(entry, writes[0])
            claim(same_place(value), ("sinks", i, writes[0]), f"'{value}'")
        if entry.type == "webhook":
            claim(("webhook", entry.url), ("sinks", i, "url"), "this url")
        if entry.type == "postgres":  # one storage sink per database, however its DSN is written
            claim(("postgres", *_database(entry.dsn)), ("sinks", i, "dsn"), "this database")
        if entry.type == "mqtt":
            claim(("mqtt", entry.host, entry.port, entry.topic_prefix), ("sinks", i, "topic_prefix"),
                  f"topic prefix '{entry.topic_prefix}' on {entry.host}:{entry.port}")
        name = getattr(entry, "outbox_name", None) or (getattr(entry, "name", None) if is_event_output(entry) else None)
        if name is not None:  # after the url and prefix: those say more
            _claim_name(names, name, bool(getattr(entry, "name", None)), i)
    if events:
        claim(same_place(config.runtime.outbox_path), ("runtime", "outbox_path"),
              f"'{config.runtime.outbox_path}' (the outbox)")


def _database(dsn: str) -> tuple:
    """Host, port and database a PostgreSQL DSN names (URL or key=value), as far as the DSN itself says."""
    try:
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - the postgres extra, which the sink needs

        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - psycopg missing or a DSN it cannot read: the sink says so when it starts
        return (dsn,)
    if not {"host", "hostaddr", "service"} & set(parts):  # the server comes from elsewhere (the environment)
        return (dsn,)
    server = tuple(str(parts.get(key, "")) for key in ("service", "host", "hostaddr"))
    return (*server, str(parts.get("port", "5432")), parts.get("dbname") or parts.get("user", ""))


def _claim_name(names: dict[str, tuple], name: str, given: bool, i: int) -> None:
    """An output's name, given or its default (a webhook's, an MQTT output's, the event log's), is its own: the
    outbox keeps each cursor under it."""
    here = ("sinks", i, "name") if given else ("sinks", i)
    if name in names:
        other = names[name]
        taken_by = key_path(other) if len(other) == 3 else f"{key_path(other)} (its default name)"
        fix = "give one of them another `name:`" if not name.startswith(("sqlite:", "postgres:")) else \
            "one storage sink per database"
        raise KeyPathError(here, f"output name '{name}' is already taken by {taken_by}; {fix}")
    names[name] = here


def _unique(key: str, names: list[str], field: str) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise KeyPathError((key, i, field), f"duplicate {field} '{name}' (first at {key} -> {seen[name]})")
        seen[name] = i
