"""The wheel ships the product and nothing of the demo world, the tests or the benchmarks."""
from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_the_built_wheel_holds_the_pipeline_package_only(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = tmp_path.glob("streamweave-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    version = wheel.name.split("-")[1]
    assert tops == {"pipeline", f"streamweave-{version}.dist-info"}, tops
    assert "pipeline/plugins.py" in names and "pipeline/config/resolve.py" in names
    assert "pipeline/service/static/index.html" in names and "pipeline/service/static/main.js" in names  # the console
    assert not any(name.startswith(("samples/", "tests/", "benchmarks/")) for name in names)
    assert not any(name.endswith(".onnx") for name in names)  # the demo detector stays in the checkout
