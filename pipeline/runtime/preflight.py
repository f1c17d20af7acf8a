"""What only the machine that runs a config can tell, checked before anything starts: the model file is a
model whose head is recognised, every class name a key uses is one of the detector's, file streams exist,
every file or folder the pipeline writes (storage, JSONL, media, MOT, the outbox) can be written, and
PostgreSQL's DSNs can be read and psycopg, the optional library it needs, is installed.

    problems = check(config)                 # [] when it can start here
    raise located("site.yaml", problems)     # site.yaml:12: detector -> model: ... (pipeline.config.loader)

`run_pipeline.py validate` and `run` both check, so a config that cannot start exits 2 before any stream
starts rather than failing (or running broken) later. A running pipeline checks a new config with
`live_problems` against the classes of the detector it already has, and the files of what the change starts.
Config validation stays pure: this is the step that opens files.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Collection

from pipeline import plugins
from pipeline.config.diff import ConfigDiff
from pipeline.config.fields import KeyPathError, key_path
from pipeline.config.models import DetectorConfig, PipelineConfig, StreamConfig
from pipeline.config.outputs import uses_outbox
from pipeline.detect.engines import read_model
from pipeline.detect.names import names_from_config
from pipeline.detect.recognize import class_names, detect_head, input_size
from pipeline.errors import ConfigError, EngineError
from pipeline.sinks.storage.postgres import dsn_problem


def check(config: PipelineConfig, engine: str | None = None) -> list[KeyPathError]:
    """Every problem of `config` on this machine, each at its key path. engine: the engine that will load
    the model (default `detector.engine`; `auto` reads the ONNX file as every built-in engine does)."""
    problems: list[KeyPathError] = []
    names = model_problems(config.detector, engine or config.detector.engine, problems)
    if names is not None:
        problems += class_problems(config, *names)
    return problems + file_problems(config) + postgres_problems(config)


def postgres_problems(config: PipelineConfig) -> list[KeyPathError]:
    """PostgreSQL (a `postgres` sink, a fleet's database) needs psycopg, an optional extra, and DSNs libpq can read:
    otherwise the run would fail once started."""
    uses = [(("sinks", i, "type"), ("sinks", i, "dsn"), entry.dsn) for i, entry in enumerate(config.sinks)
            if entry.type == "postgres"]  # (where psycopg is needed, where the DSN is, the DSN)
    if (cluster := config.runtime.cluster) is not None:
        uses.append((("runtime", "cluster", "dsn"), ("runtime", "cluster", "dsn"), cluster.dsn))
    if not uses:
        return []
    try:
        import psycopg  # noqa: F401, PLC0415 - optional: looked for only when the config needs it
    except ImportError:
        why = "PostgreSQL needs psycopg 3, which is not installed here: pip install 'streamweave[postgres]'"
        return [KeyPathError(loc, why) for loc, _, _ in uses]
    return [KeyPathError(loc, why) for _, loc, dsn in uses if (why := dsn_problem(dsn))]


def live_problems(config: PipelineConfig, class_names: list[str], change: ConfigDiff,
                  outbox_open: bool) -> list[KeyPathError]:
    """The problems of a config a running pipeline would change to (its detector stays as it is). Files are looked
    at only for what `change` starts: the streams it adds or restarts, the sinks it adds, and the outbox unless it is
    open (`outbox_open`). A stream that runs, or finished, keeps its file open or needs it no more: a file deleted
    since must not refuse a zone edit."""
    streams = {stream.id for stream in (*change.added, *change.changed)}
    return class_problems(config, class_names, "the running detector") \
        + file_problems(config, streams, change.sinks_added, outbox=not outbox_open)


def describe(problems: list[KeyPathError]) -> str:
    """One line per problem: `key -> path: message`."""
    return "\n".join(f"{key_path(p.loc)}: {p.message}" for p in problems)


def model_problems(detector: DetectorConfig, engine: str, problems: list[KeyPathError]) -> tuple[list[str], str] | None:
    """Open the model as `engine` would and recognise its head and input size; the class names and where
    they come from (None when the model cannot be read). Problems are appended to `problems`."""
    try:
        signature, metadata = read_model(engine, detector.model)
    except (EngineError, ConfigError, ValueError) as exc:  # ValueError: a plugin engine's reader cannot be imported
        problems.append(KeyPathError(("detector", "model"), str(exc)))
        return None
    try:
        head = detect_head(signature, metadata, detector.head)
    except ConfigError as exc:
        problems.append(KeyPathError(("detector", "model"), str(exc)))
        return None
    try:
        input_size(signature, detector, metadata)
    except ConfigError as exc:
        problems.append(KeyPathError(("detector", "input_size"), str(exc)))
    try:
        names, source = class_names(signature, head, metadata, detector.class_names)
        configured = names_from_config(detector.class_names)  # a file given is read even when the model names its classes
    except ConfigError as exc:
        problems.append(KeyPathError(("detector", "class_names"), str(exc)))
        return None
    if configured is not None and configured != names:
        problems.append(KeyPathError(("detector", "class_names"), f"the model names its classes itself ({source}: "
                                     f"{names[:8]}{' ...' if len(names) > 8 else ''}) and these differ; remove "
                                     "detector.class_names"))
    return names, source


def class_problems(config: PipelineConfig, class_names: list[str], source: str) -> list[KeyPathError]:
    """Every class name the detector filter, a zone, a line or an alert rule uses must be one of
    `class_names` (from `source`): an unknown one would never match, and the rule would never fire."""
    return _unknown_classes([(("detector", "classes"), config.detector.classes)], class_names, source) \
        + analytics_class_problems(config, class_names, source)


def analytics_class_problems(config: Any, class_names: list[str], source: str) -> list[KeyPathError]:
    """`class_problems` of `config.zones`, `.lines` and `.alerts` only (a fleet's live in its database)."""
    uses = []
    for key, items in (("zones", config.zones), ("lines", config.lines), ("alerts", config.alerts)):
        uses += [((key, i, "classes"), item.classes) for i, item in enumerate(items)]
    problems = _unknown_classes(uses, class_names, source)
    kept = getattr(getattr(config, "detector", None), "classes", None)  # a fleet's analytics have no detector
    if kept:
        found = {loc for loc, _ in problems}
        problems += [KeyPathError(loc, f"class {dropped} is filtered out by detector.classes ({', '.join(kept)}): it "
                                  "never reaches this; add it there or leave it out here")
                     for loc, names in uses if loc not in found and (dropped := [n for n in names or [] if n not in kept])]
    return problems


def _unknown_classes(uses: list[tuple[tuple, list[str] | None]], class_names: list[str], source: str) -> list[KeyPathError]:
    known = set(class_names)
    shown = ", ".join(class_names[:20]) + (f", ... ({len(class_names)} in all)" if len(class_names) > 20 else "")
    return [KeyPathError(loc, f"unknown class {unknown}; the detector's classes ({source}) are: {shown}")
            for loc, names in uses if (unknown := [n for n in names or [] if n not in known])]


def file_problems(config: PipelineConfig, streams: Collection[str] | None = None, sinks: list | None = None,
                  outbox: bool = True) -> list[KeyPathError]:
    """File streams that do not exist, and files and folders the pipeline would write but cannot. streams: the ids
    of the streams to look at, sinks: the `sinks:` entries (default: all of either); outbox: whether the outbox is
    looked at (when one of those entries uses it)."""
    problems = [KeyPathError(("streams", i, "url"), why) for i, stream in enumerate(config.streams)
                if (streams is None or stream.id in streams) and (why := stream_problem(stream))]
    entries = [(i, entry) for i, entry in enumerate(config.sinks) if sinks is None or entry in sinks]
    for i, entry in entries:
        writes = plugins.output(entry.type).writes
        if writes is not None and (why := writable(getattr(entry, writes[0]), folder=writes[1] == "folder")):
            problems.append(KeyPathError(("sinks", i, writes[0]), why))
    if outbox and any(uses_outbox(entry) for _, entry in entries):
        if why := writable(config.runtime.outbox_path, folder=False):
            problems.append(KeyPathError(("runtime", "outbox_path"), why))
    return problems


def stream_problem(stream: StreamConfig) -> str | None:
    """Why a stream whose URL is a local path cannot be read, or None."""
    path = plugins.local_path(stream.url)
    if path is None:
        return None
    path = path.expanduser()  # as the reader opens it (`Demuxer`)
    kind = _kind(path)
    if kind is None:
        where = "" if path.is_absolute() else f" (relative to {os.getcwd()}, where the pipeline runs)"
        return f"no such file '{path}'{where}; check the path, or use rtsp:// or http(s):// for a camera"
    if kind == "folder":
        return f"'{path}' is a folder; name a video file in it"
    if not os.access(path, os.R_OK):
        return f"'{path}' is not readable by this user; check its permissions"
    return None


def writable(path: Path, folder: bool) -> str | None:
    """Why the file (or folder) `path` cannot be written, or None. Folders that do not exist yet are made
    at start, so the nearest existing one must be writable. A file's folder must be writable too (SQLite
    keeps its journal beside the database)."""
    path = path.expanduser()
    want, kind = "folder" if folder else "file", _kind(path)
    if kind not in (None, want):
        return (f"'{path}' is a {kind}, and a {want} is needed here; "
                + ("name a folder" if folder else f"name a file in it, e.g. '{path / 'data.db'}'"))
    if kind is not None and not os.access(path, os.W_OK):
        return f"'{path}' is not writable by this user; check its permissions or choose another {want}"
    parent = path if kind == "folder" else path.parent
    while _kind(parent) is None and parent != parent.parent:
        parent = parent.parent
    if _kind(parent) != "folder":
        return f"'{path}' cannot be made: '{parent}' is not a folder; choose another {want}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"'{path}' cannot be written: the folder '{parent}' is not writable by this user; choose another {want}"
    return None


def _kind(path: Path) -> str | None:
    """"folder", "file" (anything else that exists: a device, a pipe) or None when `path` cannot be found."""
    try:
        return "folder" if stat.S_ISDIR(path.stat().st_mode) else "file"
    except OSError:  # missing, a name too long, a loop of links: nothing usable there
        return None
