"""The command line as a user meets it: clear errors, no tracebacks."""
import subprocess
import sys

import pytest

from tests.conftest import REPO


def cli(*args):
    return subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), *args], capture_output=True, text=True, cwd=REPO)


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
    config.write_text(f"streams: [{{id: a, url: x.mp4}}]\ndetector: {{model: {tmp_path}/nope.onnx}}\n")
    proc = cli("run", str(config))
    assert proc.returncode == 1
    assert f"model file '{tmp_path}/nope.onnx' does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_with_plan_says_how_the_config_would_run_here():
    proc = cli("validate", "--plan", "configs/demo.yaml")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("configs/demo.yaml: OK (8 streams")
    assert any(line.startswith("engine: ") for line in lines)  # which one depends on the machine
    assert "plugins: samples.world.source" in lines
    assert "stream cam-1: live, decoder source, in a thread here, 8 s of packets for clips" in lines
