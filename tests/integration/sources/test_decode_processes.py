"""Streams decoded in child processes (`runtime.decode_processes`) arrive here whole and in order,
back-pressure reaches the child, a killed child fails only its own files and its cameras go on in
a new child, and the pipeline finds
the same detections as with decode threads. Runs on the CPU with the synthetic world (host frames
travel through the pipe; the CUDA IPC path is tests/gpu/test_gpu_processes.py)."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from pipeline.align.buffer import AlignedBuffer
from pipeline.config.models import (
    DetectorConfig,
    LaneConfig,
    PipelineConfig,
    RuntimeConfig,
    StreamConfig,
    TrackerConfig,
)
from pipeline.config.resolve import resolve
from pipeline.machine import Machine
from pipeline.runtime.runner import PipelineRunner
from samples.world.source import SyntheticReader
from tests.conftest import REPO
from tests.support.batches import Taker, decode_in_children, stop_and_drain

PLUGINS = ["samples.world.source"]  # the children import it too


def make_processes(streams: list[StreamConfig], count: int, buffer: AlignedBuffer):
    return decode_in_children(streams, count, buffer, "source", PLUGINS)


def world(seed: int, frames: int, size: str = "160x96") -> str:
    return f"synthetic://plaza?seed={seed}&fps=10&size={size}&frames={frames}&realtime=0"


def test_frames_from_child_processes_arrive_whole_and_in_order_with_back_pressure():
    streams = [StreamConfig(id=f"s{i}", url=world(i, 12), ring_size=2) for i in range(3)]
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=2, max_wait_ms=5)], streams)
    processes = make_processes(streams, 2, buffer)
    taker = Taker(buffer, pause_s=0.12)  # slower than the children: they must wait, not drop
    assert taker.until(lambda: buffer.finished, timeout=60)
    processes.close()
    frames = taker.frames
    for config in streams:
        here = list(SyntheticReader(config.url).frames())
        there = frames[config.id]
        assert [f.seq for f in there] == list(range(12))
        assert [(f.epoch, f.index) for f in there] == [(0, i) for i in range(12)]
        assert [f.pts_ns for f in there] == [f.pts_ns for f in here]
        for a, b in zip(there, here):
            assert a.pixel_format == "rgb24" and (a.width, a.height) == (160, 96)
            np.testing.assert_array_equal(a.image, b.image)
    stats = {w.config.id: w.stats() for w in processes.workers}
    assert all(s["state"] == "finished" and s["frames"] == 12 for s in stats.values()), stats
    assert all(s["sink_waits"] > 0 for s in stats.values()), stats  # credits held each child's reader back


def test_with_streams_per_child_a_new_decode_process_starts_only_once_each_has_that_many():
    from pipeline.sources.processes import DecodeProcesses

    streams = [StreamConfig(id=f"s{i}", url=world(i, 6)) for i in range(5)]
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], streams)
    processes = DecodeProcesses(buffer, 8, plugin_modules=PLUGINS, per_child=2)  # `auto` (8 per child), smaller
    for config in streams:
        processes.add(config, "source")
    taker = Taker(buffer)
    assert taker.until(lambda: buffer.finished, timeout=60)
    processes.close()
    assert [w.child for w in processes.workers] == [0, 0, 1, 1, 2]
    assert all(len(taker.frames[config.id]) == 6 for config in streams)


@pytest.mark.fault
def test_a_killed_decode_process_fails_its_streams_and_the_others_go_on():
    streams = [StreamConfig(id=f"s{i}", url=world(i, 100_000), ring_size=4) for i in range(4)]
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], streams)
    processes = make_processes(streams, 2, buffer)  # s0, s2 in child 0; s1, s3 in child 1
    taker = Taker(buffer, keep=lambda frame: frame.seq)
    assert taker.until(lambda: len(taker.frames) == 4, timeout=30)
    victim = processes.workers[0]
    assert victim.config.id == "s0"
    os.kill(victim.pid, signal.SIGKILL)
    assert taker.until(victim.ended.is_set, timeout=10)
    before = {sid: seqs[-1] for sid, seqs in taker.frames.items()}
    taker.for_seconds(2.0)
    by_id = {w.config.id: w for w in processes.workers}
    for sid in ("s0", "s2"):
        stats = by_id[sid].stats()
        assert stats["state"] == "failed"
        assert "decode-proc:0 was killed by signal 9" in stats["last_error"] and sid in stats["last_error"]
    for sid in ("s1", "s3"):
        assert by_id[sid].state.value == "running"
        assert taker.frames[sid][-1] > before[sid]  # still delivering after the other child died
    stop_and_drain(processes, buffer)
    assert buffer.finished


@pytest.mark.fault
def test_live_streams_of_a_killed_decode_process_go_on_in_a_new_one():
    cameras = [StreamConfig(id=f"cam{i}", url=f"synthetic://street?seed={i}&fps=20&size=160x96", ring_size=4,
                            reconnect_min_s=0.2, reconnect_max_s=1.0) for i in range(2)]
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], cameras)
    processes = make_processes(cameras, 2, buffer)
    taker = Taker(buffer)
    frames = taker.frames
    victim = processes.workers[0]
    assert taker.until(lambda: min(len(frames["cam0"]), len(frames["cam1"])) >= 10, timeout=30)
    assert taker.until(lambda: victim.stats().get("frames", 0) >= 10, timeout=5)  # a counter report came
    os.kill(victim.pid, signal.SIGKILL)
    assert taker.until(lambda: victim.child == 2, timeout=30)  # a new child took it
    before = len(frames["cam0"])
    assert taker.until(lambda: len(frames["cam0"]) >= before + 10, timeout=30)
    taker.until(lambda: victim.state.value == "running", timeout=5)  # its counters come every 0.5 s
    stats = victim.stats()
    assert victim.config.id == "cam0" and stats["state"] == "running", stats
    assert stats["reconnects"] == 1 and "decode-proc:0 was killed by signal 9" in stats["last_error"]
    seqs = [f.seq for f in frames["cam0"]]
    pts = [f.pts_ns for f in frames["cam0"]]
    assert len(seqs) >= before + 10
    assert all(b > a for a, b in zip(seqs, seqs[1:])), "seq goes on after the restart"
    assert all(b > a for a, b in zip(pts, pts[1:])), "pts goes on after the restart"
    epochs = [f.epoch for f in frames["cam0"]]
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] == 1, "the new child's frames: a new epoch"
    restart = epochs.index(1)
    old, new = ([f.index for f in part] for part in (frames["cam0"][:restart], frames["cam0"][restart:]))
    assert all(b > a for part in (old, new) for a, b in zip(part, part[1:])) and new[0] < old[-1]  # counted anew
    taker.for_seconds(1.2)  # a fresh counter report from the new child
    # the dead child's counters are carried (less what it sent after its last report, 0.5 s at 20 fps)
    assert victim.stats()["frames"] >= len(frames["cam0"]) - 12
    assert processes.workers[1].state.value == "running"
    stop_and_drain(processes, buffer)


def test_the_pipeline_finds_the_same_detections_with_decode_processes_as_with_threads():
    def run(count: int):
        config = PipelineConfig(
            plugins=PLUGINS,
            streams=[StreamConfig(id=f"cam-{i}", url=world(i, 30, "320x180"), ring_size=3) for i in range(3)],
            lanes=[LaneConfig(name="default", max_batch=4)],
            detector=DetectorConfig(model=REPO / "samples/models/world_detector.onnx"),
            tracker=TrackerConfig(enabled=False),
            runtime=RuntimeConfig(decode_processes=count),
        )
        runner = PipelineRunner(config)
        assert (runner.plan.decode_processes > 0) == (count > 0)
        return runner.run()

    threads, children = run(0), run(2)
    assert threads.frames_detected == children.frames_detected == 90
    assert children.detections == threads.detections > 0
    for sid, stats in children.streams.items():
        assert stats["state"] == "finished" and stats["batched"] == 30, (sid, stats)


def test_plan_auto_keeps_cpu_streams_in_threads_and_clips_no_longer_keep_streams_out_of_children():
    def config(setting, streams=10, clips=False):
        return PipelineConfig(
            streams=[StreamConfig(id=f"c{i}", url=f"/clips/{i}.mp4", decode="cpu") for i in range(streams)],
            detector=DetectorConfig(model="m.onnx"), runtime=RuntimeConfig(decode_processes=setting),
            sinks=[{"type": "media", "clips": clips}])

    here = Machine(cores=16)
    plan = resolve(config("auto"), here)  # CPU decode: threads convert lazily at model size
    assert plan.decode_processes == 0 and not any(s.in_child for s in plan.streams)
    plan = resolve(config(3), here)
    assert plan.decode_processes == 3 and all(s.in_child for s in plan.streams) and len(plan.streams) == 10
    assert resolve(config(16, streams=5), here).decode_processes == 16  # at most: started as streams come
    plan = resolve(config(3, clips=True), here)  # packets stay in the children, clips are cut there
    assert plan.decode_processes == 3 and all(s.in_child and s.packet_ring_s == 10.0 for s in plan.streams)
    nvdec = Machine(cores=16, gpu=True, nvdec=True, nvdec_reason="nvdec on H200",
                    modules=frozenset({"torch", "onnx2torch", "cupy"}))  # a GPU engine: frames stay on the GPU
    plan = resolve(config("auto").model_copy(update={"streams": [
        StreamConfig(id=f"c{i}", url=f"/clips/{i}.mp4") for i in range(20)]}), nvdec)
    assert plan.per_child == 8 and all(s.decoder == "nvdec" and s.in_child for s in plan.streams)


def test_streams_are_added_to_and_removed_from_running_decode_processes(tmp_path):
    import threading

    from pipeline.testing import RecordingSink

    config = PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": f"cam-{i}", "url": f"fake://cam-{i}?fps=40", "ring_size": 16} for i in range(2)],
        "detector": {"model": "fake", "engine": "fake"},
        "runtime": {"decode_processes": 2, "outbox_path": str(tmp_path / "outbox.db")},
    })
    sink = RecordingSink()
    runner = PipelineRunner(config, sinks=[sink])
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert sink.wait_for(lambda s: min(len(s.seqs["cam-0"]), len(s.seqs["cam-1"])) >= 20, timeout=30)
        runner.add_stream(StreamConfig(id="cam-2", url="fake://cam-2?fps=40", ring_size=16))
        assert sink.wait_for(lambda s: len(s.seqs["cam-2"]) >= 20, timeout=30)
        assert runner.parts.sources.worker("cam-2").pid in {runner.parts.sources.worker(f"cam-{i}").pid for i in (0, 1)}
        assert runner.remove_stream("cam-0", timeout=30)
        at_removal = len(sink.seqs["cam-1"])
        assert sink.wait_for(lambda s: len(s.seqs["cam-1"]) >= at_removal + 20, timeout=30)
        assert [s.id for s in runner.streams()] == ["cam-1", "cam-2"]
    finally:
        runner.request_stop()
        thread.join(30)
    for stream_id in ("cam-0", "cam-1", "cam-2"):
        seqs = sink.seqs[stream_id]
        assert seqs == list(range(len(seqs))), stream_id
    assert runner.parts.sources.children.count == 0  # every child exited at the end


@pytest.mark.fault
def test_a_camera_whose_decode_process_keeps_dying_leaves_no_descriptor_behind():
    camera = StreamConfig(id="cam", url="synthetic://street?seed=3&fps=20&size=160x96", ring_size=4,
                          reconnect_min_s=0.1, reconnect_max_s=0.2)
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], [camera])
    processes = make_processes([camera], 1, buffer)
    taker = Taker(buffer)
    worker = processes.workers[0]
    assert taker.until(lambda: len(taker.frames["cam"]) >= 5, timeout=30)
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))  # this process's pipes and process handles of the one live child
    for kill in range(1, 5):
        os.kill(worker.pid, signal.SIGKILL)
        assert taker.until(lambda: worker.child == kill, timeout=30)  # a new child took the camera
        seen = len(taker.frames["cam"])
        assert taker.until(lambda: len(taker.frames["cam"]) >= seen + 5, timeout=30)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before
    stop_and_drain(processes, buffer)


@pytest.mark.fault
def test_a_clip_asked_for_while_the_camera_moves_to_a_new_process_is_missed_not_left_waiting(tmp_path):
    camera = StreamConfig(id="cam", url="synthetic://street?seed=4&fps=20&size=160x96", ring_size=4,
                          reconnect_min_s=30.0, reconnect_max_s=30.0)  # stays between processes for the test
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], [camera])
    processes = make_processes([camera], 1, buffer)
    taker = Taker(buffer)
    worker = processes.workers[0]
    assert taker.until(lambda: len(taker.frames["cam"]) >= 5, timeout=30)
    os.kill(worker.pid, signal.SIGKILL)
    assert taker.until(lambda: worker.state.value == "reconnecting", timeout=30)
    assert not processes.record_clip(worker, 0, 1.0, 1.0, tmp_path / "clip.mp4", None)
    assert not processes._clips  # nothing waits for an answer that cannot come
    stop_and_drain(processes, buffer)


@pytest.mark.fault
def test_a_process_that_fails_on_its_way_out_without_closing_its_decode_processes_still_exits():
    """The children ignore SIGTERM (a stop is the main process's to make), and multiprocessing's exit hook would
    wait for the SIGTERM it sends them: they must be killed at exit instead, or the failed process never exits."""
    script = """
import sys, time
import samples.world.source  # synthetic:// cameras
from pipeline.align.buffer import AlignedBuffer
from pipeline.config.models import LaneConfig, StreamConfig
from tests.support.batches import decode_in_children
camera = StreamConfig(id="cam", url="synthetic://street?seed=1&fps=20&size=160x96", ring_size=4)
buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], [camera])
processes = decode_in_children([camera], 1, buffer, "source", ["samples.world.source"])
deadline = time.monotonic() + 30
while buffer.next_batch(timeout=0.1) is None:
    assert time.monotonic() < deadline, "no frame came"
