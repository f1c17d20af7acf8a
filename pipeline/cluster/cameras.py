"""The fleet's cameras as the API and the `fleet import` command change them: validated like the YAML's
`streams:` entries, then written to `fleet_cameras` (each instance notices at its next heartbeat)."""
from __future__ import annotations

import threading
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline import plugins
from pipeline.cluster.store import FleetStore
from pipeline.config.fields import KeyPathError, key_path
from pipeline.config.loader import config_text, expanded, key_lines, located, problems_of
from pipeline.config.models import StreamConfig
from pipeline.errors import ConfigError, NoSuchItem, StreamExists
from pipeline.masking import mask_url

IMPORTED = ("plugins", "detector", "streams", "zones", "lines", "alerts")
"""The keys of a file that `fleet import` reads; ${NAME}s in the others (a whole config's `runtime:`) are not read."""


def stream_entry(entry: dict, where: str, lanes: set[str] | None = None) -> dict:
    """`entry` as it would be stored: validated as a `streams:` entry (ConfigError naming `where` and the key
    otherwise), with only the keys that were given; `lanes`: those a camera may name (None: any)."""
    try:
        config = StreamConfig.model_validate(entry)
    except ValidationError as exc:  # in the config loader's words
        problems = [f"{where} -> {key_path(p.loc)}: {p.message}" for p in problems_of(exc, entry, StreamConfig)]
        raise ConfigError("\n".join(problems)) from None
    if lanes is not None and config.lane not in lanes:
        raise ConfigError(f"{where} -> lane: unknown lane '{config.lane}'; this instance's lanes: {sorted(lanes)}")
    return config.model_dump(mode="json", exclude_unset=True)


class FleetCameras:
    """Camera changes of one instance's API, written to the fleet's database; each is one transaction there,
    so changes from several instances at once neither overwrite a camera nor lose a change (thread-safe: one
    connection, one change at a time)."""

    def __init__(self, store: FleetStore, lanes: set[str]):
        self.store, self.lanes = store, lanes
        self._lock = threading.Lock()

    def add(self, entry: dict) -> None:
        entry = stream_entry(entry, f"streams -> {entry.get('id')}", self.lanes)
        with self._lock:
            if not self.store.add_camera(entry):
                raise StreamExists(f"stream '{entry['id']}' already exists in the fleet; remove it first or choose "
                                   "another id")

    def change(self, stream_id: str, changes: dict) -> None:
        """Change some keys (a None value takes the key out); the instance running it restarts it."""
        def merged(current: dict) -> dict:
            entry = {key: value for key, value in {**current, **changes}.items() if value is not None}
            return stream_entry(entry, f"streams -> {stream_id}", self.lanes)

        with self._lock:
            if not self.store.change_camera(stream_id, merged):
                raise NoSuchItem(f"no stream '{stream_id}' in the fleet")

    def remove(self, stream_id: str) -> None:
        with self._lock:
            if not self.store.delete_camera(stream_id):
                raise NoSuchItem(f"no stream '{stream_id}' in the fleet")

    def close(self) -> None:
        self.store.close()


def read_fleet_file(path: str | Path) -> dict:
    """The keys a fleet imports (IMPORTED) of a file (a whole pipeline config, or its `streams:`, `zones:`, `lines:`
    and `alerts:` only), read as a config is (`${NAME}` from the environment), its `plugins:` loaded (they may
    register URL schemes and engines)."""
    path = Path(path)
    text = config_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a mapping; write the cameras under `streams:` as in a config")
    lines = key_lines(text, path)  # a key given twice is refused: YAML keeps the last, half a section would be lost
    data = expanded({key: value for key, value in data.items() if key in IMPORTED}, path, lines)
    try:
        plugins.load(list(data.get("plugins") or []))
    except ValueError as exc:
        raise ConfigError(f"{path}: plugins: {exc}") from None
    return data


def read_streams(data: dict, path: str | Path) -> list[dict]:
    """The `streams:` entries of a file's mapping (`read_fleet_file`), each validated (none: an empty list); every
    problem of every entry at once, each at its line, as the config loader words it."""
    streams = data.get("streams") or []
    if not isinstance(streams, list):
        raise ConfigError(f"{path}: streams: must be a list of cameras, as in a config")
    entries, problems = [], []
    for i, entry in enumerate(streams):
        if not isinstance(entry, dict):  # validated as {}, it would be told its id and url are missing
            problems.append(KeyPathError(("streams", i), f"{mask_url(repr(entry))} is not a camera's entry; write its "
                                         "keys, as in a config: - {id: dock, url: rtsp://...}"))
            continue
        try:
            entries.append(StreamConfig.model_validate(entry).model_dump(mode="json", exclude_unset=True))
        except ValidationError as exc:
            problems += [KeyPathError(("streams", i, *p.loc), p.message) for p in problems_of(exc, entry, StreamConfig)]
    if problems:
        raise located(path, problems)
    ids = [entry["id"] for entry in entries]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigError(f"{path}: streams: ids {repeated} appear more than once")
    return entries
