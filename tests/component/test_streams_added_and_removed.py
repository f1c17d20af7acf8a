"""Streams added to and removed from a running pipeline: the others never pause, drop or reset."""
from __future__ import annotations

import threading

import pytest

from pipeline.config.models import StreamConfig
from pipeline.config.outputs import JsonlOutput
from pipeline.errors import ConfigError, NoSuchStream, PipelineError
from pipeline.runtime import reconfigure
from pipeline.runtime.runner import PipelineRunner
from pipeline.testing import RecordingSink
from tests.component.conftest import fake_config
from tests.support.waiting import wait_until

DROPS = ("dropped_overflow", "dropped_age", "dropped_fps_cap", "dropped_sink", "dropped_sinks")


def camera(name: str, fps: int = 40) -> dict:
    return {"id": name, "url": f"fake://{name}?fps={fps}", "ring_size": 16}


def test_a_camera_added_and_one_removed_while_running_leave_the_others_untouched(tmp_path, running):
    sink = RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [camera("a"), camera("b")]), sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: min(len(s.seqs["a"]), len(s.seqs["b"])) >= 20, timeout=20)

    runner.add_stream(StreamConfig(id="c", url="fake://c?fps=40", ring_size=16))
    assert sink.wait_for(lambda s: len(s.seqs["c"]) >= 20, timeout=20)
    assert runner.remove_stream("a", timeout=20)
    b_at_removal = len(sink.seqs["b"])
    assert sink.wait_for(lambda s: len(s.seqs["b"]) >= b_at_removal + 20 and len(s.seqs["c"]) >= 40, timeout=20)
    assert [s.id for s in runner.streams()] == ["b", "c"]
    assert not any(t.name == "decode:a" for t in threading.enumerate())  # its worker is gone
    live = runner.snapshot()
    assert set(live.streams) == {"b", "c"}  # forgotten by the buffer, the sources and the stages
    assert set(runner.parts.stages.frames()) == {"b", "c"}

    snap = run.stop()
    assert sink.started == ["a", "b", "c"] and sink.ended[0] == "a"
    for stream_id in ("b", "c"):
        seqs = sink.seqs[stream_id]
        assert seqs == list(range(len(seqs))), f"{stream_id}: a gap or a reorder in seq"
        assert all(snap.streams[stream_id][key] == 0 for key in DROPS), snap.streams[stream_id]
    a = sink.seqs["a"]
    assert a == list(range(len(a)))  # the removed camera's frames until its end, in order


def test_a_camera_removed_and_added_again_in_one_run_gives_no_track_id_twice(tmp_path, running):
    sink = RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [camera("a")]), sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 20 and max(s.track_ids["a"], default=-1) > 0, timeout=20)
    assert runner.remove_stream("a", timeout=20)
    first, frames = set(sink.track_ids["a"]) - {-1}, len(sink.track_ids["a"])
    runner.add_stream(StreamConfig(**camera("a")))  # a new tracker: its square is a new track
    assert sink.wait_for(lambda s: max(s.track_ids["a"][frames:], default=-1) > 0, timeout=20)
    run.stop()
    again = set(sink.track_ids["a"][frames:]) - {-1}
    assert again and min(again) > max(first)  # ids go on in the run: rows and events keep them apart


def test_adding_a_stream_with_a_taken_id_or_an_unknown_lane_changes_nothing(tmp_path, running):
    sink = RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [camera("a")]), sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 5, timeout=20)
    with pytest.raises(ConfigError, match="'a' already exists"):
        runner.add_stream(StreamConfig(id="a", url="fake://a2"))
    with pytest.raises(ConfigError, match="unknown lane 'fast'"):
        runner.add_stream(StreamConfig(id="d", url="fake://d", lane="fast"))
    with pytest.raises(ConfigError, match="no stream 'zz'"):
        runner.remove_stream("zz")
    assert [s.id for s in runner.streams()] == ["a"]
    snap = run.stop()
    assert set(snap.streams) == {"a"} and sink.started == ["a"]


def test_a_finished_file_can_be_removed_and_its_id_used_again(tmp_path, running):
    sink = RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [camera("cam"), {"id": "clip", "url": "fake://clip?frames=30&live=0"}]),
                            sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: "clip" in s.ended, timeout=20)
    assert runner.snapshot().streams["clip"]["state"] == "finished"  # listed until removed
    assert runner.remove_stream("clip", timeout=10)
    runner.add_stream(StreamConfig(id="clip", url="fake://clip?frames=10&live=0"))
    assert sink.wait_for(lambda s: s.ended.count("clip") == 2, timeout=20)
    run.stop()
    assert sink.seqs["clip"] == list(range(30)) + list(range(10))  # a new stream under the old name


def test_removing_every_stream_keeps_the_pipeline_running_for_the_next_one(tmp_path, running):
    sink = RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [camera("a")]), sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 10, timeout=20)
    assert runner.remove_stream("a", timeout=20) and runner.streams() == []
    runner.add_stream(StreamConfig(id="b", url="fake://b?fps=40"))
    assert sink.wait_for(lambda s: len(s.seqs["b"]) >= 10, timeout=20)
    run.stop()
    assert sink.ended == ["a", "b"]


class RefusesSomeStreams:
    """A stage that cannot serve streams whose id starts with 'bad' (its constructor raises)."""

    def __init__(self, stream_id: str):
        if stream_id.startswith("bad"):
            raise ConfigError(f"cannot serve {stream_id}")

    def __call__(self, result):
        return []


