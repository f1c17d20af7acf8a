"""Progress as log lines, where nobody watches a terminal (a container's log, a CI job, a service's
heartbeat): every `runtime.log_interval_s`, one line per stream (frames dropped by reason, and apart from
them the frames skipped by the stream's fps cap: chosen, not lost) and one with the totals, each carrying its
numbers as fields (with `runtime.log_format: json` each line is one JSON object, the fields at its top
level); at the end of a JSON run one `summary` line with each stream's final state and why it failed."""
from __future__ import annotations

import logging

from pipeline.runtime.snapshot import Snapshot

log = logging.getLogger("pipeline.progress")

DROP_REASONS = {  # stream stats key -> reason in `dropped`
    "dropped_overflow": "overflow",  # the stream's ring was full (live)
    "dropped_age": "age",  # older than the lane's max_age_ms (live)
    "dropped_sink": "refused",  # the buffer refused a live frame
    "skipped_late": "late",  # a live source skipped frames to keep up
    "dropped_sinks": "sinks",  # frame sinks dropped them to keep up
    "dropped_copy": "copy",  # decoded in a decode process, lost copying it into the main process
}


def drops(stats: dict) -> dict[str, int]:
    """A stream's dropped frames by reason (every reason present, 0 when none)."""
    return {reason: stats.get(key, 0) for key, reason in DROP_REASONS.items()}


def skipped_by_cap(stats: dict) -> int:
    """A stream's frames its fps cap skipped: not drops, the cap chose them (they keep their `Frame.index` gap)."""
    return stats.get("dropped_fps_cap", 0)


def outbox_backlog(snap: Snapshot) -> int:
    """Events not yet delivered to every event output: waiting to be stored, or stored and pending."""
    pending = [output["pending"] for output in snap.extra.get("outbox", {}).values()]
    return snap.extra.get("events", {}).get("waiting", 0) + max(pending, default=0)


class ProgressLog:
    """An `on_progress` callback: logs each Snapshot at INFO on `pipeline.progress`. fps are over the time
    since the previous call (a stream added since then counts from 0), frames are totals: frames detected."""

    def __init__(self):
        self._elapsed_s = 0.0
        self._frames: dict[str, int] = {}  # frames detected per stream at the previous call
        self._reconnects: dict[str, int] = {}  # and reconnects
        self._total = 0

    def __call__(self, snap: Snapshot) -> None:
        span = snap.elapsed_s - self._elapsed_s
        for stream_id, stats in snap.streams.items():
            frames = stats.get("batched", 0)
            # a stream that runs again says why it went down once, not on every line for the rest of the run
            news = stats.get("state") != "running" or stats.get("reconnects", 0) > self._reconnects.get(stream_id, 0)
            self._log_stream(stream_id, stats, _rate(frames - self._frames.get(stream_id, 0), span), news)
        fps = _rate(snap.frames_detected - self._total, span)
        backlog = outbox_backlog(snap)
        log.info("%.1f s, %d streams, engine %s: %.1f fps, %d frames in %d batches, %d events, outbox backlog %d",
                 snap.elapsed_s, len(snap.streams), snap.engine, fps, snap.frames_detected, snap.batches,
                 snap.events, backlog,
                 extra={"elapsed_s": round(snap.elapsed_s, 1), "stream_count": len(snap.streams), "engine": snap.engine,
                        "fps": fps, "frames": snap.frames_detected, "batches": snap.batches, "events": snap.events,
                        "outbox_backlog": backlog})
        self._elapsed_s, self._total = snap.elapsed_s, snap.frames_detected
        self._frames = {stream_id: stats.get("batched", 0) for stream_id, stats in snap.streams.items()}
        self._reconnects = {stream_id: stats.get("reconnects", 0) for stream_id, stats in snap.streams.items()}

    @staticmethod
    def _log_stream(stream_id: str, stats: dict, fps: float, error_news: bool) -> None:
        """error_news: the stream's last error is said in the message (it is a field of every line)."""
        dropped, skipped = drops(stats), skipped_by_cap(stats)
        error = stats.get("last_error")
        reasons = ", ".join(f"{reason} {n}" for reason, n in dropped.items() if n)
        log.info("%s %s: %.1f fps, %d frames, %d dropped%s, %s%d reconnects%s", stream_id, stats.get("state", "?"),
                 fps, stats.get("batched", 0), sum(dropped.values()), f" ({reasons})" if reasons else "",
                 f"{skipped} skipped by cap, " if skipped else "", stats.get("reconnects", 0),
                 f"; last error: {error}" if error and error_news else "",
                 extra={"stream": stream_id, "state": stats.get("state"), "fps": fps,
                        "frames": stats.get("batched", 0), "decoded": stats.get("decoded", 0), "dropped": dropped,
                        "skipped_by_cap": skipped, "reconnects": stats.get("reconnects", 0), "last_error": error})


def log_summary(snap: Snapshot, exit_code: int) -> None:
    """One `summary` line: the totals of the run and, per stream, its final state, frames, drops and last
    error (why it failed, for a failed one)."""
    streams = {stream_id: {"state": stats.get("state"), "frames": stats.get("batched", 0),
                           "decoded": stats.get("decoded", 0), "dropped": drops(stats),
                           "skipped_by_cap": skipped_by_cap(stats),
                           "reconnects": stats.get("reconnects", 0), "last_error": stats.get("last_error")}
               for stream_id, stats in snap.streams.items()}
    failed = {stream_id: s["last_error"] for stream_id, s in streams.items() if s["state"] == "failed"}
    log.info("summary", extra={
        "elapsed_s": round(snap.elapsed_s, 1), "engine": snap.engine, "frames": snap.frames_detected,
        "fps": _rate(snap.frames_detected, snap.elapsed_s), "batches": snap.batches, "detections": snap.detections,
        "events": snap.events, "outbox_backlog": outbox_backlog(snap), "shutdown_s": snap.extra.get("shutdown_s"),
        "exit_code": exit_code, "streams": streams, "failed": failed})


def _rate(count: int, seconds: float) -> float:
    return round(max(count, 0) / seconds, 1) if seconds > 0 else 0.0
