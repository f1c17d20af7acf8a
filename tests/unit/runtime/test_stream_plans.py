"""`decode_processes: auto` for cameras added while running: NVDEC cameras go to decode processes once the pipeline
has eight of them, whether they were in the config or came later (a service started without cameras, a fleet
instance), on a made-up machine with NVDEC (the decoding itself is tests/gpu)."""
from __future__ import annotations

import queue
import types

from pipeline.config.models import PipelineConfig, StreamConfig
from pipeline.config.resolve import resolve
from pipeline.machine import Machine
from pipeline.runtime.streams import StreamTable

GPU = Machine(cores=16, gpu=True, nvdec=True, nvdec_reason="nvdec on H200",
              modules=frozenset({"torch", "onnx2torch", "cupy", "PyNvVideoCodec"}))


def camera(i: int) -> StreamConfig:
    return StreamConfig(id=f"cam-{i}", url=f"rtsp://cameras.local/{i}")


def table_of(cameras_at_start: int) -> tuple[StreamTable, list]:
    """A stream table over stand-ins for the pipeline's parts; the list gets (stream, in a child) per start."""
    started = []
    parts = types.SimpleNamespace(
        buffer=types.SimpleNamespace(add_stream=lambda config: None),
        stages=types.SimpleNamespace(add_stream=lambda stream_id, url, live: None),
        sources=types.SimpleNamespace(add=lambda config, plan: started.append((config.id, plan.in_child))))
    config = PipelineConfig(streams=[camera(i) for i in range(cameras_at_start)], detector={"model": "m.onnx"})
    table = StreamTable(parts, resolve(config, GPU), queue.SimpleQueue())
    table.accepting = True
    return table, started


def test_cameras_added_to_a_service_started_without_any_go_to_decode_processes_from_the_eighth():
    table, started = table_of(0)
    for i in range(10):
        table.add(camera(i))
    assert [in_child for _, in_child in started] == [False] * 7 + [True] * 3


def test_a_config_that_starts_with_eight_cameras_has_every_one_in_a_decode_process_from_the_first():
    table, started = table_of(8)
    for i in range(9):
        table.add(camera(i))
    assert all(in_child for _, in_child in started)
