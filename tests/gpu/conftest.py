"""GPU tests: skipped cleanly without a CUDA device; shared clips and models found beside or inside the checkout.

Helpers the tests share (finding clips and models, decoding with either back-end) are in helpers.py.
"""
from __future__ import annotations

import os

import pytest


def _cuda_reason() -> str | None:
    try:
        import cupy  # noqa: PLC0415

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except ImportError:
        return "cupy is not installed"
    except Exception as exc:  # noqa: BLE001 - cupy raises CUDA runtime errors without a driver
        return f"no CUDA device ({type(exc).__name__})"
    return None


def pytest_collection_modifyitems(config, items):
    reason = None
    checked = False
    for item in items:
        if "tests/gpu/" not in str(item.fspath).replace(os.sep, "/"):
            continue
        item.add_marker(pytest.mark.gpu)
        if not checked:
            reason, checked = _cuda_reason(), True
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))


@pytest.fixture
def report():
    """Append a line of measured numbers to $GPU_REPORT (a JSON-lines file) when it is set."""
    import json  # noqa: PLC0415

    def write(name: str, **numbers):
        path = os.environ.get("GPU_REPORT")
        print(f"[report] {name}: {numbers}")
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps({"test": name, **numbers}) + "\n")

    return write
