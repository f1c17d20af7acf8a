"""The plan: every `auto` decided once, from the config and the machine (here made-up machines)."""
from __future__ import annotations

import os
from dataclasses import replace

import pytest

from pipeline.config.models import PipelineConfig
from pipeline.config.resolve import batch_buckets, plan_stream, resolve
from pipeline.errors import ConfigError
from pipeline.machine import Machine, mps_running

CPU = Machine(cores=2)
GPU = Machine(cores=16, gpu=True, nvdec=True, nvdec_reason="nvdec on H200",
              modules=frozenset({"torch", "onnx2torch", "cupy", "PyNvVideoCodec"}))


def config(streams=1, **extra) -> PipelineConfig:
    data = {"streams": [{"id": f"c{i}", "url": f"/clips/{i}.mp4"} for i in range(streams)],
            "detector": {"model": "m.onnx"}, **extra}
    return PipelineConfig.model_validate(data)


def test_on_a_cpu_machine_auto_takes_onnxruntime_and_runs_several_single_threaded_batches():
    plan = resolve(config(lanes=[{"name": "default", "max_batch": 16}]), CPU)
    assert plan.detector.engine == "onnxruntime" and plan.detector.reason.startswith("onnxruntime: no CUDA GPU found")
    assert (plan.detector.max_batch, plan.detector.workers, plan.detector.threads) == (16, 2, 1)
    assert plan.detector.buckets == () and plan.switch_interval_s == 0.005
    assert [s.decoder for s in plan.streams] == ["cpu"] and plan.decode_processes == 0


def test_on_a_gpu_machine_auto_takes_torch_with_one_batch_in_flight_in_buckets():
    plan = resolve(config(streams=3, detector={"model": "m.onnx", "max_batch": 48}), GPU)
    assert plan.detector.engine == "torch" and "TensorRT not installed" in plan.detector.reason
    assert plan.detector.workers == 1 and plan.detector.buckets == (1, 2, 4, 8, 16, 32, 48)
    assert plan.switch_interval_s == 0.0005 and "1 in flight" in plan.describe()
    assert [s.decoder for s in plan.streams] == ["nvdec"] * 3 and not any(s.in_child for s in plan.streams)  # < 8
    assert resolve(config(detector={"model": "m.onnx", "workers": 3}), GPU).detector.workers == 3  # one twin each


def test_tensorrt_runs_one_batch_at_a_time_and_says_so_when_asked_for_more():
    machine = Machine(cores=16, gpu=True, modules=GPU.modules | {"tensorrt"})
    plan = resolve(config(detector={"model": "m.onnx", "workers": 4}), machine)
    assert plan.detector.engine == "tensorrt" and plan.detector.workers == 1
    assert any("detector.workers 4 ignored" in w for w in plan.warnings)


def test_tensorrt_goes_first_once_it_is_installed():
    machine = Machine(cores=16, gpu=True, modules=GPU.modules | {"tensorrt"})
    assert resolve(config(), machine).detector.engine == "tensorrt"


def test_an_engine_or_decoder_that_cannot_run_here_is_refused_before_anything_starts():
    with pytest.raises(ConfigError, match="detector.engine 'torch' cannot run here .*no CUDA GPU found"):
        resolve(config(detector={"model": "m.onnx", "engine": "torch"}), CPU)
    one_gpu = replace(GPU, cuda_devices=1)
    with pytest.raises(ConfigError, match="detector.device 1 does not exist: engine torch .* has 1 .*set detector.dev"):
        resolve(config(detector={"model": "m.onnx", "device": 1}), one_gpu)
    assert resolve(config(detector={"model": "m.onnx", "device": 1}), replace(one_gpu, cuda_devices=2))
    nvdec = config().model_copy(update={"streams": [config().streams[0].model_copy(update={"decode": "nvdec"})]})
    with pytest.raises(ConfigError, match="stream 'c0': decode 'nvdec' cannot run here"):
        resolve(nvdec, CPU)


def test_decode_processes_auto_starts_one_child_per_eight_nvdec_streams_in_the_config_or_added_later():
    plan = resolve(config(streams=20), GPU)
    assert (plan.children_take, plan.per_child) == ("nvdec", 8) and all(s.in_child for s in plan.streams)
    added = plan_stream(config(streams=21).streams[20], plan, nvdec_streams=21)  # added while running, same rules
    assert added.in_child and added.decoder == "nvdec"
    empty = resolve(config(streams=0), GPU)  # a service started without cameras, or an instance of a fleet
    camera = config(streams=8).streams[7]
    assert not plan_stream(camera, empty, nvdec_streams=7).in_child  # a few cameras decode in threads here
    assert plan_stream(camera, empty, nvdec_streams=8).in_child  # the eighth goes to a decode process
    assert resolve(config(streams=20), CPU).decode_processes == 0  # no NVDEC: CPU decoding stays in threads


