"""Live progress on a terminal (or in the log, `progress_log`) and the final summary table, drawn from
runner Snapshots."""
from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from pipeline.config.models import RuntimeConfig
from pipeline.runtime.progress_log import ProgressLog, drops, skipped_by_cap
from pipeline.runtime.snapshot import Snapshot


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[str(c) for c in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def stream_rows(snap: Snapshot) -> list[list]:
    """One row per stream, in `STREAM_HEADERS` order: its drops of every reason, summed as the progress lines do
    (`progress_log.drops`: its ring full or too old, refused, skipped late by a live source, and those sinks
    dropped, counted per sink and detected nonetheless), and apart from them those its fps cap skipped on purpose."""
    rows = []
    for sid, s in snap.streams.items():
        fps = s.get("batched", 0) / snap.elapsed_s if snap.elapsed_s > 0 else 0.0
        rows.append([sid, s.get("state", "?"), s.get("decoded", 0), s.get("batched", 0), fps,
                     s.get("depth", 0), sum(drops(s).values()), skipped_by_cap(s), s.get("reconnects", 0)])
    return rows


STREAM_HEADERS = ["stream", "state", "decoded", "detected", "fps", "queued", "dropped", "skipped by cap",
                  "reconnects"]


def render(snap: Snapshot) -> list[str]:
    lines = [
        f"{snap.elapsed_s:6.1f} s  engine {snap.engine}  frames {snap.frames_detected}  "
        f"batches {snap.batches}  detections {snap.detections}  events {snap.events}  "
        f"stage queues {snap.stage_depths}",
    ]
    lines += _table(STREAM_HEADERS, stream_rows(snap))
    lane_rows = [[name, lane.get("batches", 0), lane.get("frames", 0), lane.get("mean_batch_size", 0.0),
                  lane.get("dropped_overflow", 0) + lane.get("dropped_age", 0)] for name, lane in snap.lanes.items()]
    lines += [""] + _table(["lane", "batches", "frames", "mean batch", "dropped"], lane_rows)
    behind = {name: sum(s["dropped"].values()) for name, s in snap.sinks.items() if s["dropped"]}
    if behind:
        lines.append("live frames sinks dropped to keep up: " + ", ".join(f"{k}={v}" for k, v in behind.items()))
    if snap.sink_failures:
        lines.append("failures: " + ", ".join(f"{k}={v}" for k, v in snap.sink_failures.items()))
    return lines


class LiveView:
    """Redraws the progress block in place on a terminal, cut to the terminal's size: the cursor can go back
    only over the rows on screen, so a block taller than the screen (or with lines that wrap) would be drawn
    anew below the last one every time. Log lines for the same terminal are written through `write` (see
    `progress_reporter`): above the block, which is drawn again below them (else the next redraw, going back
    over as many rows as the block had, would erase them)."""

    def __init__(self, out: TextIO = sys.stderr):
        self.out = out
        self._lines: list[str] = []  # the block on screen
        self._lock = threading.Lock()  # a redraw, and log lines from any thread

    def __call__(self, snap: Snapshot) -> None:
        lines = _fit(render(snap), _terminal_size(self.out))
        with self._lock:
            self._draw(lines)

    def write(self, text: str) -> None:
        """Write `text` (log lines) where the block is, and the block again below it."""
        with self._lock:
            lines = self._lines
            self._draw([])
            self.out.write(text)
            self._draw(lines)

    def flush(self) -> None:
        self.out.flush()

    def _draw(self, lines: list[str]) -> None:
        if self._lines:
            self.out.write(f"\x1b[{len(self._lines)}F\x1b[J")
        if lines:
            self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._lines = lines


def _terminal_size(out: TextIO) -> os.terminal_size:
    """The size of the terminal `out` writes to; else (no file descriptor, or a terminal that reports 0x0) what
    `shutil` finds: $COLUMNS and $LINES, the standard output's terminal, else 80x24."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (AttributeError, OSError, ValueError):
        size = None
    return size if size and size.columns and size.lines else shutil.get_terminal_size()


def _fit(lines: list[str], size: os.terminal_size) -> list[str]:
    """`lines` cut to the terminal's width, and to its height less the cursor's row, the last row saying what
    was left out."""
    lines = [line[: size.columns] for line in lines]
    if len(lines) < size.lines:
        return lines
    kept = max(size.lines - 2, 0)
    return lines[:kept] + [f"... {len(lines) - kept} more lines (the summary at the end has them all)"[: size.columns]]


@contextmanager
def progress_reporter(runtime: RuntimeConfig, out: TextIO = sys.stderr) -> Iterator[tuple[Callable[[Snapshot], None],
                                                                                         float]]:
    """The `on_progress` callback and its interval, for the run inside: the live table every `progress_interval_s`
    when `out` is a terminal and the log is text, the root logger's lines for `out` written above it meanwhile;
    else progress logged every `log_interval_s` (`ProgressLog`)."""
    if runtime.log_format != "text" or not out.isatty():
        yield ProgressLog(), runtime.log_interval_s
        return
    view = LiveView(out)
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.stream is out]
    for handler in handlers:
        handler.setStream(view)
    try:
        yield view, runtime.progress_interval_s
    finally:
        for handler in handlers:
            handler.setStream(out)


def summary(snap: Snapshot) -> str:
    fps = snap.frames_detected / snap.elapsed_s if snap.elapsed_s else 0.0
    mean_batch = snap.frames_detected / snap.batches if snap.batches else 0.0
    head = (f"Ran {snap.elapsed_s:.1f} s on {len(snap.streams)} streams with {snap.engine}: "
            f"{snap.frames_detected} frames ({fps:.1f} frames/s), mean batch {mean_batch:.1f}, "
            f"{snap.detections} detections, {snap.events} events.")
    if snap.extra.get("failed_batches"):
        head += f" The detector failed {snap.extra['failed_batches']} batches: nothing was detected in them (see the log)."
    shutdown = snap.extra.get("shutdown_s")
    if shutdown is not None:
        head += f" Stopping (drain, flush, event delivery) took {shutdown:.1f} s."
    failed = [f"  {sid}: {s.get('last_error')}" for sid, s in snap.streams.items() if s.get("state") == "failed"]
    return "\n".join([head, ""] + render(snap)[1:] + (["", "failed streams:", *failed] if failed else []))
