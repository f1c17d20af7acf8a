"""Changes the running pipeline could apply only in part: what failed is left out, said, and applied by the next
change once its cause is gone; nothing is left half made."""
from __future__ import annotations

import os
import threading

import pytest

from pipeline.config.loader import parse_config
from pipeline.config.models import StreamConfig
from pipeline.errors import PartiallyApplied, PipelineError
from pipeline.runtime.runner import PipelineRunner
from pipeline.testing import RecordingSink
from tests.support.service import config
from tests.support.waiting import wait_until


def test_a_camera_whose_start_fails_is_not_left_half_added_and_the_pipeline_still_stops(tmp_path, monkeypatch):
    sink = RecordingSink()
    runner = PipelineRunner(config(tmp_path, [{"id": "a", "url": "fake://a?fps=25&live=1"}]), sinks=[sink])
    start = runner.parts.sources.add

    def out_of_descriptors(stream, plan):  # the host is out of file descriptors as b's reader starts
        if stream.id == "b":
            raise OSError(24, "Too many open files")
        return start(stream, plan)

    monkeypatch.setattr(runner.parts.sources, "add", out_of_descriptors)
    thread = threading.Thread(target=runner.run, kwargs={"until_stopped": True})
    thread.start()
    try:
        assert runner.running.wait(10)
        with pytest.raises(PipelineError, match=r"stream 'b' could not be started \(.*Too many open files\)"):
            runner.add_stream(StreamConfig(id="b", url="fake://b?fps=25&live=1"))
        assert [s.id for s in runner.streams()] == ["a"]
        monkeypatch.setattr(runner.parts.sources, "add", start)
        runner.add_stream(StreamConfig(id="b", url="fake://b?fps=25&live=1"))  # once the first try has ended
        assert sink.wait_for(lambda s: len(s.seqs["b"]) > 5, timeout=20)
        assert runner.table.pause("b", timeout=10)
        monkeypatch.setattr(runner.parts.sources, "add", out_of_descriptors)
        with pytest.raises(PipelineError, match="could not be started .*; it is still paused: resume it once"):
            runner.table.resume("b")
        assert runner.table.paused() == {"b"}
    finally:
        runner.request_stop()
        thread.join(30)
    assert not thread.is_alive()


def served_site(tmp_path, serve):
    """A served pipeline of one fake camera from a file (returned with its text, to which sinks are added)."""
    path = tmp_path / "site.yaml"
    base = (f"plugins: [pipeline.testing]\ndetector: {{model: fake, engine: fake}}\n"
            f"runtime: {{outbox_path: {tmp_path / 'outbox.db'}}}\nstreams:\n  - {{id: a, url: 'fake://a?fps=10&live=1'}}\n")
    path.write_text(base)
    return serve(parse_config(base, path), path=path), path, base


def still_draining(sink, options):  # what OutputSinks.add says while the sink it replaces still drains
    sink.close()
    raise PipelineError("not added: the one it replaces still delivers what it had queued; apply the change again")


def test_a_sink_a_reload_could_not_add_is_added_by_the_next_reload(tmp_path, serve):
    served, path, base = served_site(tmp_path, serve)
    outputs = served.runner.parts.outputs
    add, outputs.add = outputs.add, still_draining
    path.write_text(base + f"sinks:\n  - {{type: jsonl, path: {tmp_path / 'out.jsonl'}}}\n")
    with pytest.raises(PartiallyApplied, match="sink jsonl: not added"):
        served.service.control.reload()
    assert served.runner.config.sinks == []  # the running config says what runs
    outputs.add = add  # its cause is gone: the next reload adds it
    assert [s.type for s in served.service.control.reload().sinks_added] == ["jsonl"]
    assert wait_until(lambda: (tmp_path / "out.jsonl").exists() and (tmp_path / "out.jsonl").stat().st_size > 0)


def test_a_storage_sink_is_added_whole_or_not_at_all_and_the_next_reload_adds_it_once(tmp_path, serve):
    served, path, base = served_site(tmp_path, serve)
    parts = served.runner.parts
    add, parts.outputs.add = parts.outputs.add, still_draining
    path.write_text(base + f"sinks:\n  - {{type: sqlite, path: {tmp_path / 'd.db'}}}\n")
    with pytest.raises(PartiallyApplied, match="sink sqlite: not added"):
        served.service.control.reload()
    assert parts.events.entries == [] and served.runner.config.sinks == []  # its events half is not left running
    parts.outputs.add = add
    served.service.control.reload()  # applies whole: no "event outputs need unique names"
    served.service.control.reload()  # and nothing more
    assert [entry.type for entry, _ in parts.events.entries] == ["sqlite"]
    assert [q.options.type for q in parts.outputs._queues] == ["sqlite"]



def _mqtt_clients() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client")}


def test_outputs_made_by_a_reload_whose_later_output_cannot_be_made_are_closed(tmp_path, serve):
    served, path, base = served_site(tmp_path, serve)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)  # passes the check of the config, and no event log can be written there
    path.write_text(base + "sinks:\n  - {type: mqtt, host: 127.0.0.1, port: 1}\n"  # its client starts at once
                           f"  - {{type: jsonl, what: events, path: {fifo}}}\n")
    before = _mqtt_clients()
    for _ in range(2):
        with pytest.raises(PipelineError):
            served.service.control.reload()
        assert _mqtt_clients() == before  # the MQTT client made before the event log failed was closed, its thread gone
    assert served.runner.config.sinks == []
