"""Apply a new config to a running pipeline: only the difference (`pipeline.config.diff`).

Streams added, removed or changed start, stop or restart one at a time (the others go on with their
trackers); zones, lines, alert rules and `stages:` change on each stream's stage worker between two of
its frames, keeping the tracks; lane settings change in the buffer; `sinks:` entries removed are drained
and closed, new ones opened (a new frame sink is told of every running stream; a new event output
starts at the newest stored event, or where an output of its name left off; one taken out with events it
had not delivered, and none of its name put back, is named in a warning with their count). A change to what
cannot change while running (the detector, the tracker, `runtime:`, `plugins:`, a lane's max_batch beyond the
engine's batch limit, event clips where no packets are kept) is refused before anything changes:
RestartRequired; so is a config that could not start (`pipeline.runtime.preflight`: a class the detector
does not have, a file stream it adds or restarts that does not exist, an output it adds that cannot be written):
ConfigError.
"""
from __future__ import annotations

import logging

from pipeline.config.diff import ConfigDiff, diff
from pipeline.config.models import LaneConfig, PipelineConfig
from pipeline.config.outputs import is_event_output
from pipeline.config.resolve import packet_ring_s, plan_stream
from pipeline.errors import ConfigError, PartiallyApplied, PipelineError, RestartRequired
from pipeline.runtime import preflight
from pipeline.runtime.build import Pipeline, stage_factory
from pipeline.runtime.streams import StreamTable
from pipeline.sinks import build_outputs
from pipeline.sinks.base import OutputContext
from pipeline.stages import build_stages, discard, restage

log = logging.getLogger(__name__)

_ANALYTICS = ("zones", "lines", "alerts", "stages")  # what the stage workers change


def check(parts: Pipeline, table: StreamTable, new: PipelineConfig) -> ConfigDiff:
    """What applying `new` would change (the streams compared with those that run); RestartRequired when it
    cannot be applied while running, ConfigError when it could not start or a stream's stages cannot be made
    with it (a class name the model does not have, a plugin's options)."""
    change = diff(parts.config.model_copy(update={"streams": table.configs()}), new)
    problems = preflight.live_problems(new, parts.detector.class_names, change, parts.events.outbox is not None)
    if problems:
        raise ConfigError(preflight.describe(problems))
    if change.restart_required:
        raise RestartRequired(f"restart required: {', '.join(change.restart_required)} changed, which a running "
                              "pipeline cannot change; nothing was applied (restart the service to apply the file)")
    limit = parts.plan.detector.max_batch
    for i, lane in enumerate(new.lanes):
        if lane.max_batch > limit:
            raise RestartRequired(f"restart required: lanes -> {i} -> max_batch: {lane.max_batch} is beyond the "
                                  f"engine's batch limit of {limit}, which is set at start; nothing was applied")
    if packet_ring_s(new) > parts.plan.packet_ring_s:
        raise RestartRequired("restart required: event clips now need each stream's last "
                              f"{packet_ring_s(new):g} s of packets, and streams keep {parts.plan.packet_ring_s:g} s "
                              "(set at start); nothing was applied")
    for entry in change.sinks_added:
        if not is_event_output(entry) and parts.outputs.draining(entry):
            raise PipelineError(f"a sink {entry.type} writing there was taken out and still delivers what it had "
                                "queued; nothing was applied: apply the change once it is done (its log says when it "
                                "closes)")
    for stream in (*change.added, *change.changed):  # a decoder this machine lacks: refused, not half-applied
        plan_stream(stream, parts.plan)
    touched = [s.id for s in new.streams] if change.analytics else [s.id for s in (*change.added, *change.changed)]
    for stream_id in touched:  # made and closed: what fails here fails before anything changes
        discard(build_stages(new, stream_id, parts.detector.class_names), stream_id)
    return change


def apply(parts: Pipeline, table: StreamTable, new: PipelineConfig, timeout: float = 10.0) -> ConfigDiff:
    """Make the running pipeline run `new`. RestartRequired or ConfigError (nothing changed) as `check`
    says; PartiallyApplied naming what could not be changed after the rest was applied (the streams that
    run are compared again at the next change, so a reload tries them again; a stream whose worker could not
    change its stages keeps them, and the zones, lines, rules and stages that run stay the old ones, so it too)."""
    change = check(parts, table, new)
    if not table.accepting:
        raise PipelineError("the pipeline is not running (it is starting or stopping); the change was not applied")
    if change.empty:
        return change
    made = _open_outputs(parts, new, change.sinks_added)  # a sink that cannot be opened changes nothing
    old = parts.config
    old_lanes = {lane.name: lane for lane in parts.config.lanes}
    parts.buffer.set_lanes([*new.lanes, *(lane for name, lane in old_lanes.items() if name not in _names(new.lanes))])
    failed: dict[str, str] = {}
    for stream_id in change.removed:
        _try(failed, stream_id, table.remove, stream_id, timeout)
    parts.config = new
    not_added = _swap_outputs(parts, new, change.sinks_removed, made, failed)
    if not_added:  # left out of what runs, so that the next change adds them again
        parts.config = new = new.model_copy(update={"sinks": [e for e in new.sinks if e not in not_added]})
    if change.analytics and not _try(failed, "stages", _restage, parts, new, timeout):
        # what runs keeps the old ones, so that the next change tries again (a stream changed already is unchanged)
        parts.config = parts.config.model_copy(update={key: getattr(old, key) for key in _ANALYTICS})
    for config in change.changed:
        _try(failed, config.id, table.replace, config, timeout)
    for config in change.added:
        _try(failed, config.id, table.add, config)
    _try(failed, "lanes", parts.buffer.set_lanes, list(new.lanes))
    log.info("config applied: %s", change.summary())
    if failed:
        raise PartiallyApplied("applied, except: " + "; ".join(f"{key}: {why}" for key, why in failed.items()))
    return change