sys.exit("an error on the way out: the decode processes were never closed")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "never closed" in done.stderr


@pytest.mark.fault
def test_a_stream_that_cannot_start_in_its_decode_process_fails_alone_and_the_process_still_obeys():
    """The child imports only the plugins it is given: a scheme registered here alone (in code, not under
    `plugins:`) is unknown there, and starting that stream fails in the child."""
    import pipeline.testing  # noqa: F401 - fake:// cameras, here and (as a plugin module) in the child
    from pipeline.sources.processes import DecodeProcesses

    odd = StreamConfig(id="odd", url=world(1, 12))  # synthetic://: registered in this process only
    camera = StreamConfig(id="cam", url="fake://cam?fps=40", ring_size=4)
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], [odd, camera])
    processes = DecodeProcesses(buffer, 1, plugin_modules=["pipeline.testing"])
    failed, running = processes.add(odd, "source"), processes.add(camera, "source")
    taker = Taker(buffer)
    assert taker.until(failed.ended.is_set, timeout=20), "the stream that could not start never ended"
    stats = failed.stats()
    assert stats["state"] == "failed" and "'odd'" in stats["last_error"] and "synthetic" in stats["last_error"], stats
    assert taker.until(lambda: len(taker.frames["cam"]) >= 10, timeout=20)  # the same child's other stream runs
    running.stop()
    assert taker.until(running.ended.is_set, timeout=10), "a stop after the failure did not reach the child"
    child = processes._children[0].process
    processes.close()
    assert child.exitcode == 0  # it exited when told, not killed


@pytest.mark.fault
def test_cameras_of_a_decode_process_that_hangs_show_as_stalled_not_running():
    camera = StreamConfig(id="cam", url="synthetic://street?seed=6&fps=20&size=160x96", ring_size=4,
                          read_timeout_s=2.0)
    buffer = AlignedBuffer([LaneConfig(name="default", max_batch=4, max_wait_ms=5)], [camera])
    processes = make_processes([camera], 1, buffer)
    taker = Taker(buffer)
    worker = processes.workers[0]
    assert taker.until(lambda: worker.state.value == "running", timeout=30)
    os.kill(worker.pid, signal.SIGSTOP)  # hung: a decoder call that never returns holds its interpreter lock
    try:
        assert taker.until(lambda: worker.stats()["state"] == "stalled", timeout=10), worker.stats()
        assert worker.state.value == "stalled"
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert taker.until(lambda: worker.stats()["state"] == "running", timeout=10), worker.stats()
    stop_and_drain(processes, buffer)
