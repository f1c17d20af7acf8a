"""What a decode process reports of its streams, as the main process applies it (no process started)."""
from __future__ import annotations

import types

from pipeline.config.models import StreamConfig
from pipeline.sources.processes import messages as msg
from pipeline.sources.processes.remote import RemoteWorker
from pipeline.sources.processes.supervisor import DecodeProcesses
from pipeline.sources.worker import WorkerState


def test_counters_read_before_a_stream_ended_and_sent_after_its_end_do_not_undo_its_final_state():
    ended = []
    processes = DecodeProcesses(types.SimpleNamespace(end_stream=ended.append), max_children=1)
    processes.close()
    worker = RemoteWorker(StreamConfig(id="cam", url="cam.mp4"), "cpu", 0.0, lambda w: None)
    child = types.SimpleNamespace(number=0, workers={0: worker})
    processes._handle(child, msg.Stats({0: {"state": "running", "frames": 10}}))
    assert worker.state is WorkerState.RUNNING
    final = {"state": "failed", "frames": 12, "last_error": "cam.mp4: decoder crashed"}
    processes._handle(child, msg.Ended(0, final))
    processes._handle(child, msg.Stats({0: {"state": "running", "frames": 11}}))  # read before the end
    assert ended == ["cam"]
    assert worker.state is WorkerState.FAILED
    assert worker.stats()["frames"] == 12 and worker.stats()["last_error"] == "cam.mp4: decoder crashed"
