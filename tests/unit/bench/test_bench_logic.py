"""The benchmark's arithmetic: percentiles and bound shares from histogram windows, CPU time of the process
tree, and the ramp's search for the largest camera count that holds."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import Histogram

from pipeline.bench.measure import HistogramWindow, cpu_seconds, quantile, share_within
from pipeline.bench.cli import _parser, _save, bench_command
from pipeline.bench.report import load_report, markdown, write_report
from pipeline.bench.ramp import LOSSES, LiveRamp, count_text, only_a_floor, search, verdict
from pipeline.config.models import StreamConfig
from pipeline.errors import EngineError
from pipeline.runtime.telemetry import Telemetry

BOUNDS = (0.01, 0.05, 0.15, 1.0)


def _histogram() -> Histogram:
    return Histogram("t_seconds", "test", ["lane"], buckets=BOUNDS, registry=None)


def test_a_window_counts_only_what_was_observed_after_it_opened():
    histogram = _histogram()
    for value in (0.001, 0.2, 5.0):
        histogram.labels("default").observe(value)
    start = HistogramWindow(histogram)
    for value in (0.02, 0.02, 0.1, 0.12):
        histogram.labels("priority").observe(value)
    histogram.labels("default").observe(0.03)
    window = HistogramWindow(histogram).since(start)
    assert dict(window["priority"]) == {0.01: 0, 0.05: 2, 0.15: 4, 1.0: 4, math.inf: 4}
    assert dict(window["default"]) == {0.01: 0, 0.05: 1, 0.15: 1, 1.0: 1, math.inf: 1}


def test_quantiles_interpolate_inside_a_bucket_like_prometheus():
    cumulative = [(0.01, 0), (0.05, 50), (0.15, 100), (1.0, 100), (math.inf, 100)]
    assert quantile(cumulative, 0.5) == pytest.approx(0.05)
    assert quantile(cumulative, 0.25) == pytest.approx(0.03)  # halfway through (0.01, 0.05]
    assert quantile(cumulative, 0.99) == pytest.approx(0.148)
    assert share_within(cumulative, 0.05) == 0.5
    assert quantile([(0.01, 0), (math.inf, 3)], 0.5) == math.inf  # beyond the last finite bound
    assert quantile([(0.01, 0), (math.inf, 0)], 0.5) is None
    with pytest.raises(ValueError, match="not a bucket bound"):
        share_within(cumulative, 0.06)


def test_a_window_holds_when_no_camera_lost_a_frame_and_each_lane_is_within_its_bound():
    # the verdict of a count's window, and of each second the ramp waits for after removing cameras
    histogram = _histogram()
    start = HistogramWindow(histogram)
    for value in (0.02,) * 97 + (0.12,) * 3:
        histogram.labels("priority").observe(value)
    histogram.labels("default").observe(0.9)
    window = HistogramWindow(histogram).since(start)
    counted = {"cam-0": {"dropped_overflow": 0, "batched": 60}, "cam-1": {"dropped_overflow": 0, "batched": 40}}
    fine = {"cam-0": {"dropped_overflow": 0, "batched": 120}, "cam-1": {"dropped_overflow": 0, "batched": 81}}

    def holds(bounds: dict, after: dict = fine, latency: dict = window) -> bool:
        return verdict({k: dict(v, **dict.fromkeys(LOSSES, 0)) for k, v in counted.items()},
                       {k: dict(dict.fromkeys(LOSSES, 0), **v) for k, v in after.items()}, latency, bounds, 1.0).holds

    assert holds({"priority": 0.15, "default": 1.0})
    assert not holds({"priority": 0.05, "default": 1.0})  # a backlog's p99 above the bound
    assert not holds({"priority": 0.15, "default": 0.15})
    assert holds({})  # no bound, nothing to wait for
    assert holds({"priority": 0.01}, latency=HistogramWindow(histogram).since(HistogramWindow(histogram)))
    lost = dict(fine, **{"cam-1": {"dropped_overflow": 2, "batched": 81}})
    assert not holds({"priority": 0.15, "default": 1.0}, after=lost)  # a camera lost frames: within bounds or not
    step = verdict({k: dict(v, **dict.fromkeys(LOSSES, 0)) for k, v in counted.items()},
                   {k: dict(dict.fromkeys(LOSSES, 0), **v) for k, v in fine.items()}, window, {"priority": 0.15}, 2.0)
    assert (step.frames_detected, step.fps, step.cameras) == (101, 50.5, 2)


def test_cpu_time_of_the_process_tree_counts_a_child_while_it_runs():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\nprint('done', flush=True)\ninput()"
    before = cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"  # it burnt 0.5 s of CPU and is still alive
        assert cpu_seconds() - before >= 0.45
    finally:
        child.communicate("")


class Capacity:
    """A stand-in for the live pipeline: a count holds when it is at most `capacity`."""

    def __init__(self, capacity: int):
        self.capacity, self.count, self.tried = capacity, 0, []

    def set_cameras(self, count: int) -> None:
        self.count = count
        self.tried.append(count)

    def measure(self, window_s: float):
        holds = self.count <= self.capacity
        return type("Step", (), {"cameras": self.count, "holds": holds, "reasons": [] if holds else ["over"],
                                 "fps": 0.0})()


@given(capacity=st.integers(0, 600), start=st.integers(1, 64))
def test_the_search_finds_the_largest_count_that_holds(capacity, start):
    ramp = Capacity(capacity)
    best, steps = search(ramp, start, limit=512, window_s=0)
    expected = min(capacity, 512)
    assert expected - max(1, math.ceil(0.02 * expected)) <= best <= expected
    assert len(steps) == len(ramp.tried) <= 30
    assert all(count <= 512 for count in ramp.tried)


@pytest.mark.parametrize("capacity, start, growth, tried, best", [
    (40, 42, 1.07, [42, 39, 40, 41], 40),  # a start just above the answer: one step down, then the bisection
    (41, 43, 1.06, [43, 40, 41, 42], 41),
    (150, 255, 1.08, [255, 236, 202, 148, 175, 161, 154, 151], 148),  # down by 1.08, 1.08^2, 1.08^4; then to 2%
    (0, 8, 1.5, [8, 5, 2, 1], 0),  # even one camera fails
])
def test_a_start_that_fails_steps_down_by_the_growth_factor_not_from_zero(capacity, start, growth, tried, best):
    ramp = Capacity(capacity)
    assert search(ramp, start, limit=512, window_s=0, growth=growth)[0] == best
    assert ramp.tried == tried


@pytest.mark.parametrize("capacity, start, floor", [
    (600, 60, True), (92, 60, True),  # held at --max 92: the machine never failed
    (80, 60, False), (50, 60, False),  # failed above the answer (grown into, or the start itself)
    (0, 60, False),  # even one camera failed: 0 is exact
])
def test_a_count_the_search_stopped_at_by_its_limit_is_only_a_floor(capacity, start, floor):
    """A run whose largest count held at --max never saw the machine fail: the report must say "at least"."""
    best, steps = search(Capacity(capacity), start, limit=92, window_s=0, growth=1.2)
    assert only_a_floor(best, steps) is floor
    assert (best == 92) if floor else (best < 92)


def test_only_a_count_that_failed_above_the_answer_bounds_it():
    step = lambda cameras, holds: type("Step", (), {"cameras": cameras, "holds": holds})  # noqa: E731
    assert not only_a_floor(5, [step(5, True), step(6, False)])
    assert only_a_floor(5, [step(4, False), step(5, True)])  # a failure below (a noisy window) bounds nothing above
    assert count_text(5, True).startswith("at least 5 (") and count_text(5, False) == "5"


@pytest.mark.parametrize("growth", ["1", "0.9", "0", "-2", "nan", "inf", "fast"])
def test_a_growth_that_would_not_grow_is_refused_before_anything_runs(growth):
    """A factor of 1 or less would step one camera a window, or divide by zero once a start fails."""
    with pytest.raises(SystemExit):
        _parser().parse_args(["--model", "m.onnx", "--growth", growth])
    with pytest.raises(ValueError, match="above 1"):
        search(Capacity(10), 100, limit=512, window_s=0, growth=float(growth) if growth != "fast" else 1.0)


def test_a_p99_a_hair_above_its_bound_fails_though_it_reads_as_the_bound_in_ms():
    """99,000 of 100,000 frames must be within the bound; 98,999 is one frame short, and the p99 lies 0.05 ms above
    the 150-ms bucket bound: rounded to 0.1 ms it would read 150.0 and pass."""
    cumulative = [(0.1, 0), (0.15, 98_999), (0.2, 100_000), (math.inf, 100_000)]
    step = verdict({"cam-0": dict.fromkeys((*LOSSES, "batched"), 0)},
                   {"cam-0": dict(dict.fromkeys(LOSSES, 0), batched=100_000)}, {"default": cumulative},
                   {"default": 0.15}, 60.0)
    assert step.latency_ms["default"]["within_bound"] < 0.99
    assert not step.holds and step.reasons == ["lane default: p99 150.05 ms > 150 ms"]


def test_frames_a_live_camera_skipped_to_keep_up_are_lost_frames():
    """A live source (--url) that fell behind skips frames (`skipped_late`): those frames were never detected."""
    start = {"cam-0": {"skipped_late": 0, "dropped_overflow": 0, "batched": 0}}
    end = {"cam-0": {"skipped_late": 12, "dropped_overflow": 0, "batched": 288}}
    step = verdict({k: dict(dict.fromkeys(LOSSES, 0), **v) for k, v in start.items()},
                   {k: dict(dict.fromkeys(LOSSES, 0), **v) for k, v in end.items()}, {}, {}, 10.0)
    assert not step.holds and step.cameras_losing == 1 and sum(step.lost.values()) == 12


def test_a_camera_that_stopped_delivering_during_the_window_does_not_hold():
    """A camera that failed, stalls or reconnects loses its frames without a drop counter seeing them."""
    zeros = dict.fromkeys((*LOSSES, "batched"), 0)
    start = {"cam-0": dict(zeros, batched=100), "cam-1": dict(zeros, batched=100)}

    def step(cam1: dict):  # a camera's state at the window's end, when known, beside its counters
        end = {"cam-0": dict(zeros, batched=400), "cam-1": dict(zeros, **cam1)}
        return verdict(start, end, {}, {}, 10.0)

    assert step({"batched": 400}).holds
    silent = step({"batched": 100})  # not one frame of cam-1 was detected in the window
    assert not silent.holds and silent.reasons == ["1 cameras delivered no frame in the window"]
    assert step({"batched": 400, "state": "running"}).holds
    failed = step({"batched": 250, "state": "failed"})  # frames until it failed, none after
    assert not failed.holds and failed.reasons == ["1 cameras were not running at the window's end (cam-1 failed)"]


@pytest.mark.parametrize("bound, says", [
    ("default=120", "120 ms is not a bucket bound"),  # p99 within it could not be read exactly: refused at once
    ("prority=50", "no camera is in lane 'prority'"),  # a typo would leave the lane meant at its default
    ("default=-5", "is not a bucket bound"),
])
def test_a_latency_bound_the_ramp_cannot_check_is_refused_before_anything_runs(bound, says, capsys, tmp_path):
    status = bench_command(["--model", "samples/models/world_detector.onnx", "--clip", str(tmp_path / "absent.mp4"),
                            "--bound", bound])
    assert status == 2
    err = capsys.readouterr().err
    assert f"--bound '{bound}'" in err and says in err


@pytest.mark.parametrize("option, value", [
    ("--fps", "0"), ("--fps", "nan"), ("--fps", "-30"), ("--size", "1920x"), ("--size", "0x0"),
    ("--size", "321x181"),  # H.264 in 4:2:0 takes even sizes only: the clip could not be encoded
    ("--start", "0"), ("--max", "0"), ("--max", "-4"), ("--window-s", "0"), ("--window-s", "-1"),
    ("--settle-s", "-1"), ("--clip-seconds", "0"), ("--ceiling-seconds", "0"), ("--decode-streams", "-1"),
    ("--batches", "0"), ("--max-batch", "0"), ("--priority-share", "1.5"), ("--priority-share", "-0.1"),
])
def test_a_setting_the_bench_cannot_run_exits_2_naming_it_before_anything_runs(option, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        bench_command(["--model", "samples/models/world_detector.onnx", "--clip", str(tmp_path / "absent.mp4"),
                       option, value])
    assert refused.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_a_start_above_the_max_exits_2_naming_both(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        bench_command(["--model", "samples/models/world_detector.onnx", "--clip", str(tmp_path / "absent.mp4"),
                       "--start", "600", "--max", "512"])
    assert refused.value.code == 2 and "--start 600 is above --max 512" in capsys.readouterr().err


@pytest.mark.parametrize("lanes, says", [
    (["fast", "bulk"], "but those in lane 'priority' in 'fast' (the first lane not named 'priority'); add a lane "
                       "named 'priority'"),
    (["priority"], "in the first lane not named 'priority'; add one"),
])
def test_a_config_without_the_lanes_the_cameras_go_to_names_the_lane_they_would_be_in(lanes, says, tmp_path,
                                                                                        capsys):
    config = tmp_path / "lanes.yaml"
    config.write_text("streams: []\ndetector: {model: samples/models/world_detector.onnx}\nlanes:\n"
                      + "".join(f"  - {{name: {lane}}}\n" for lane in lanes))
    status = bench_command([str(config), "--clip", str(tmp_path / "absent.mp4")])
    assert status == 2 and says in capsys.readouterr().err


def test_a_url_no_source_reads_exits_2_naming_it(capsys):
    status = bench_command(["--model", "samples/models/world_detector.onnx", "--url", "nosuch://cam"])
    assert status == 2
    err = capsys.readouterr().err
    assert "--url nosuch://cam" in err and "no source reads 'nosuch://' URLs" in err


class FailsToStart:
    """A pipeline whose run ends before it runs, as when its detector cannot warm up or an output cannot open."""

    def __init__(self, config, detector=None):
        self.running = threading.Event()

    def run(self, until_stopped: bool = False):
        raise EngineError("the engine could not run its warm-up batch")

    def request_stop(self) -> None:
        pass


def test_a_pipeline_that_fails_while_starting_fails_the_ramp_with_its_error_at_once(monkeypatch):
    monkeypatch.setattr("pipeline.bench.ramp.PipelineRunner", FailsToStart)
    base = type("Base", (), {"model_copy": lambda self, update: self})()
    ramp = LiveRamp(base, camera=lambda i: None, bounds_s={})
    with pytest.raises(EngineError, match="warm-up batch"):  # not "did not start" after waiting 600 s by default
        ramp.start(timeout_s=30)
    ramp.close()


def _strict(constant: str):
    raise ValueError(f"{constant} is not JSON")


def test_bench_json_is_strict_json_even_with_a_p99_beyond_the_last_bucket(tmp_path):
    """jq, JavaScript's JSON.parse and Go refuse `Infinity`; the unbounded bucket and a p99 beyond the last finite
    bound are written "+Inf", and read back as infinity for the Markdown and the plot."""
    histogram = _histogram()
    start = HistogramWindow(histogram)
    for value in (0.02,) * 90 + (5.0,) * 10:  # a tenth of the frames beyond the last finite bound
        histogram.labels("default").observe(value)
    zeros = dict.fromkeys(LOSSES, 0)
    step = verdict({"cam-0": dict(zeros, batched=0)}, {"cam-0": dict(zeros, batched=100)},
                   HistogramWindow(histogram).since(start), {"default": 0.15}, 10.0)
    report = {"command": "bench", "date": "today", "machine": "m", "engine": "e", "camera": {"url": "x.mp4"},
              "bounds_ms": {"default": 150.0}, "camera_fps": 10.0, "engine_alone": [], "cameras_in_real_time": 0,
              "ramp": [step.as_dict()], "at_90_percent": step.as_dict(), "complete": True}
    _save(report, tmp_path)
    strict = json.loads((tmp_path / "bench.json").read_text(), parse_constant=_strict)
    assert strict["ramp"][0]["latency_cumulative"]["default"][-1] == ["+Inf", 100]
    assert strict["ramp"][0]["latency_ms"]["default"]["p99"] == "+Inf"
    again = load_report(tmp_path / "bench.json")
    assert again["ramp"][0]["latency_cumulative"]["default"][-1] == [math.inf, 100]
    assert "| 32/inf/inf |" in "\n".join(markdown(again))
    write_report(again, tmp_path)
    assert (tmp_path / "bench.png").stat().st_size > 0


@pytest.mark.parametrize("camera, says", [
    ({"id": "cam-0", "url": "runs/clips/footage.mp4", "pace": True, "loop": True}, "(paced, looped)"),
    ({"id": "cam-0", "url": "rtsp://10.0.0.5/live"}, "(live, read as it is)"),  # --url: neither paced nor looped
])
def test_the_report_says_how_the_cameras_were_played(camera, says):
    report = {"command": "bench", "date": "today", "machine": "m", "engine": "e", "camera": camera,
              "bounds_ms": {"default": 150.0}, "cameras_in_real_time": 1, "ramp": []}
    line = next(line for line in markdown(report) if line.startswith("- camera:"))
    assert line == f"- camera: `{camera['url']}` {says}"


class StallsAtTheWindowsEnd:
    """A pipeline with one camera whose frames stop being detected in a window's last moments: once `stall` is
    called, its next state (the window opening) has 10 frames received and detected; the one after (the window's
    end) 10 more received, only 5 of them detected in time (20 ms); in every later one the other 5 have been
    detected, 3 s after their capture."""

    def __init__(self, config, detector=None):
        self.running = threading.Event()
        self.parts = SimpleNamespace(telemetry=Telemetry())
        self._states, self._state = None, (1, 1, 1, ())

    def add_stream(self, config) -> None:
        pass

    def stall(self) -> None:
        self._states = iter([(10, 10, 10, ()), (20, 15, 15, (0.02,) * 5), (20, 20, 16, (3.0,) * 5)])

    def snapshot(self):
        if self._states is not None:
            self._state = next(self._states, self._state[:3] + ((),))
        received, batched, batches, detected = self._state
        for latency in detected:
            self.parts.telemetry.latency.labels("default").observe(latency)
        camera = dict(dict.fromkeys(LOSSES, 0), state="running", frames=received, received=received, batched=batched,
                      dropped_age=0)
        return SimpleNamespace(streams={"cam-0": camera}, lanes={"default": {"batches": batches}}, batches=batches,
                               extra={"failed_batches": 0})


def test_a_stall_in_a_windows_last_moments_counts_in_that_window(monkeypatch):
    """Frames sent in a window and still queued when it ends are neither lost nor detected yet: the window waits
    for them, and their 3-s latency is its own (it held on the frames detected before it ended)."""
    monkeypatch.setattr("pipeline.bench.ramp.PipelineRunner", StallsAtTheWindowsEnd)
    base = SimpleNamespace(model_copy=lambda update: None)
    ramp = LiveRamp(base, camera=lambda i: StreamConfig(id=f"cam-{i}", url="x.mp4"), bounds_s={"default": 0.15},
                    settle_s=0)
    ramp.set_cameras(1)
    ramp.runner.stall()
    step = ramp.measure(0)
    assert not step.holds and len(step.reasons) == 1 and step.reasons[0].startswith("lane default: p99")
    assert step.frames_detected == 10 and step.latency_ms["default"]["p99"] > 150


class NeverCatchesUp(StallsAtTheWindowsEnd):
    def stall(self) -> None:
        self._states = iter([(10, 10, 10, ()), (20, 15, 15, (0.02,) * 5)])


def test_a_window_whose_frames_are_not_detected_within_its_drain_bound_fails_saying_so(monkeypatch):
    monkeypatch.setattr("pipeline.bench.ramp.PipelineRunner", NeverCatchesUp)
    base = SimpleNamespace(model_copy=lambda update: None)
    ramp = LiveRamp(base, camera=lambda i: StreamConfig(id=f"cam-{i}", url="x.mp4"), bounds_s={"default": 0.15},
                    settle_s=0, drain_s=0.1)
    ramp.set_cameras(1)
    ramp.runner.stall()
    step = ramp.measure(0)
    assert not step.holds
    assert step.reasons == ["5 frames received in the window were not detected 0.1 s after it closed"]


@pytest.mark.parametrize("option, value, says", [("--engine", "tensorflow", "unknown engine 'tensorflow'"),
                                                 ("--max-batch", "2000", "less than or equal to 1024")])
def test_a_model_engine_or_batch_the_detector_cannot_take_exits_2_naming_the_option(option, value, says, capsys):
    status = bench_command(["--model", "samples/models/world_detector.onnx", "--url", "rtsp://192.0.2.1/live",
                            option, value])
    assert status == 2
    err = capsys.readouterr().err
    assert f"bench: {option} {value!r}: " in err and says in err and "Traceback" not in err
