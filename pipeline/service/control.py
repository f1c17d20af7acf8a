"""Every change to a running pipeline, one at a time: the config file is the source of truth.

An API change edits the file's document (comments and layout kept), validates the whole of it, writes it
beside the file, applies the difference to the running pipeline, and only then puts the file in place,
atomically: a later reload never undoes it, and a change that fails leaves both the pipeline and the
file as they were. A file edited by hand since it was last applied is not applied in passing: the change
is refused (409) until it is reloaded. A reload reads the file, validates all of it first (a bad file
changes nothing; the error names file, line and key path) and applies the difference. Pause and resume
are states of the running pipeline, not of the file. Without a file (a config made in code), changes
apply to the running pipeline only. `${NAME}` is read from the environment in the file only, never in
what the API is sent (it would echo the environment back).

In a fleet (`runtime.cluster`) the cameras, zones, lines and alert rules live in the fleet's database
instead, and the file has none. The API's camera changes are written there (`pipeline.cluster.cameras.
FleetCameras`), and the coordinator starts and stops the cameras this instance holds (`set_streams`). A zone,
line or rule change is validated with the fleet's whole document and applied here inside the transaction
that writes it (`pipeline.cluster.analytics`): refused, nothing is written; the other instances apply it at
their next heartbeat (`set_analytics`). Reloads keep the database's cameras, zones, lines and rules.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from pipeline.cluster import analytics
from pipeline.config.diff import ConfigDiff
from pipeline.config.document import ConfigDocument
from pipeline.config.loader import config_text, parse_config
from pipeline.errors import (ConfigError, FileChanged, NoConfigFile, PartiallyApplied, PipelineError,
                             StreamExists)
from pipeline.runtime.runner import PipelineRunner

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOCATION = re.compile(r"^[^\n]*?:\d+: ", re.MULTILINE)


class Control:
    """runner: the running pipeline. path: its config file (None: no file to edit or reload). fleet: in a
    fleet, where cameras are added, changed and removed (`pipeline.cluster.cameras.FleetCameras`), and
    fleet_analytics where zones, lines and rules are (`pipeline.cluster.analytics.FleetAnalytics`). applied: the
    file's text the running config was read from (default: the file now), so an edit made while the pipeline
    started is not taken as applied."""

    def __init__(self, runner: PipelineRunner, path: str | Path | None = None, fleet=None, fleet_analytics=None,
                 applied: str | None = None):
        self.runner = runner
        self.path = Path(path) if path is not None else None
        self.fleet, self.fleet_analytics = fleet, fleet_analytics
        self._lock = threading.Lock()
        if applied is None:
            applied = self.path.read_text(encoding="utf-8") if self.path is not None else ""
        self._applied = applied  # the file as last applied

    # -- cameras --------------------------------------------------------------------------------
    def add_stream(self, entry: dict) -> None:
        """Add a camera; OtherShard when the runner runs a shard and the camera belongs to another one."""
        _no_variables("streams", entry)
        if self.fleet is not None:
            return self.fleet.add(entry)
        self._of_this_shard(entry.get("id"))

        def add(doc: ConfigDocument) -> None:
            if any(item.get("id") == entry["id"] for item in doc.entries("streams")):
                raise StreamExists(f"stream '{entry['id']}' already exists; remove it first or choose another id")
            doc.put("streams", entry["id"], entry)

        self._change(add)

    def change_stream(self, stream_id: str, changes: dict) -> None:
        """Change some keys of a stream (a None value takes the key out): that stream alone restarts."""
        _no_variables("streams", changes)
        if self.fleet is not None:
            return self.fleet.change(stream_id, changes)
        self._of_this_shard(stream_id)

        def change(doc: ConfigDocument) -> None:
            entry = {**doc.get("streams", stream_id), **changes}
            doc.put("streams", stream_id, {key: value for key, value in entry.items() if value is not None})

        self._change(change)

    def remove_stream(self, stream_id: str) -> None:
        if self.fleet is not None:
            return self.fleet.remove(stream_id)
        self._of_this_shard(stream_id)

        def remove(doc: ConfigDocument) -> None:
            doc.remove("streams", stream_id)  # first: an unknown id is a 404 whatever names it
            users = [f"{section[:-1]} '{item.get('name', item.get('python'))}'"
                     for section in ("zones", "lines", "stages")
                     for item in doc.entries(section) if stream_id in (item.get("streams") or [])]
            if users:
                raise ConfigError(f"stream '{stream_id}' is in the streams of {', '.join(users)}: take it out "
                                  "there (or remove them) first, then remove the camera; nothing was changed")

        self._change(remove)

    def set_streams(self, streams: list) -> dict[str, str]:
        """Run exactly `streams` from now on, the rest of the config as it is (the coordinator of a fleet), but
        for those this instance cannot run (a file it does not have, a decoder it lacks): each is left out, not
        the whole change refused; returns them, each with why."""
        with self._lock:
            config = self.runner.config
            try:
                self.runner.reconfigure(config.model_copy(update={"streams": list(streams)}))
                return {}
            except ConfigError:
                self.runner.check(config.model_copy(update={"streams": []}))  # a problem besides the streams: raised
                refused = {}
                for stream in streams:  # each alone: one running unchanged passes, its file may be gone
                    try:
                        self.runner.check(config.model_copy(update={"streams": [stream]}))
                    except ConfigError as exc:
                        refused[stream.id] = str(exc)
                if not refused:
                    raise
            self.runner.reconfigure(config.model_copy(update={"streams": [s for s in streams if s.id not in refused]}))
            return refused

    def pause_stream(self, stream_id: str) -> bool:
        with self._lock:
            done = self.runner.table.pause(stream_id)
        log.info("stream '%s' paused through the API%s", stream_id,
                 "" if done else " (its last frames still go through)")
        return done

    def resume_stream(self, stream_id: str) -> None:
        with self._lock:
            paused = stream_id in self.runner.table.paused()
            self.runner.table.resume(stream_id)
        if paused:
            log.info("stream '%s' resumed through the API", stream_id)

    def _of_this_shard(self, stream_id: Any) -> None:
        shard = self.runner.placement.shard
        if shard is not None and isinstance(stream_id, str):
            shard.check(stream_id)

    # -- zones, lines, alert rules --------------------------------------------------------------
    def put(self, section: str, name: str, entry: dict) -> bool:
        """Set a zone, line or alert rule (`section` zones, lines or alerts); True when it is new."""
        key = "name"
        _no_variables(section, {**entry, "name": name})  # the name in the path is written to the file too
        if entry.get(key, name) != name:
            raise ConfigError(f"{section} -> {key}: the body says '{entry[key]}' but the path says '{name}'")
        if self.fleet_analytics is not None:
            return self._fleet_change(lambda doc: analytics.put(doc, section, name, entry))
        return self._change(lambda doc: doc.put(section, name, entry))[0]

    def delete(self, section: str, name: str) -> None:
        if self.fleet_analytics is not None:
            return self._fleet_change(lambda doc: analytics.remove(doc, section, name))
        self._change(lambda doc: doc.remove(section, name))

    def entries(self, section: str) -> list[dict]:
        """Every zone, line or rule of `section`, defaults included: in a fleet the database's."""
        if self.fleet_analytics is None:
            items = getattr(self.runner.config, section)
        else:
            items = getattr(analytics.Analytics.model_validate(self.fleet_analytics.document()), section)
        return [item.model_dump(mode="json") for item in items]

    def set_analytics(self, doc: analytics.Document, cameras: set[str]) -> ConfigDiff:
        """Run the fleet's zones, lines and rules `doc` from now on (the coordinator, when the database's
        changed; `cameras`: the fleet's camera ids). ConfigError when this instance cannot run them."""
        model = analytics.validate(doc, cameras, self._class_names())
        with self._lock:
            return self.runner.reconfigure(_with_analytics(self.runner.config, model))

    def _fleet_change(self, edit: Callable[[analytics.Document], T]) -> T:
        """`edit` the fleet's document in one transaction in which the result is validated whole and applied
        here before it is written; undone here when it could not be written after all. The lock is held
        for applying only, never across a database call (the coordinator stops cameras through it)."""
        applied: list[Any] = []

        def check(doc: analytics.Document, cameras: set[str]) -> analytics.Analytics:
            model = analytics.validate(doc, cameras, self._class_names())
            # the transaction holds the fleet's rows meanwhile: do not wait long for a camera change to finish
            if not self._lock.acquire(timeout=self.fleet_analytics.wait_limit_s):
                raise PipelineError("this instance is starting or stopping cameras; nothing was changed: send the "
                                    "change again in a few seconds")
            try:
                applied.append(self.runner.config)
                change = self.runner.reconfigure(_with_analytics(self.runner.config, model))
            finally:
                self._lock.release()
            log.info("the fleet's %s changed through the API: %s", ", ".join(analytics.SECTIONS), change.summary())
            return model

        try:
            return self.fleet_analytics.change(edit, check)
        except BaseException:
            if applied:
                with self._lock:
                    self.runner.reconfigure(_with_analytics(self.runner.config, applied[0]))
            raise

    def _class_names(self) -> tuple[list[str], str]:
        return self.runner.detector.class_names, "the running detector"

    # -- the file -------------------------------------------------------------------------------
    def reload(self) -> ConfigDiff:
        """Re-read the config file and apply what changed. ConfigError (with file:line) for a bad file,
        RestartRequired for a change that cannot apply while running: nothing changes then. PartiallyApplied
        naming what could not be applied (a camera, a sink): the rest runs, and the next change tries it again.
        NoConfigFile when the pipeline was not started from a file."""
        if self.path is None:
            raise NoConfigFile("this pipeline was not started from a config file, so there is nothing to reload; "
                               "change it through the API (/api/streams, /api/zones, /api/lines, /api/alerts), or "
                               "start it from a config file to reload one")
        with self._lock:
            text = config_text(self.path)
            try:
                change = self.runner.reconfigure(self._with_fleet_streams(parse_config(text, self.path)))
            except PartiallyApplied:  # the file runs, but for what is named: the next change retries that
                self._applied = text
                raise
            self._applied = text
        log.info("reloaded %s: %s", self.path, change.summary())
        return change

    def reload_in_background(self) -> None:
        """A reload for a signal handler (SIGHUP): on a thread of its own, once the pipeline runs (one asked for
        while it starts applies then), its outcome logged."""
        def run() -> None:
            self.runner.running.wait()  # a daemon thread: one asked for while the pipeline stops ends with it
            try:
                self.reload()
            except PartiallyApplied as exc:
                log.error("reload of %s applied in part:\n%s", self.path, exc)
            except PipelineError as exc:
                log.error("reload of %s refused, nothing changed:\n%s", self.path, exc)

        threading.Thread(target=run, name="reload", daemon=True).start()

    def _change(self, edit: Callable[[ConfigDocument], T]) -> tuple[T, ConfigDiff]:
        with self._lock:
            doc = ConfigDocument.read(self.path) if self.path else ConfigDocument.of(self.runner.config)
            if self.path is not None and doc.read_text != self._applied:
                raise FileChanged(f"{self.path} was edited since it was last applied; reload it first "
                                  "(POST /api/reload or SIGHUP), then repeat this change")
            result = edit(doc)
            try:
                config = self._with_fleet_streams(doc.validate())
            except ConfigError as exc:  # the lines are those of the edited text: the key path says more
                raise ConfigError(_LOCATION.sub("", str(exc))) from None
            staged = doc.stage()
            try:
                change = self.runner.reconfigure(config)
            except PartiallyApplied as partly:
                try:
                    self._put_in_place(doc, staged)  # the file says what is wanted; a reload retries the rest
                except PartiallyApplied as unwritten:
                    raise PartiallyApplied(f"{partly}; {unwritten}") from None
                raise
            except BaseException:
                doc.discard(staged)
                raise
            self._put_in_place(doc, staged)
        log.info("config changed through the API%s: %s", f" and written to {self.path}" if self.path else "",
                 change.summary())
        return result, change

    def _with_fleet_streams(self, config):
        """In a fleet the file has no cameras, zones, lines or rules: those running stay (the coordinator
        decides which cameras run, and applies the database's zones, lines and rules)."""
        if self.fleet is None:
            return config
        return _with_analytics(config, self.runner.config).model_copy(update={"streams": self.runner.streams()})

    def _put_in_place(self, doc: ConfigDocument, staged: Path | None) -> None:
        """Write the changed file over the one read, unless it was edited by hand while the change was applied
        (PartiallyApplied: that edit is kept, and the next change through the API waits for a reload)."""
        if self.path is not None and _text_of(self.path) != doc.read_text:
            doc.discard(staged)
            raise PartiallyApplied(f"applied to the running pipeline, except writing it to {self.path}: the file was "
                                   "edited while the change was being applied, and that edit is kept, so the file and "
                                   "the pipeline differ now. Reload the file (POST /api/reload or SIGHUP) to run what "
                                   "it says, then repeat the change if it is still wanted")
        doc.commit(staged)
        self._applied = doc.text() if self.path is not None else ""


def _text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # gone or unreadable now: not the file the change was made to
        return None


def _with_analytics(config, source):
    """`config` with the zones, lines and rules of `source` (a config, or `analytics.Analytics`)."""
    return config.model_copy(update={section: getattr(source, section) for section in analytics.SECTIONS})


def _no_variables(section: str, entry: dict) -> None:
    if "${" in json.dumps(entry):
        raise ConfigError(f"{section}: '${{...}}' is read from the environment in the config file only, not in "
                          "API requests; send the value itself, or put it in the file (a '${' as it is written $${) "
                          "and reload")


def entry_of(model: Any) -> dict:
    """A pydantic model as the keys a person would write in the file (defaults left out)."""
    return model.model_dump(mode="json", exclude_unset=True)
