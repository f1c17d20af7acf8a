"""Progress in the log: a line per stream with its fps over the interval and drops by reason, a totals line,
and the summary with why each failed stream failed; on a terminal, the live table kept within the screen."""
import io
import logging
import re

import pytest

from pipeline.config.models import RuntimeConfig
from pipeline.runtime.progress import STREAM_HEADERS, LiveView, progress_reporter, stream_rows
from pipeline.runtime.progress_log import ProgressLog, log_summary
from pipeline.runtime.snapshot import Snapshot


def snapshot(elapsed_s: float, streams: dict[str, dict], *, pending: int = 0, waiting: int = 0) -> Snapshot:
    frames = sum(s.get("batched", 0) for s in streams.values())
    return Snapshot(elapsed_s=elapsed_s, streams=streams, lanes={}, batches=frames // 2, frames_detected=frames,
                    detections=frames, events=3, stage_depths=[0], sinks={}, sink_failures={}, engine="fake",
                    infer_s=0.0, extra={"outbox": {"webhook": {"delivered": 1, "failed": 0, "dead": 0,
                                                               "pending": pending}},
                                        "events": {"published": 3, "stored": 3, "waiting": waiting}})


@pytest.fixture
def progress(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    return caplog


def test_each_stream_gets_a_line_with_fps_over_the_interval_and_drops_by_reason(progress):
    report = ProgressLog()
    report(snapshot(10.0, {"cam-1": {"state": "running", "batched": 250, "decoded": 260}}))
    progress.clear()
    report(snapshot(20.0, {"cam-1": {"state": "running", "batched": 350, "decoded": 372, "dropped_overflow": 7,
                                     "dropped_sinks": 2, "reconnects": 1, "last_error": "read timeout"}}))
    line = next(r for r in progress.records if getattr(r, "stream", None) == "cam-1")
    assert line.fps == 10.0 and line.frames == 350 and line.decoded == 372 and line.state == "running"
    assert line.dropped == {"overflow": 7, "age": 0, "refused": 0, "late": 0, "sinks": 2, "copy": 0}
    assert line.reconnects == 1 and line.last_error == "read timeout"
    assert line.getMessage() == ("cam-1 running: 10.0 fps, 350 frames, 9 dropped (overflow 7, sinks 2), "
                                 "1 reconnects; last error: read timeout")


def test_a_stream_running_again_says_its_last_error_once_not_on_every_line(progress):
    report = ProgressLog()
    down = {"state": "reconnecting", "batched": 100, "reconnects": 1, "last_error": "connection refused"}
    report(snapshot(10.0, {"cam-1": down}))
    report(snapshot(20.0, {"cam-1": {**down, "state": "reconnecting"}}))  # still down: said again
    report(snapshot(30.0, {"cam-1": {**down, "state": "running", "batched": 200, "reconnects": 2}}))  # back: once
    report(snapshot(40.0, {"cam-1": {**down, "state": "running", "batched": 300, "reconnects": 2}}))
    lines = [r for r in progress.records if getattr(r, "stream", None) == "cam-1"]
    said = ["last error: connection refused" in r.getMessage() for r in lines]
    assert said == [True, True, True, False]
    assert all(r.last_error == "connection refused" for r in lines)  # the field is the stream's, on every line


def test_frames_skipped_by_the_fps_cap_are_reported_apart_from_drops(progress):
    capped = {"state": "running", "batched": 100, "decoded": 250, "dropped_fps_cap": 150, "dropped_overflow": 3}
    snap = snapshot(10.0, {"cam": capped})
    ProgressLog()(snap)
    line = next(r for r in progress.records if getattr(r, "stream", None) == "cam")
    assert sum(line.dropped.values()) == 3 and line.skipped_by_cap == 150
    assert line.getMessage() == "cam running: 10.0 fps, 100 frames, 3 dropped (overflow 3), 150 skipped by cap, 0 reconnects"
    [row] = stream_rows(snap)
    assert dict(zip(STREAM_HEADERS, row))["dropped"] == 3 and dict(zip(STREAM_HEADERS, row))["skipped by cap"] == 150


def test_the_table_says_how_many_frames_were_decoded_not_how_many_reached_the_buffer():
    capped = {"state": "running", "decoded": 250, "frames": 97, "batched": 97, "dropped_fps_cap": 150,
              "dropped_sink": 3}  # 250 decoded: 150 skipped by the cap, 3 refused, 97 put and detected
    row = dict(zip(STREAM_HEADERS, stream_rows(snapshot(10.0, {"cam": capped}))[0]))
    assert (row["decoded"], row["detected"], row["skipped by cap"], row["dropped"]) == (250, 97, 150, 3)


def test_the_totals_line_has_engine_fps_batches_events_and_the_outbox_backlog(progress):
    report = ProgressLog()
    report(snapshot(4.0, {"a": {"state": "running", "batched": 100}, "b": {"state": "running", "batched": 60}},
                    pending=5, waiting=2))
    [totals] = [r for r in progress.records if not hasattr(r, "stream")]
    assert (totals.engine, totals.fps, totals.frames, totals.batches, totals.events) == ("fake", 40.0, 160, 80, 3)
    assert totals.stream_count == 2 and totals.outbox_backlog == 7  # 2 not stored yet + 5 not delivered
    assert totals.getMessage() == ("4.0 s, 2 streams, engine fake: 40.0 fps, 160 frames in 80 batches, 3 events, "
                                   "outbox backlog 7")


def test_a_stream_added_between_lines_counts_from_zero_and_a_restarted_one_never_goes_negative(progress):
    report = ProgressLog()
    report(snapshot(5.0, {"a": {"state": "running", "batched": 100}}))
    progress.clear()
    report(snapshot(10.0, {"a": {"state": "running", "batched": 20}, "new": {"state": "running", "batched": 50}}))
    fps = {r.stream: r.fps for r in progress.records if hasattr(r, "stream")}
    assert fps == {"a": 0.0, "new": 10.0}


def test_the_summary_says_each_streams_final_state_and_why_the_failed_ones_failed(progress):
    log_summary(snapshot(30.0, {
        "lot": {"state": "finished", "batched": 900, "decoded": 900},
        "gate": {"state": "failed", "batched": 0, "last_error": "cannot open: connection refused"},
    }), exit_code=3)
    [summary] = progress.records
    assert summary.getMessage() == "summary" and summary.exit_code == 3 and summary.frames == 900
    assert summary.streams["lot"]["state"] == "finished" and summary.streams["gate"]["state"] == "failed"
    assert summary.failed == {"gate": "cannot open: connection refused"}


def test_the_summary_table_drops_are_every_reason_the_log_lines_count():
    """The final table once counted only full and aged rings: a live source that skipped frames it was late for,
    or sinks that dropped them, showed 0 dropped."""
    stats = {"state": "running", "batched": 90, "frames": 100, "dropped_overflow": 1, "dropped_age": 2,
             "dropped_sink": 3, "skipped_late": 4, "dropped_sinks": 5, "dropped_fps_cap": 6}
    [row] = stream_rows(snapshot(10.0, {"cam": stats}))
    assert dict(zip(STREAM_HEADERS, row))["dropped"] == 1 + 2 + 3 + 4 + 5
    assert dict(zip(STREAM_HEADERS, row))["skipped by cap"] == 6


def test_the_live_view_of_more_streams_than_the_terminal_has_rows_redraws_in_place_within_it(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("LINES", "12")
    out = io.StringIO()
    view = LiveView(out)
    snap = snapshot(10.0, {f"parking-lot-entrance-camera-{i:03d}": {"state": "running", "batched": 250}
                           for i in range(40)})
    view(snap)
    drawn = out.getvalue().splitlines()
    view(snap)
    up = re.match(r"\x1b\[(\d+)F\x1b\[J", out.getvalue()[len("\n".join(drawn)) + 1:])
    assert len(drawn) <= 11 and int(up.group(1)) == len(drawn)  # the cursor goes back to the block's first line
    assert all(len(line) <= 60 for line in drawn)  # a longer line wraps: one more row the cursor does not go back
    assert "more" in drawn[-1] and "summary" in drawn[-1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _screen(text: str) -> list[str]:
    """The rows a terminal shows after `text`, which moves the cursor only as the live view does: up n rows to
    their start (ESC [ n F), then clears from there down (ESC [ J)."""
    rows, row = [""], 0
    for part in re.split(r"(\x1b\[\d+F|\x1b\[J|\n)", text):
        if part == "\n":
            row += 1
            rows += [""] * (row + 1 - len(rows))
        elif part.startswith("\x1b[") and part.endswith("F"):
            row -= int(part[2:-1])
        elif part == "\x1b[J":
            rows[row:] = [""]
        else:
            rows[row] += part
    return rows


def test_a_line_logged_while_the_live_view_is_up_stays_on_screen_above_it(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LINES", "50")
    out = _Terminal()
    handler = logging.StreamHandler(out)
    logging.getLogger().addHandler(handler)
    snap = snapshot(10.0, {"lobby": {"state": "running", "batched": 250}, "gate": {"state": "running"}})
    try:
        with progress_reporter(RuntimeConfig(), out) as (view, _):
            view(snap)
            logging.getLogger("pipeline.sources").warning("stream 'gate': connection refused; retrying in 4 s")
            view(snap)
        assert handler.stream is out  # log lines go straight to the terminal again once the view is down
    finally:
        logging.getLogger().removeHandler(handler)
    shown = _screen(out.getvalue())
    [warning] = [i for i, row in enumerate(shown) if "connection refused" in row]
    [table] = [i for i, row in enumerate(shown) if "engine fake" in row]
    assert warning < table
