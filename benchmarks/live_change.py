"""Adding cameras to a running pipeline: how soon each new one is detected, and what the running ones lose.

    python benchmarks/live_change.py --out OUT_DIR [--streams 64] [--add 16] [--warm-s 10] [--window-s 10]
    python benchmarks/live_change.py --out OUT_DIR --streams 4 --add 2 --decode cpu --engine onnxruntime \\
        --clip-frames 0 --max-batch 8 --model M --clip C          # a quick check on a CPU

Also the `add_streams` section of `gpu_bench.py` (`--e2e-streams` running, `--add` added). Writes
OUT_DIR/live_change.json and OUT_DIR/live_change.md.

The pipeline is end to end's (`pipeline_bench.pipeline_config`), but its streams behave like cameras:
the looped clip is read as a live stream (a full ring drops its oldest frame instead of holding the
decoder back; at the clip's end the stream reconnects after `RECONNECT_S`). Files are not paced, so
every stream decodes as fast as it can and the pipeline runs at its ceiling: once the decoders are the
limit, the running streams' share after the change is streams / (streams + add) however well it goes.

After every running stream has been detected and `warm_s` more, snapshots every `poll_ms` give the
running streams' frames/s over `window_s` (before), then one thread adds the new streams one
`add_stream` call after the other (each timed) while snapshots record when each new stream's first
frame was decoded (`received`) and detected (`staged`: through detection and the stages); the change
window ends when every new stream was detected, and lasts at least `change_min_s`; then `window_s`
after. Drops are the buffer's overflow and age drops plus frames the full buffer refused.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from pipeline_bench import add_input_arguments, make_1080p_clip, nvrtc_compile_counter, pipeline_config

RECONNECT_S = 0.05
"""Delay before a camera's clip starts again (`reconnect_min_s`): a short outage, as on a real camera."""
DROPS = ("dropped_overflow", "dropped_age", "dropped_sink")
RECEIVED, BATCHED, STAGED, DROPPED = range(4)
"""Fields of a stream's counts in a sample."""
ZERO = (0, 0, 0, 0)
BIN_S = 0.5
"""Width of the timeline's bins, in seconds; the worst bin shows a stall that a window's mean hides."""

log = logging.getLogger("live_change")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The change's settings, shared by this script and gpu_bench.py's `add_streams` section."""
    parser.add_argument("--add", type=int, default=16, help="cameras added to the running ones")
    parser.add_argument("--warm-s", type=float, default=10.0, help="wait after every running stream was detected")
    parser.add_argument("--window-s", type=float, default=10.0, help="measured before and after the change")
    parser.add_argument("--change-min-s", type=float, default=3.0, help="shortest change window")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="snapshot interval (the first frames' resolution)")
    parser.add_argument("--timeout-s", type=float, default=120.0,
                        help="longest wait for the running streams' first frames and for the new ones'")


def cameras(clip: Path, ids: list[str], decode: str, ring_size: int) -> list:
    """Streams of `clip` that behave like cameras: live, reconnecting `RECONNECT_S` after its end."""
    from pipeline.config.models import StreamConfig

    return [StreamConfig(id=sid, url=str(clip), live=True, decode=decode, ring_size=ring_size,
                         reconnect_min_s=RECONNECT_S) for sid in ids]


def change_settings(args: argparse.Namespace) -> dict:
    """`add_arguments`' values as `add_streams`' keyword arguments."""
    return {key: getattr(args, key) for key in ("add", "warm_s", "window_s", "change_min_s", "poll_ms", "timeout_s")}


class Watch:
    """Snapshots of a pipeline running in `thread`, every `poll_ms`: `samples` holds (monotonic s,
    {stream: (received, batched, staged, dropped)})."""

    def __init__(self, runner, thread: threading.Thread, failure: list[BaseException], poll_ms: float):
        self.runner, self.thread, self.failure, self.poll_s = runner, thread, failure, poll_ms / 1000
        self.samples: list[tuple[float, dict]] = []

    def poll(self, until, seconds: float) -> int:
        """Snapshots until `until()` is true or `seconds` passed; returns the last sample's index."""
        next_t = deadline = time.monotonic()
        deadline += seconds
        while True:
            if not self.thread.is_alive():
                raise RuntimeError("the pipeline stopped while being measured") from (self.failure or [None])[0]
            streams = self.runner.snapshot().streams
            now = time.monotonic()
            self.samples.append((now, {sid: (s.get("received", 0), s.get("batched", 0), s.get("staged", 0),
                                             sum(s.get(k, 0) for k in DROPS)) for sid, s in streams.items()}))
            if until() or now >= deadline:
                return len(self.samples) - 1
            next_t += self.poll_s
            time.sleep(max(0.0, next_t - time.monotonic()))

    def detected(self, ids) -> bool:
        """Every stream of `ids` had a frame through detection and the stages at the last sample."""
        last = self.samples[-1][1]
        return all(last.get(sid, ZERO)[STAGED] > 0 for sid in ids)


