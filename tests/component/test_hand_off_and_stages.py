"""Results keep each stream's frame order across concurrent inference threads; YAML-configured Python
stages add events, and a failing one is isolated."""
from __future__ import annotations

import json
import threading

import pytest
import yaml

from pipeline import plugins
from pipeline.config import load_config
from pipeline.config.models import StageConfig, StreamConfig, ZoneConfig
from pipeline.errors import ConfigError, PartiallyApplied
from pipeline.runtime.runner import PipelineRunner
from pipeline.testing import RecordingSink
from tests.component.conftest import fake_config
from tests.support.waiting import inference_waits_for, wait_until


def test_frames_keep_their_order_per_stream_when_batches_finish_out_of_order(tmp_path):
    files = [{"id": f"f{i}", "url": f"fake://f{i}?frames=150&live=0", "ring_size": 4} for i in range(6)]
    config = fake_config(tmp_path, files, lanes=[{"name": "default", "max_batch": 3, "max_wait_ms": 1}])
    config = config.model_copy(update={"detector": config.detector.model_copy(update={"workers": 4})})
    sink = RecordingSink()
    runner = PipelineRunner(config, sinks=[sink])
    snap = runner.run()
    assert runner.detector.workers == 4 and runner.detector.engine.most_at_once > 1  # batches did overlap
    assert snap.frames_detected == 900 and snap.detections == 900  # one square per frame, every frame
    for stream_id in (f["id"] for f in files):
        assert sink.seqs[stream_id] == list(range(150)), stream_id
    assert sorted(sink.ended) == sorted(f["id"] for f in files)


def write_config(tmp_path, stages: list[dict]) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": f"cam-{i}", "url": f"fake://cam-{i}?frames=60&live=0"} for i in range(2)],
        "detector": {"model": "fake", "engine": "fake"},
        "stages": stages,
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl"), "what": "events"}],
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
    }))
    return str(path)


def test_a_python_stage_named_in_yaml_adds_events_that_reach_the_outputs(tmp_path):
    config = load_config(write_config(tmp_path, [
        {"python": "pipeline.testing:MarkEveryNth", "options": {"every": 20}, "streams": ["cam-1"]},
        {"python": "tests.support.stages:Exploding"},
    ]))
    sink = RecordingSink()
    snap = PipelineRunner(config, sinks=[sink]).run()
    marks = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(m["stream_id"], m["kind"], m["payload"]["seq"]) for m in marks] == [("cam-1", "mark", s) for s in (19, 39, 59)]
    assert [e.payload["seq"] for e in sink.events["cam-1"]] == [19, 39, 59] and not sink.events["cam-0"]
    assert snap.events == 3
    # the broken plugin failed on every frame of both streams, isolated: every frame still went through
    assert snap.sink_failures == {"tests.support.stages:Exploding": 120}
    assert sink.seqs["cam-0"] == sink.seqs["cam-1"] == list(range(60))


def test_a_python_stage_returning_a_malformed_event_fails_alone_and_the_other_streams_go_on(tmp_path):
    """Its event passed the stage and then stopped the stage worker, and every stream on it, when the pipeline
    named its class."""
    config = load_config(write_config(tmp_path, [
        {"python": "pipeline.testing:MarkEveryNth", "options": {"every": 20}},
        {"python": "tests.support.stages:NoClassId", "streams": ["cam-1"]},
    ]))
    sink = RecordingSink()
    snap = PipelineRunner(config, sinks=[sink]).run()
    assert snap.sink_failures == {"tests.support.stages:NoClassId": 6}  # frames 9, 19, ... 59 of cam-1
    assert sink.seqs["cam-0"] == sink.seqs["cam-1"] == list(range(60))
    assert {s: [e.payload["seq"] for e in sink.events[s]] for s in ("cam-0", "cam-1")} == {
        "cam-0": [19, 39, 59], "cam-1": [19, 39, 59]}


def test_a_plugin_source_giving_frames_of_another_shape_stops_alone_and_the_others_are_all_detected(tmp_path, monkeypatch):
    """Its frames failed every detector batch they were in, the other cameras' frames with them."""
    monkeypatch.setitem(plugins._sources, "rgba", plugins.SourceKind("rgba", "tests.support.stages:RgbaReader"))
    config = load_config(write_config(tmp_path, []))
    config = config.model_copy(update={"streams": [*config.streams, StreamConfig(id="odd", url="rgba://x")]})
    sink = RecordingSink()
    runner = PipelineRunner(config, sinks=[sink])
    snap = runner.run()
    assert sink.seqs["cam-0"] == sink.seqs["cam-1"] == list(range(60)) and snap.frames_detected == 120
    assert snap.streams["odd"]["state"] == "failed" and "gave a ndarray (48, 64, 4) uint8 frame; a source gives (height, " \
        "width, 3) uint8 RGB" in snap.streams["odd"]["last_error"]