def test_a_stream_whose_stage_cannot_be_made_is_not_added_and_leaves_nothing_behind(tmp_path, running):
    sink = RecordingSink()
    stages = [{"python": f"{__name__}:RefusesSomeStreams"}]
    runner = PipelineRunner(fake_config(tmp_path, [camera("a")], stages=stages), sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 5, timeout=20)
    with pytest.raises(ConfigError, match="cannot serve bad-1"):
        runner.add_stream(StreamConfig(id="bad-1", url="fake://bad-1?fps=40"))
    assert [s.id for s in runner.streams()] == ["a"] and set(runner.snapshot().streams) == {"a"}
    runner.add_stream(StreamConfig(id="good", url="fake://good?fps=40"))  # the buffer kept no stale ring
    assert sink.wait_for(lambda s: len(s.seqs["good"]) >= 5, timeout=20)
    snap = run.stop()
    assert set(snap.streams) == {"a", "good"} and "bad-1" not in sink.started


class _EndHeldSink(RecordingSink):
    """Holds each stream's end until `release` is set (a sink closing a stream's file), saying when it began."""

    def __init__(self):
        super().__init__()
        self.ending, self.release = threading.Event(), threading.Event()

    def on_stream_end(self, stream_id: str) -> None:
        self.ending.set()
        assert self.release.wait(30)
        super().on_stream_end(stream_id)


def _change_in_background(runner: PipelineRunner, config: StreamConfig, timeout: float):
    """`replace(config)` on a thread of its own: (the thread, a list that gets "replaced" or what it raised)."""
    outcome: list = []

    def change():
        try:
            runner.table.replace(config, timeout=timeout)
            outcome.append("replaced")
        except Exception as exc:  # noqa: BLE001 - what it raised is the outcome
            outcome.append(exc)

    changing = threading.Thread(target=change)
    changing.start()
    return changing, outcome


def test_a_stop_asked_for_during_a_stream_change_is_not_held_up_by_the_change(tmp_path, running):
    """The change waits for the old stream's end to go through the sinks, which the runner's loop finishes; a stop
    takes the same loop. It once waited for the change's whole timeout, and the change failed after it."""
    sink = _EndHeldSink()
    runner = PipelineRunner(fake_config(tmp_path, [camera("a")]), sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 10, timeout=20)
    changing, outcome = _change_in_background(runner, StreamConfig(**camera("a", fps=20)), timeout=120)
    assert sink.ending.wait(20)  # the change has stopped the old stream and waits for its end
    runner.request_stop()
    assert wait_until(lambda: not runner.table.accepting)  # the runner's loop is stopping the streams
    sink.release.set()
    run.stop(timeout=30)  # well within the change's 120 s
    changing.join(30)
    assert not changing.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], PipelineError) and "not running" in str(outcome[0])


def test_a_stream_removed_while_a_change_restarts_it_stays_removed(tmp_path, running):
    sink = _EndHeldSink()
    runner = PipelineRunner(fake_config(tmp_path, [camera("a"), camera("b")]), sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 10, timeout=20)
    changing, outcome = _change_in_background(runner, StreamConfig(**camera("a", fps=20)), timeout=30)
    assert sink.ending.wait(20)  # the change waits for the old stream's end
    with pytest.raises(PipelineError, match="being changed"):
        runner.table.pause("a")
    assert runner.remove_stream("a", timeout=0) is False  # asked for now, done once the old stream has gone
    sink.release.set()
    changing.join(30)
    assert len(outcome) == 1 and "was removed while its change was applied" in str(outcome[0])
    assert [s.id for s in runner.streams()] == ["b"] and [s.id for s in runner.config.streams] == ["b"]
    run.stop()


def test_sinks_a_change_adds_as_the_pipeline_stops_are_refused_and_closed(tmp_path, running, monkeypatch):
    """They were added once the pipeline had closed its sinks and outbox: the change said it was applied, the
    frame sink's thread and file stayed open, and the event output met a closed outbox."""
    sink = RecordingSink()
    config = fake_config(tmp_path, [camera("a")])
    runner = PipelineRunner(config, sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 5, timeout=20)
    opened = reconfigure._open_outputs

    def open_then_stop(parts, new, entries):
        made = opened(parts, new, entries)
        run.stop()  # the service is stopped while the change opens its sinks
        return made

    monkeypatch.setattr(reconfigure, "_open_outputs", open_then_stop)
    more = [JsonlOutput(type="jsonl", path=tmp_path / "detections.jsonl"),
            JsonlOutput(type="jsonl", path=tmp_path / "events.jsonl", what="events")]
    with pytest.raises(PipelineError, match=r"sink jsonl: .*not added: the pipeline is stopping"):
        runner.reconfigure(config.model_copy(update={"sinks": more}))
    assert wait_until(lambda: not [t.name for t in threading.enumerate() if "jsonl" in t.name])


def test_a_stream_that_does_not_exist_is_refused_listing_the_paused_ones_too(tmp_path, running):
    sink = RecordingSink()
    runner = PipelineRunner(fake_config(tmp_path, [camera("a"), camera("b")]), sinks=[sink])
    run = running(runner)
    assert sink.wait_for(lambda s: len(s.seqs["a"]) >= 5, timeout=20)
    assert runner.table.pause("a", timeout=20)
    with pytest.raises(NoSuchStream, match=r"no stream 'zz'; streams: \['a', 'b'\]"):
        runner.table.pause("zz")  # a typo: the listing names every camera there is, the paused one included
    run.stop()