def test_packets_are_kept_for_clips_only_when_a_media_sink_will_ask_for_them():
    media = {"type": "media", "clip_before_s": 3.0}
    asked = [{"name": "a", "when": "enter", "zone": "z", "clip": True}]
    zones = [{"name": "z", "polygon": [[0, 0], [10, 0], [10, 10]]}]
    assert resolve(config(sinks=[media]), CPU).packet_ring_s == 0.0
    assert resolve(config(sinks=[media], zones=zones, alerts=asked), CPU).streams[0].packet_ring_s == 8.0
    assert resolve(config(sinks=[{**media, "clips": True}]), CPU).packet_ring_s == 8.0
    assert resolve(config(zones=zones, alerts=asked), CPU).packet_ring_s == 0.0  # nobody to cut them


def test_batch_buckets_are_powers_of_two_then_the_limit():
    assert batch_buckets(64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_buckets(48) == [1, 2, 4, 8, 16, 32, 48]
    assert batch_buckets(1) == [1]


def test_the_plan_says_what_it_decided():
    text = resolve(config(streams=20), GPU).describe()
    assert "engine: torch:" in text and "decode processes: one per 8 NVDEC streams once there are 8" in text
    assert "stream c0: file, decoder nvdec, in a decode process" in text


def test_the_plan_suggests_mps_only_where_decode_processes_share_the_gpu_without_it(tmp_path):
    without = resolve(config(streams=20), GPU).describe()
    assert "MPS off" in without and "starting MPS (`nvidia-cuda-mps-control -d`)" in without
    with_mps = resolve(config(streams=20), replace(GPU, mps=True)).describe()
    assert "MPS on" in with_mps and "starting MPS" not in with_mps
    assert "starting MPS" not in resolve(config(streams=2), GPU).describe()  # no decode process
    assert not mps_running({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)})
    os.mkfifo(tmp_path / "control")  # what the MPS control daemon creates
    assert mps_running({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)})


def test_http_cameras_are_planned_like_rtsp_ones_live_and_on_nvdec_where_it_runs():
    urls = ["rtsp://10.0.0.5/live", "http://10.0.0.6/live/index.m3u8", "https://10.0.0.7/stream.ts"]
    cameras = PipelineConfig.model_validate({"streams": [{"id": f"cam-{i}", "url": url} for i, url in enumerate(urls)],
                                             "detector": {"model": "m.onnx"}})
    for machine, decoder in ((GPU, "nvdec"), (CPU, "cpu")):
        plan = resolve(cameras, machine)
        assert [(s.decoder, s.live) for s in plan.streams] == [(decoder, True)] * 3


def test_a_model_file_only_the_torch_engine_reads_is_refused_where_torch_cannot_run():
    torchscript = {"model": "m.torchscript"}
    with pytest.raises(ConfigError, match="onnxruntime reads ONNX files, not TorchScript"):
        resolve(config(detector=torchscript), CPU)
    with pytest.raises(ConfigError, match="detector.engine 'onnxruntime' cannot run here .*not torch.export"):
        resolve(config(detector={"model": "m.pt2", "engine": "onnxruntime"}), CPU)
    assert resolve(config(detector=torchscript), GPU).detector.engine == "torch"  # a missing file is preflight's


def test_auto_falls_back_to_onnxruntime_with_the_reason_when_torch_cannot_load_the_model(tmp_path, caplog):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    plan = resolve(config(streams=2, detector={"model": str(broken)}), GPU)
    assert plan.detector.engine == "onnxruntime" and not plan.detector.on_gpu
    assert "torch cannot load the model" in plan.detector.reason and "broken.onnx" in plan.detector.reason
    assert "engine auto: torch cannot load" in caplog.text
    assert [s.decoder for s in plan.streams] == ["cpu", "cpu"]  # ONNX Runtime takes host frames: no NVDEC
    assert "torch cannot load the model" in plan.describe()


def test_auto_takes_torch_once_the_model_converted_on_the_cpu(shared):
    import importlib.util

    from tests.support.ultralytics_exports import torchvision_stand_in

    if importlib.util.find_spec("onnx2torch") is None:
        pytest.skip("needs the test extra's onnx2torch")

    torchvision_stand_in()
    model = shared("models/yolox_nano_416_dynbatch.onnx")
    plan = resolve(config(detector={"model": str(model)}), GPU)
    assert plan.detector.engine == "torch"
    assert plan.detector.reason.endswith("'yolox_nano_416_dynbatch.onnx' loads in it (tried on the CPU)")
