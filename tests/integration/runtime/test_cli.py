"""The command line as a user meets it: clear errors, no tracebacks."""
import os
import re
import subprocess
import sys

import pytest

from pipeline.runtime.placement import shard_of
from tests.conftest import REPO


def cli(*args, env=None):
    return subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), *args], capture_output=True, text=True, cwd=REPO,
                          env=env)


def test_build_engine_without_tensorrt_says_what_is_missing():
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    proc = cli("build-engine", "configs/demo.yaml")
    assert proc.returncode == 1
    assert "build-engine needs TensorRT and CuPy" in proc.stderr and "Traceback" not in proc.stderr


def test_run_with_a_missing_model_fails_before_starting_with_the_file_named(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(f"streams: [{{id: a, url: rtsp://192.0.2.1/live}}]\ndetector: {{model: {tmp_path}/nope.onnx}}\n")
    proc = cli("run", str(config))
    assert proc.returncode == 2
    assert f"site.yaml:2: detector -> model: model file '{tmp_path}/nope.onnx' does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_with_plan_says_how_the_config_would_run_here():
    proc = cli("validate", "--plan", "configs/demo.yaml")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("configs/demo.yaml: OK (8 streams")
    assert any(line.startswith("engine: ") for line in lines)  # which one depends on the machine
    assert "plugins: samples.world.source" in lines
    assert "stream cam-1: live, decoder source, in a thread here, 8 s of packets for clips" in lines


@pytest.mark.parametrize("streams,code", [
    (["fake://ok?frames=20&live=0"], 0),
    (["fake://ok?frames=20&live=0", "broken.mp4"], 3),
    (["broken.mp4", "also-broken.mp4"], 4),
])
def test_run_exit_codes_say_how_the_streams_ended(tmp_path, streams, code):
    import yaml

    for name in streams:
        if "://" not in name:
            (tmp_path / name).write_bytes(b"not a video")  # exists (a missing file is a config error), cannot be read
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": f"s{i}", "url": url if "://" in url else str(tmp_path / url)} for i, url in enumerate(streams)],
        "detector": {"model": "fake", "engine": "fake"},
        "runtime": {"outbox_path": str(tmp_path / "outbox.db"), "duration_s": 30}}))
    proc = cli("run", str(config), "--quiet")
    assert proc.returncode == code, proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("  s")]
    assert len(failed) == sum("broken" in url for url in streams)
    assert all("cannot open" in line for line in failed)


def test_a_run_whose_detector_failed_every_batch_exits_5_and_says_so(tmp_path):
    """It exited 0 (the streams had ended as expected) with 0 detections and nothing saying why."""
    import yaml

    broken = tmp_path / "engine-broken"
    broken.touch()  # the fake engine fails every batch while this file exists
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({
        "plugins": ["pipeline.testing"], "streams": [{"id": "a", "url": "fake://a?frames=20&live=0"}],
        "detector": {"model": "fake", "engine": "fake"},
        "runtime": {"outbox_path": str(tmp_path / "outbox.db"), "duration_s": 30}}))
    proc = cli("run", str(config), "--quiet", env={**os.environ, "STREAMWEAVE_FAKE_ENGINE_FAILS_WHILE": str(broken)})
    assert proc.returncode == 5, proc.stderr
    assert re.search(r"The detector failed \d+ batches: nothing was detected in them", proc.stdout), proc.stdout


def test_a_config_error_exits_2_before_anything_starts(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("streams: [{id: a, url: x.mp4, lane: fast}]\ndetector: {model: m.onnx}\n")
    proc = cli("run", str(config), "--duration", "5")
    assert proc.returncode == 2 and "unknown lane 'fast'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("duration", ["0", "-5", "nan", "inf", "ten"])
def test_a_duration_that_is_no_length_of_time_is_refused_before_anything_starts(tmp_path, duration):
    config = tmp_path / "site.yaml"
    config.write_text("streams: [{id: a, url: 'fake://a?fps=5'}]\nplugins: [pipeline.testing]\n"
                      "detector: {model: fake, engine: fake}\n")
    proc = cli("run", str(config), f"--duration={duration}")
    assert proc.returncode == 2 and f"'{duration}' is no duration" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_refuses_a_timed_run_with_no_streams_as_run_does(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("streams: []\ndetector: {model: m.onnx}\nruntime: {duration_s: 10}\n")
    proc = cli("validate", str(config))
    assert proc.returncode == 2 and "no streams to run for 10 s" in proc.stderr and "Traceback" not in proc.stderr


def test_an_outbox_given_on_the_command_line_may_not_be_a_sinks_file(tmp_path):
    config = tmp_path / "site.yaml"
    out = tmp_path / "detections.jsonl"
    config.write_text("streams: [{id: a, url: 'fake://a?fps=5'}]\nplugins: [pipeline.testing]\n"
                      "detector: {model: fake, engine: fake}\n"
                      f"sinks: [{{type: jsonl, path: {out}}}, {{type: webhook, url: 'http://127.0.0.1:9/hook'}}]\n")
    proc = cli("run", str(config), "--outbox", str(out), "--duration", "1")
    assert proc.returncode == 2 and f"--outbox {out}: '{out}' (the outbox) is already written by sinks -> 0 -> path" \
        in proc.stderr, proc.stderr
    assert not out.exists() and "Traceback" not in proc.stderr


def test_an_outbox_given_to_a_shard_is_checked_without_the_other_shards_cameras(tmp_path):
    mine, other = (next(f"cam-{i}" for i in range(100) if shard_of(f"cam-{i}", 2) == shard) for shard in (0, 1))
    config = tmp_path / "site.yaml"
    config.write_text(f"streams: [{{id: {mine}, url: 'fake://a?fps=5'}}, {{id: {other}, url: 'fake://b?fps=5'}}]\n"
                      "plugins: [pipeline.testing]\ndetector: {model: fake, engine: fake}\n"
                      f"zones: [{{name: dock, streams: [{other}], polygon: [[0, 0], [9, 0], [9, 9]]}}]\n")
    proc = cli("run", str(config), "--shard", "0/2", "--outbox", str(tmp_path / "outbox.db"), "--duration", "0.5")
    assert proc.returncode == 0, proc.stderr  # what --gpus gives each of its instances