def add_streams(model: Path, clip: Path, streams: int, *, add: int = 16, warm_s: float = 10.0, window_s: float = 10.0,
                change_min_s: float = 3.0, poll_ms: float = 20.0, timeout_s: float = 120.0, max_batch: int = 64,
                engine: str = "torch", decode: str = "nvdec", ring_size: int = 8, decode_processes="auto",
                switch_interval_ms: float | None = None) -> dict:
    """`streams` cameras running, `add` more added one after the other; see the module's docstring."""
    from pipeline.errors import PipelineError
    from pipeline.runtime.runner import PipelineRunner

    old = [f"cam-{i}" for i in range(streams)]
    new = cameras(clip, [f"cam-{i}" for i in range(streams, streams + add)], decode, ring_size)
    runner = PipelineRunner(pipeline_config(model, cameras(clip, old, decode, ring_size), max_batch, engine,
                                            switch_interval_ms, decode_processes))
    compiles = nvrtc_compile_counter() if importlib.util.find_spec("cupy") else []
    failure: list[BaseException] = []
    calls: dict[str, tuple[float, float, str | None]] = {}  # id -> (call started, call s, error)

    def run() -> None:
        try:
            runner.run(until_stopped=True)
        except BaseException as exc:  # noqa: BLE001 - raised again by the measuring thread
            failure.append(exc)

    def add_all() -> None:
        for config in new:
            start = time.monotonic()
            try:
                runner.add_stream(config)
                error = None
            except PipelineError as exc:
                error = str(exc)
            calls[config.id] = (start, time.monotonic() - start, error)

    def changed() -> bool:
        """Every call made, every stream added detected, `change_min_s` after the first call."""
        if adder.is_alive():
            return False
        return (watch.detected(sid for sid, c in calls.items() if c[2] is None)
                and time.monotonic() >= calls[new[0].id][0] + change_min_s)

    pipeline = threading.Thread(target=run, name="bench:pipeline", daemon=True)
    adder = threading.Thread(target=add_all, name="bench:add", daemon=True)
    watch = Watch(runner, pipeline, failure, poll_ms)
    pipeline.start()
    try:
        if not runner.running.wait(timeout_s):
            raise TimeoutError(f"the pipeline did not start within {timeout_s:g} s")
        watch.poll(lambda: watch.detected(old), timeout_s)
        if not watch.detected(old):
            raise TimeoutError(f"the {streams} running streams were not all detected within {timeout_s:g} s")
        ready_s = runner.snapshot().elapsed_s
        before = watch.poll(lambda: False, warm_s)
        change = watch.poll(lambda: False, window_s)
        c0 = len(compiles)
        adder.start()
        after = watch.poll(changed, timeout_s)
        c1 = len(compiles)
        end = watch.poll(lambda: False, window_s)
        children = runner.parts.sources.children
        processes = children.count if children is not None else 0
    finally:
        runner.request_stop()
        pipeline.join(120)
    if failure:
        raise failure[0]
    return {"streams": streams, "added": add, "decode": decode, "engine": engine,
            "decode_processes": processes, "poll_ms": poll_ms, "ready_s": ready_s,
            "fair_share": streams / (streams + add), "kernel_compiles_during": c1 - c0,
            **summarize(watch.samples, old, calls, (before, change, after, end))}