def test_a_python_stage_that_cannot_be_made_stops_the_config_before_any_stream_starts(tmp_path):
    with pytest.raises(ConfigError, match=r"site.yaml:\d+: stages -> 0 -> python: .*cannot import 'nowhere'"):
        load_config(write_config(tmp_path, [{"python": "nowhere:Stage"}]))
    with pytest.raises(ConfigError, match=r"site.yaml:\d+: stages -> 0 -> options: .*unexpected keyword argument 'evry'"):
        load_config(write_config(tmp_path, [{"python": "pipeline.testing:MarkEveryNth", "options": {"evry": 3}}]))


class Heartbeat:
    """Beats from a thread of its own until closed, as a plugin that reports elsewhere does; marks every frame."""

    def __init__(self, stream_id: str, every_s: float = 0.05):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(every_s,), name=f"heartbeat:{stream_id}", daemon=True)
        self._thread.start()

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            pass

    def __call__(self, result):
        return [result.moment.event("beat", "mark", -1, -1, {})]

    def close(self):
        self._stop.set()
        self._thread.join(5)


class Picky:
    def __init__(self, stream_id: str, mode: str = "fast"):
        if mode != "fast":
            raise ValueError(f"mode must be 'fast', got {mode!r}")

    def __call__(self, result):
        return []


def heartbeats() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("heartbeat:")]


def test_a_live_change_checked_or_applied_leaves_open_only_what_the_running_plugins_opened(tmp_path, running,
                                                                                          monkeypatch):
    """The check before a change made every stream's plugins and dropped them unclosed: a thread (a socket, a
    file) left behind by each change, and by each refused one."""
    monkeypatch.setitem(plugins._stages, "heartbeat", Heartbeat)
    monkeypatch.setitem(plugins._stages, "picky", Picky)
    config = fake_config(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}])
    sink = RecordingSink()
    runner = PipelineRunner(config, sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 5, timeout=20)
    beating = config.model_copy(update={"stages": [StageConfig(python="heartbeat")]})
    runner.check(beating)
    assert heartbeats() == []
    refused = config.model_copy(update={"stages": [StageConfig(python="heartbeat"),
                                                   StageConfig(python="picky", options={"mode": "slow"})]})
    with pytest.raises(ConfigError, match="mode must be 'fast'"):
        runner.reconfigure(refused)
    assert heartbeats() == []
    runner.reconfigure(beating)
    assert sink.wait_for(lambda s: any(e.rule == "beat" for e in s.events["a"]), timeout=20)
    assert heartbeats() == ["heartbeat:a"]  # the running stream's own
    run.stop()
    assert wait_until(lambda: heartbeats() == [])


class Service:
    """What a plugin connects to when made: up for the first `connections`, then refusing."""

    def __init__(self, connections: int):
        self.left = connections

    def connect(self) -> None:
        if self.left <= 0:
            raise ConnectionRefusedError("the counting service is down")
        self.left -= 1


class Connected:
    def __init__(self, stream_id: str, service: Service):
        service.connect()

    def __call__(self, result):
        return [result.moment.event("counted", "mark", -1, -1, {})]


def test_a_stage_change_that_fails_on_the_running_stream_is_reported_and_the_next_change_tries_it_again(
        tmp_path, running, monkeypatch):
    """The check made the plugin, the stream's worker could not: the change was counted as a failure and said
    applied, and the next one saw nothing to change, so the plugin never ran."""
    monkeypatch.setitem(plugins._stages, "connected", Connected)
    config = fake_config(tmp_path, [{"id": "a", "url": "fake://a?fps=40"}])
    sink = RecordingSink()
    runner = PipelineRunner(config, sinks=[sink])
    running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 5, timeout=20)
    service = Service(connections=1)  # the check's connection, then it goes down
    counting = config.model_copy(update={"stages": [StageConfig(python="connected", options={"service": service})]})
    refused = r"applied, except: stages: stream 'a' keeps its stages: .*the counting service is down"
    with pytest.raises(PartiallyApplied, match=refused):
        runner.reconfigure(counting)
    assert runner.config.stages == []  # what runs
    service.left = 2  # back up: the check's and the stream's
    assert runner.reconfigure(counting).analytics
    assert sink.wait_for(lambda s: any(e.rule == "counted" for e in s.events["a"]), timeout=20)


class Stuck:
    """Hangs on its stream's 10th frame until released (a call to a service that stopped answering)."""

    def __init__(self, stream_id: str, released: threading.Event):
        self.released = released

    def __call__(self, result):
        if result.frame.seq >= 10:
            self.released.wait()
        return []


