"""The fleet's zones, lines and alert rules in its database: in a fleet (`runtime.cluster`) they, like its
cameras, live there and not in any instance's file.

One row per entry in `fleet_analytics` (section, name, the entry's keys as written, its place in the list).
Every change raises the one number in `fleet_analytics_version` in its transaction, so an instance notices a
change by reading that number at each heartbeat (`pipeline.cluster.coordinator`) and then applies the whole
document live. A change locks that row first: changes from several instances at once apply one after the
other, each to the document the one before left, so none is lost; each is validated whole, as the YAML's
sections are (`validate`), before anything is written.
"""
from __future__ import annotations

import copy
import json
import threading
from typing import Any, Callable, Iterable, TypeVar

from pydantic import ValidationError

from pipeline.config import references
from pipeline.config.analytics import AlertRule, LineConfig, ZoneConfig
from pipeline.config.fields import KeyPathError, Strict, key_path
from pipeline.config.loader import problems_of
from pipeline.errors import ConfigError, NoSuchItem
from pipeline.runtime.preflight import analytics_class_problems

T = TypeVar("T")

SECTIONS = ("zones", "lines", "alerts")
Document = dict[str, list[dict]]
"""Each section's entries, in order, as their keys are written in YAML."""


class Analytics(Strict):
    """The three sections of a config that a fleet keeps in its database."""

    zones: list[ZoneConfig] = []
    lines: list[LineConfig] = []
    alerts: list[AlertRule] = []

    def document(self) -> Document:
        return {section: [item.model_dump(mode="json", exclude_unset=True) for item in getattr(self, section)]
                for section in SECTIONS}


def validate(doc: Document, stream_ids: Iterable[str], class_names: tuple[list[str], str] | None = None,
             where: str = "") -> Analytics:
    """`doc` checked as a config's `zones:`, `lines:` and `alerts:` are: each entry's keys, names unique, every
    zone and line a rule names exists, a rule's classes reach its zone or line, every stream named is one of
    `stream_ids` (the fleet's cameras), and with `class_names` (names, where they come from) every class is
    one of them. ConfigError otherwise, each problem at its key path (`where` first), an entry by its name."""
    problems: list[KeyPathError] = []
    try:
        model = Analytics.model_validate(doc)
        references.analytics(model, set(stream_ids))
    except ValidationError as exc:
        problems = problems_of(exc, doc, Analytics)
    except KeyPathError as exc:
        problems = [exc]
    else:
        if class_names is not None:
            problems = analytics_class_problems(model, *class_names)
    if problems:
        raise ConfigError("\n".join(f"{where}{key_path(_named(p.loc, doc))}: {p.message}" for p in problems))
    return model


def _named(loc: tuple, doc: Document) -> tuple:
    """`zones -> 2 -> polygon` as `zones -> door -> polygon`: the API and the database know entries by name."""
    if len(loc) > 1 and loc[0] in SECTIONS and isinstance(loc[1], int) and loc[1] < len(doc.get(loc[0]) or []):
        entry = doc[loc[0]][loc[1]]
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            return (loc[0], entry["name"], *loc[2:])
    return loc


# -- the document's edits --------------------------------------------------------------------------------
def put(doc: Document, section: str, name: str, entry: dict) -> bool:
    """Set the entry `name` of `section` (an existing one keeps its place); True when it is new."""
    entry = {"name": name, **{key: value for key, value in entry.items() if key != "name"}}
    items = doc.setdefault(section, [])
    for i, item in enumerate(items):
        if item.get("name") == name:
            items[i] = entry
            return False
    items.append(entry)
    return True


def remove(doc: Document, section: str, name: str) -> None:
    items = doc.get(section) or []
    if not any(item.get("name") == name for item in items):
        raise NoSuchItem(f"{section}: no entry named '{name}' in the fleet; there are: "
                         f"{[item.get('name') for item in items]}")
    doc[section] = [item for item in items if item.get("name") != name]


# -- the database ---------------------------------------------------------------------------------------
def read(cur) -> tuple[int, Document]:
    """The version and the document, as one transaction sees them."""
    number = version(cur)
    cur.execute("SELECT section, entry FROM fleet_analytics ORDER BY position")
    doc: Document = {section: [] for section in SECTIONS}
    for section, entry in cur.fetchall():
        doc[section].append(entry)
    return number, doc


def version(cur) -> int:
    """The number every change raises."""
    cur.execute("SELECT version FROM fleet_analytics_version")
    return cur.fetchone()[0]


def changing(edit: Callable[[Document], T], check: Callable[[Document, set[str]], Analytics]) -> Callable[[Any], T]:
    """The work of one change's transaction: lock the version row, `edit(document)` (in place), then
    `check(document, the fleet's camera ids)` validates it (and may apply it; what it raises aborts the
    transaction: nothing is written), then the entries that changed are written and the version raised.
    Returns what `edit` returned."""
    def work(cur) -> T:
        cur.execute("SELECT version FROM fleet_analytics_version FOR UPDATE")
        _, old = read(cur)
        new = copy.deepcopy(old)
        result = edit(new)
        # the cameras it names stay until it is written (a camera's removal reads this document, locked too)
        cur.execute("SELECT id FROM fleet_cameras WHERE id = ANY(%s) FOR SHARE", (_named_streams(new),))
        cur.execute("SELECT id FROM fleet_cameras")
        _write(cur, old, check(new, {row[0] for row in cur.fetchall()}).document())
        return result

    return work


def _named_streams(doc: Document) -> list[str]:
    named: set[str] = set()
    for section in ("zones", "lines"):
        for item in doc.get(section) or []:
            streams = item.get("streams") if isinstance(item, dict) else None
            if isinstance(streams, list):
                named.update(s for s in streams if isinstance(s, str))
    return sorted(named)


def _write(cur, old: Document, new: Document) -> None:
    for section in SECTIONS:
        before = {item["name"]: item for item in old.get(section, [])}
        after = {item["name"]: item for item in new[section]}
        gone = sorted(set(before) - set(after))
        if gone:
            cur.execute("DELETE FROM fleet_analytics WHERE section = %s AND name = ANY(%s)", (section, gone))
        changed = [(section, name, json.dumps(item)) for name, item in after.items() if before.get(name) != item]
        if changed:
            cur.executemany("INSERT INTO fleet_analytics (section, name, entry) VALUES (%s, %s, %s) ON CONFLICT "
                            "(section, name) DO UPDATE SET entry = excluded.entry, updated_at = now()", changed)
    cur.execute("UPDATE fleet_analytics_version SET version = version + 1")


class FleetAnalytics:
    """Zone, line and rule changes of one instance's API, written to the fleet's database, each in one
    transaction (thread-safe: one connection, one change at a time)."""

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        # how long `check` may wait for the pipeline inside a change's transaction, which locks the fleet's rows
        # meanwhile: well under the time the database lets a transaction idle (`FleetStore.idle_limit_s`)
        self.wait_limit_s = store.idle_limit_s / 2

    def document(self) -> Document:
        with self._lock:
            return self.store.tx(read)[1]

    def change(self, edit: Callable[[Document], T], check: Callable[[Document, set[str]], Analytics]) -> T:
        """`changing(edit, check)` in one transaction."""
        with self._lock:
            return self.store.tx(changing(edit, check))

    def close(self) -> None:
        self.store.close()