def _restage(parts: Pipeline, new: PipelineConfig, timeout: float) -> None:
    names = parts.detector.class_names
    parts.stages.reconfigure(stage_factory(new, names, parts.track_ids),
                             lambda stream_id, stages, last: restage(new, stream_id, names, stages, last), timeout)


def _open_outputs(parts: Pipeline, config: PipelineConfig, entries: list) -> tuple[list, list]:
    """The outputs of `entries`, made and their frame sinks opened; if one fails, those opened are closed."""
    frame_sinks, event_outputs = build_outputs(entries, OutputContext(parts.detector.class_names,
                                                                      list(config.alerts), parts.run,
                                                                      clips=parts.sources, fence=parts.fence))
    opened = []
    try:
        for sink, _ in frame_sinks:
            sink.open()
            opened.append(sink)
    except BaseException:
        for sink in [*opened, *(output for output, _ in event_outputs)]:
            sink.close()
        raise
    return frame_sinks, event_outputs


def _swap_outputs(parts: Pipeline, config: PipelineConfig, removed: list, made: tuple[list, list],
                  failed: dict[str, str]) -> list:
    """Take out the `removed` entries' outputs, put in those `made`; returns the entries that could not be added."""
    taken_out = []
    for entry in removed:
        if any(known == entry for known, _ in parts.events.entries):  # an event output, or storage's events
            taken_out.append(parts.events.remove_output(entry))
        if not is_event_output(entry) and not parts.outputs.remove(entry):
            log.warning("sink %s took long to drain after it was taken out; it closes when done", entry.type)
    frame_sinks, event_outputs = made
    not_added = [entry for sink, entry in frame_sinks if not _try(failed, f"sink {entry.type}", parts.outputs.add,
                                                                  sink, entry)]
    retried = []  # names of event outputs not added: the next change adds them, with what they had left
    for output, entry in event_outputs:  # a storage entry is added whole: its frame sink and its events, or neither
        if entry in not_added:
            output.close()
            retried.append(output.name)
        elif not _try(failed, f"sink {entry.type}", _add_event_output, parts, output, entry, config.runtime.outbox_path):
            not_added.append(entry)
            retried.append(output.name)
            if entry in (other for _, other in frame_sinks):
                parts.outputs.remove(entry)
    _say_what_was_left(parts, [name for name in taken_out if name not in retried])
    return not_added


def _say_what_was_left(parts: Pipeline, names: list) -> None:
    """Warn of each event output taken out with events it had not delivered and none of its name put back: an
    entry replaced under its name (a changed timeout, a named webhook's new URL) delivers them itself."""
    running = {name for _, name in parts.events.entries}
    outbox = parts.events.outbox
    for name in names:
        left = outbox.undelivered(name) if name is not None and name not in running else 0
        if left:  # a changed url or broker makes a new default name, which starts at the newest event
            log.warning("output '%s' was taken out with %d events it had not delivered; they stay in %s, each at least "
                        "%.0f s after it was stored, for an output of that name: give the entry that replaces it "
                        "`name: %s` to deliver them there", name, left, outbox.path, outbox.keep_delivered_s, name)


def _add_event_output(parts: Pipeline, output, entry, outbox_path) -> None:
    """Hand a made output to the outbox; one it refuses is closed (an MQTT client would stay connected)."""
    try:
        parts.events.add_output(output, entry, outbox_path)
    except BaseException:
        output.close()
        raise


def _try(failed: dict[str, str], key: str, fn, *args) -> bool:
    """fn(*args); False when it raised PipelineError, recorded in `failed` under `key`."""
    try:
        fn(*args)
    except PipelineError as exc:
        failed[key] = str(exc)
        log.error("config change of %s failed: %s", key, exc)
        return False
    return True


def _names(lanes: list[LaneConfig]) -> set[str]:
    return {lane.name for lane in lanes}
