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


def test_a_clip_callback_that_raises_loses_none_of_the_messages_received_with_its_answer(tmp_path):
    import numpy as np

    ended, put = [], []
    buffer = types.SimpleNamespace(end_stream=ended.append, put=lambda frame, timeout: put.append(frame.seq) or True)
    processes = DecodeProcesses(buffer, max_children=1)
    processes.close()
    worker = RemoteWorker(StreamConfig(id="cam", url="cam.mp4"), "cpu", 0.0, lambda w: None)
    child = types.SimpleNamespace(number=0, workers={0: worker})

    def upload(path, error):  # an output plugin's own on_done, say one that uploads the clip
        raise ConnectionError("storage bucket unreachable")

    processes._clips[7] = (0, tmp_path / "clip.mp4", upload)
    image = np.zeros((4, 4, 3), np.uint8)
    processes._deliver([(child, msg.ClipDone(7, str(tmp_path / "clip.mp4"), None)),
                        (child, msg.FrameMsg(0, 41, 0, 0, 4, 4, "rgb24", image, 41, 0)),
                        (child, msg.Ended(0, {"state": "finished", "frames": 42}))])
    assert put == [41] and ended == ["cam"] and worker.state is WorkerState.FINISHED