def _running_stuck(tmp_path, monkeypatch, released: threading.Event):
    """One camera whose `Stuck` stage hangs until `released`, with room for two results in its worker's queue: its
    config, a recording sink, and the runner, running in the thread returned."""
    monkeypatch.setitem(plugins._stages, "stuck", lambda stream_id: Stuck(stream_id, released))
    config = fake_config(tmp_path, [{"id": "cam", "url": "fake://cam?fps=200"}], stages=[{"python": "stuck"}])
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"stage_queue_size": 2})})
    sink = RecordingSink()
    runner = PipelineRunner(config, sinks=[sink])
    thread = threading.Thread(target=runner.run)
    thread.start()
    return config, sink, runner, thread


@pytest.mark.fault
def test_a_stage_hung_on_a_frame_does_not_keep_a_second_stop_from_ending_the_run(tmp_path, monkeypatch):
    """Inference waited for room in the hung stage worker's queue, whatever was asked: the run never ended."""
    released = threading.Event()
    _, sink, runner, thread = _running_stuck(tmp_path, monkeypatch, released)
    try:
        assert sink.wait_for(lambda s: len(s.seqs["cam"]) >= 10, timeout=20)  # the 11th hangs in the stage
        assert wait_until(lambda: inference_waits_for(runner.parts.stages._put_to), timeout=20)
        runner.request_stop()
        runner.request_stop()  # again: abandon what is buffered
        thread.join(30)
        assert not thread.is_alive()
    finally:
        released.set()
        thread.join(30)


@pytest.mark.fault
def test_a_zone_change_while_a_stage_hangs_is_refused_in_time_and_the_next_one_applies(tmp_path, monkeypatch):
    """The change waited for room in the hung worker's full queue for good, holding the lock every change and reload
    takes: the API hung with it."""
    released = threading.Event()
    config, sink, runner, thread = _running_stuck(tmp_path, monkeypatch, released)
    zoned = config.model_copy(update={"zones": [ZoneConfig(name="door", polygon=[(0, 0), (20, 0), (20, 20)])]})
    try:
        assert wait_until(lambda: inference_waits_for(runner.parts.stages._put_to), timeout=20)  # its queue is full
        answer: list = []
        change = threading.Thread(target=lambda: answer.append(_raised(runner.reconfigure, zoned)))
        change.start()
        change.join(30)  # the change's own bound is 10 s
        assert not change.is_alive() and isinstance(answer[0], PartiallyApplied)
        assert "did not take the change within 10 s" in str(answer[0]) and runner.config.zones == []
        released.set()
        assert runner.reconfigure(zoned).analytics  # the next try finds the change still to make
        assert [zone.name for zone in runner.config.zones] == ["door"]
    finally:
        released.set()
        runner.request_stop()
        thread.join(30)


def _raised(function, *args):
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
        return exc
    return None


@pytest.mark.fault
def test_a_stage_hung_on_a_frame_holds_up_a_first_stop_only_so_long_and_the_other_streams_drain(
        tmp_path, monkeypatch, caplog):
    """One stop waited for the hung stage forever (an orchestrator's SIGTERM ended in SIGKILL), and what the other
    streams had buffered was lost with it."""
    released = threading.Event()
    monkeypatch.setitem(plugins._stages, "stuck",
                        lambda stream_id: Stuck(stream_id, released) if stream_id == "cam" else (lambda result: []))
    streams = [{"id": "cam", "url": "fake://cam?fps=200"}, {"id": "clip", "url": "fake://clip?frames=100000&live=0"}]
    config = fake_config(tmp_path, streams, stages=[{"python": "stuck"}])
    config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"stage_queue_size": 2})})
    sink = RecordingSink()
    runner = PipelineRunner(config, sinks=[sink])
    runner.drain_s = 3.0  # how long a stop waits for a hung stage or sink (and the others to drain); 60 s by default
    assert runner.parts.stages._shard("cam") != runner.parts.stages._shard("clip")  # on another worker
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert sink.wait_for(lambda s: len(s.seqs["cam"]) >= 10, timeout=20)  # the 11th hangs in the stage
        assert wait_until(lambda: inference_waits_for(runner.parts.stages._put_to), timeout=20)
        assert wait_until(lambda: runner.snapshot().streams["clip"]["depth"] > 0, timeout=20)
        staged, buffered = len(sink.seqs["clip"]), runner.snapshot().streams["clip"]["depth"]
        runner.request_stop()  # once, as an orchestrator does
        thread.join(20)
        assert not thread.is_alive()
        seqs = sink.seqs["clip"]
        assert seqs == list(range(len(seqs))) and len(seqs) >= staged + buffered and sink.ended == ["clip"]
        assert "stage 'stuck' of stream 'cam'" in caplog.text
    finally:
        released.set()
        thread.join(30)