def summarize(samples: list[tuple[float, dict]], old: list[str], calls: dict, marks: tuple[int, int, int, int]) -> dict:
    """Windows before, during and after the change (sample indices `marks`), the add calls, the first frames."""
    new = list(calls)
    t_add = min(c[0] for c in calls.values())

    def rate(ids, i, j, field) -> list[float]:
        (t0, a), (t1, b) = samples[i], samples[j]
        return [(b.get(sid, ZERO)[field] - a.get(sid, ZERO)[field]) / (t1 - t0) for sid in ids]

    timeline, last = [], marks[0]
    for k in range(marks[0] + 1, marks[3] + 1):
        if samples[k][0] - samples[last][0] >= BIN_S or k == marks[3]:
            timeline.append((round(samples[k][0] - t_add, 3), sum(rate(old, last, k, STAGED)),
                             sum(rate(new, last, k, STAGED))))
            last = k
    windows = {}
    for name, i, j in (("before", marks[0], marks[1]), ("during", marks[1], marks[2]), ("after", marks[2], marks[3])):
        per_stream = rate(old, i, j, STAGED)
        bins = [fps for t, fps, _ in timeline if samples[i][0] - t_add < t <= samples[j][0] - t_add]
        windows[name] = {"seconds": samples[j][0] - samples[i][0], "old_fps": sum(per_stream),
                         "old_fps_min": min(per_stream), "old_fps_median": statistics.median(per_stream),
                         "old_fps_max": max(per_stream), "old_fps_worst_bin": min(bins, default=float("nan")),
                         "old_drops_per_s": sum(rate(old, i, j, DROPPED)), "new_fps": sum(rate(new, i, j, STAGED))}

    def first(sid, field) -> float | None:
        return next((t - calls[sid][0] for t, counts in samples[marks[1]:] if counts.get(sid, ZERO)[field] > 0), None)

    def spread(values) -> dict:
        found = [v for v in values if v is not None]
        if not found:
            return {"p50": None, "p95": None, "max": None}
        return {"p50": float(np.percentile(found, 50)), "p95": float(np.percentile(found, 95)), "max": max(found)}

    add_ms = [c[1] * 1000 for c in calls.values()]
    return {"add_call_ms": {"p50": statistics.median(add_ms), "max": max(add_ms)},
            "add_errors": {sid: c[2] for sid, c in calls.items() if c[2] is not None},
            "first_decoded_s": spread(first(sid, RECEIVED) for sid in new),
            "first_batched_s": spread(first(sid, BATCHED) for sid in new),
            "first_detected_s": spread(first(sid, STAGED) for sid in new),
            "not_detected": [sid for sid in new if first(sid, STAGED) is None],
            "windows": windows, "ratio_during": windows["during"]["old_fps"] / windows["before"]["old_fps"],
            "ratio_after": windows["after"]["old_fps"] / windows["before"]["old_fps"],
            "timeline": timeline}


def markdown(r: dict) -> list[str]:
    """A table of one `add_streams` result."""
    w = [r["windows"][k] for k in ("before", "during", "after")]

    def row(label, key, fmt="{:.0f}"):
        return f"| {label} | " + " | ".join(fmt.format(x[key]) for x in w) + " |"

    def ms(d):
        return "/".join("-" if d[k] is None else f"{d[k] * 1000:.0f}" for k in ("p50", "p95", "max"))

    return [(f"## Adding {r['added']} cameras to {r['streams']} running ({r['decode']}, {r['engine']}, "
             f"{r['decode_processes']} decode processes)"), "",
            "| running streams | before | during the change | after |", "| --- | --- | --- | --- |",
            row("window s", "seconds", "{:.1f}"), row("frames/s detected", "old_fps"),
            "| per stream min / median / max | " + " | ".join(
                f"{x['old_fps_min']:.1f} / {x['old_fps_median']:.1f} / {x['old_fps_max']:.1f}" for x in w) + " |",
            row(f"worst {BIN_S:g} s, as frames/s", "old_fps_worst_bin"), row("drops per s", "old_drops_per_s"),
            row("new streams' frames/s detected", "new_fps"), "",
            f"- add_stream call: p50 {r['add_call_ms']['p50']:.1f} ms, max {r['add_call_ms']['max']:.1f} ms"
            + (f"; failed: {r['add_errors']}" if r["add_errors"] else ""),
            (f"- from add_stream to its first frame (p50/p95/max ms): decoded {ms(r['first_decoded_s'])}, "
             f"batched {ms(r['first_batched_s'])}, detected {ms(r['first_detected_s'])}")
            + (f"; never detected: {r['not_detected']}" if r["not_detected"] else ""),
            (f"- running streams' frames/s during / before: {r['ratio_during']:.2f}, after / before: "
             f"{r['ratio_after']:.2f} (their share when the decoders are the limit: {r['fair_share']:.2f})"),
            (f"- kernel compiles during the change: {r['kernel_compiles_during']}; ready {r['ready_s']:.1f} s "
             "after the start")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_input_arguments(parser, "frames of the 1920x1080 clip made from --clip; 0 = --clip as it is")
    parser.add_argument("--streams", type=int, default=64, help="cameras running before the change")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--ring-size", type=int, default=8)
    parser.add_argument("--decode", choices=["nvdec", "cpu"], default="nvdec")
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--decode-processes", default="auto", help="runtime.decode_processes (0 = threads)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    clip = make_1080p_clip(args.clip, args.clip_frames) if args.clip_frames else args.clip
    result = add_streams(args.model, clip, args.streams, max_batch=args.max_batch, engine=args.engine,
                         decode=args.decode, ring_size=args.ring_size,
                         decode_processes=int(args.decode_processes) if args.decode_processes.isdigit()
                         else args.decode_processes, **change_settings(args))
    result["clip"] = {"path": clip.name, "frames": args.clip_frames or None}
    (args.out / "live_change.json").write_text(json.dumps(result, indent=2))
    (args.out / "live_change.md").write_text("\n".join(markdown(result)) + "\n")
    print((args.out / "live_change.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
