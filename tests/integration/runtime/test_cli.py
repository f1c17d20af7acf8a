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
