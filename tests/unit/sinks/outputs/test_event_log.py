"""Event log output and the event JSON format."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.config.outputs import JsonlOutput
from pipeline.errors import ConfigError, SinkError
from pipeline.sinks import build_outputs
from pipeline.sinks.base import OutputContext
from pipeline.sinks.outputs.event_log import RECENT_IDS, EventLogOutput
from pipeline.sinks.outputs.payload import EVENT_KEYS, event_from_json, event_to_json, wall_time
from pipeline.types import Event, Run


def event(i: int, payload=None) -> Event:
    return Event(f"id-{i}", "run-1", "cam-1", "door", "enter", i, 2, 1_700_000_000_000_000_000 + i,
                 1_700_000_000_000_000_000 + i, payload or {})


def test_event_json_has_the_agreed_keys_and_plain_numbers():
    payload = {"zone": "door", "xyxy": np.array([1.5, 2, 3, 4], np.float32), "count": np.int64(3),
               "crop": Path("/media/cam-1/crop-7.jpg")}  # a plugin's path
    named = replace(event(7, payload), class_name="car", snapshot="/media/cam-1/id-7.jpg")
    text = event_to_json(named)
    data = json.loads(text)
    assert tuple(data) == EVENT_KEYS
    assert data["ts_ns"] == 1_700_000_000_000_000_007  # integer nanoseconds, not a float
    assert data["wall_time"] == "2023-11-14T22:13:20.000Z"  # the same instant, readable, in UTC
    assert (data["class_name"], data["snapshot"], data["clip"]) == ("car", "/media/cam-1/id-7.jpg", None)
    assert data["payload"] == {"zone": "door", "xyxy": [1.5, 2.0, 3.0, 4.0], "count": 3, "crop": "/media/cam-1/crop-7.jpg"}
    loaded = event_from_json(text)
    assert loaded.payload["count"] == 3 and (loaded.class_name, loaded.snapshot) == ("car", "/media/cam-1/id-7.jpg")


@pytest.mark.parametrize("wall_ns, text", [(0, "1970-01-01T00:00:00.000Z"),
                                           (1_741_943_702_123_999_999, "2025-03-14T09:15:02.123Z")])
def test_wall_time_is_iso_8601_utc_cut_to_the_millisecond(wall_ns, text):
    assert wall_time(wall_ns) == text


def test_an_event_an_older_version_left_in_the_outbox_still_loads():
    newer = ("run_id", "wall_ns", "class_name", "wall_time", "snapshot", "clip")
    old = {k: v for k, v in json.loads(event_to_json(event(3))).items() if k not in newer}
    loaded = event_from_json(json.dumps(old))
    assert (loaded.event_id, loaded.run_id, loaded.wall_ns, loaded.ts_ns) == ("id-3", "", 0, event(3).ts_ns)
    assert (loaded.class_name, loaded.snapshot, loaded.clip) == (None, None, None)


def test_payload_that_is_not_json_raises_a_sink_error_naming_the_event():
    with pytest.raises(SinkError, match="id-1"):
        event_to_json(event(1, {"bad": object()}))


def test_event_log_appends_one_json_line_per_event(tmp_path):
    path = tmp_path / "logs" / "events.jsonl"
    out = EventLogOutput(JsonlOutput(type="jsonl", path=path, what="events"))
    for i in range(3):
        out.deliver(event(i))
    out.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == ["id-0", "id-1", "id-2"]


def test_an_event_log_path_in_the_home_folder_is_written_there(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    log = EventLogOutput(JsonlOutput(type="jsonl", path="~/logs/events.jsonl", what="events"))
    log.deliver(event(1))
    log.close()
    assert json.loads((tmp_path / "home" / "logs" / "events.jsonl").read_text())["event_id"] == "id-1"
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("how", ["rotated", "deleted"])
def test_an_event_log_moved_away_or_deleted_while_running_is_written_again_at_its_path(tmp_path, how):
    path = tmp_path / "events.jsonl"
    out = EventLogOutput(JsonlOutput(type="jsonl", path=path, what="events"))
    out.deliver(event(0))
    if how == "rotated":  # as logrotate does: moved away, a new empty file made in its place
        path.rename(tmp_path / "events.jsonl.1")
        path.touch()
    else:
        path.unlink()
    out.deliver(event(1))
    out.deliver(event(0))  # delivered again after a crash: still recognised
    out.close()
    assert [json.loads(line)["event_id"] for line in path.read_text().splitlines()] == ["id-1"]
    if how == "rotated":
        assert [json.loads(line)["event_id"] for line in (tmp_path / "events.jsonl.1").read_text().splitlines()] == ["id-0"]


def test_an_event_log_that_cannot_be_opened_again_at_once_is_opened_at_the_next_delivery(tmp_path):
    path = tmp_path / "events.jsonl"
    out = EventLogOutput(JsonlOutput(type="jsonl", path=path, what="events"))
    out.deliver(event(0))
    path.rename(tmp_path / "events.jsonl.1")
    path.mkdir()  # for a moment the path cannot be opened
    with pytest.raises(SinkError, match="cannot open the event log"):
        out.deliver(event(1))
    path.rmdir()
    out.deliver(event(1))  # the outbox's retry
    out.close()
    assert [json.loads(line)["event_id"] for line in path.read_text().splitlines()] == ["id-1"]


def test_event_log_ends_a_line_cut_short_by_a_crash(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(event_to_json(event(0)) + "\n" + '{"event_id": "id-1", "stre')
    out = EventLogOutput(JsonlOutput(type="jsonl", path=path, what="events"))
    out.deliver(event(1))
    out.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["event_id"] == "id-1"
    assert len(lines) == 3


def test_event_log_refuses_a_detections_jsonl_config(tmp_path):
    with pytest.raises(ConfigError, match="what='detections'"):
        EventLogOutput(JsonlOutput(type="jsonl", path=tmp_path / "d.jsonl"))


def test_only_event_outputs_are_built_from_the_sinks_config(tmp_path):
    sinks = [
        JsonlOutput(type="jsonl", path=tmp_path / "det.jsonl"),
        JsonlOutput(type="jsonl", path=tmp_path / "ev.jsonl", what="events"),
    ]
    run = Run("run-1", "0123456789abcdef", "0.1.0", 1_700_000_000 * 10**9)
    frame_sinks, outputs = build_outputs(sinks, OutputContext(class_names=["person"], alerts=[], run=run))
    assert [(type(o).__name__, entry.what) for o, entry in outputs] == [("EventLogOutput", "events")]
    assert [type(sink).__name__ for sink, _ in frame_sinks] == ["JsonlSink"]
    outputs[0][0].close()


def test_an_event_delivered_again_after_a_restart_is_not_appended_twice(tmp_path):
    path = tmp_path / "events.jsonl"
    config = JsonlOutput(type="jsonl", path=path, what="events")
    out = EventLogOutput(config)
    for i in range(3):
        out.deliver(event(i))
    out.close()  # as if killed after appending id-2 but before the outbox recorded its delivery
    again = EventLogOutput(config)
    for i in range(2, 5):
        again.deliver(event(i))
    again.deliver(event(4))  # also within one process (a delivery whose cursor update failed)
    again.close()
    assert [json.loads(line)["event_id"] for line in path.read_text().splitlines()] == [f"id-{i}" for i in range(5)]


def test_the_event_log_remembers_a_bounded_number_of_ids(tmp_path):
    path = tmp_path / "events.jsonl"
    config = JsonlOutput(type="jsonl", path=path, what="events")
    out = EventLogOutput(config, fsync=False)
    for i in range(RECENT_IDS + 1):
        out.deliver(event(i))
    out.deliver(event(0))  # beyond the window: the log is bounded in memory, not a database
    out.close()
    ids = [json.loads(line)["event_id"] for line in path.read_text().splitlines()]
    assert ids.count("id-0") == 2 and len(ids) == RECENT_IDS + 2


def test_an_append_that_fails_on_a_full_disk_leaves_nothing_that_the_retry_would_repeat(tmp_path):
    """Run in a process of its own: the full disk is the file size limit (RLIMIT_FSIZE), set below the next line."""
    path = tmp_path / "events.jsonl"
    script = f"""
import os, resource, signal
from pipeline.config.outputs import JsonlOutput
from pipeline.errors import SinkError
from pipeline.sinks.outputs.event_log import EventLogOutput
from tests.unit.sinks.outputs.test_event_log import event
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
out = EventLogOutput(JsonlOutput(type="jsonl", what="events", path={str(path)!r}))
out.deliver(event(0))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize({str(path)!r}) + 50, hard))
try:
    out.deliver(event(1))
    raise SystemExit("the append past the limit did not fail")
except SinkError:
    pass
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again: the outbox's retry, then the next event
out.deliver(event(1))
out.deliver(event(2))
out.close()
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[4], timeout=60)
    assert [json.loads(line)["event_id"] for line in path.read_text().splitlines()] == ["id-0", "id-1", "id-2"]
