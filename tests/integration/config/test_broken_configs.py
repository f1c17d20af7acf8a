"""A corpus of configs that must not start (broken_configs.yaml): `validate` and `run` both exit 2, before any
stream starts, with the key path of the problem in the message and no traceback. The commands run in this
process (pipeline.cli.main) to stay fast; a few also as the program a user runs."""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import onnxruntime.datasets
import pytest
import yaml

from pipeline import cli
from tests.conftest import REPO

pytestmark = pytest.mark.fault

CASES = yaml.safe_load((Path(__file__).parent / "broken_configs.yaml").read_text())
MODEL = REPO / "samples" / "models" / "world_detector.onnx"
BASE = {
    "streams": [{"id": "a", "url": "@clip@"}],
    "detector": {"model": "@model@"},
    "runtime": {"outbox_path": "@tmp@/outbox.db", "duration_s": 1},
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The folder @tmp@ names, with what the corpus refers to; @clip@ is `clip.mp4` in it."""
    folder = tmp_path_factory.mktemp("broken")
    (folder / "a-file").write_text("not a folder\n")
    (folder / "a-folder").mkdir()
    (folder / "garbage.onnx").write_bytes(np.random.default_rng(18).bytes(4096))
    (folder / "not-a-detector.onnx").write_bytes(Path(onnxruntime.datasets.get_example("mul_1.onnx")).read_bytes())
    with av.open(str(folder / "clip.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            image = np.full((48, 64, 3), 20 * i, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return folder


def config_text(case: dict, scratch: Path) -> str:
    text = case["text"] if "text" in case else yaml.safe_dump(merged(BASE, case["change"]), sort_keys=False)
    markers = {"@clip@": str(scratch / "clip.mp4"), "@model@": str(MODEL), "@tmp@": str(scratch)}
    for marker, value in markers.items():
        text = text.replace(marker, value)
    return text


def merged(base: dict, change: dict) -> dict:
    """`base` with `change` in it: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in change.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def main(capsys, monkeypatch):
    """pipeline.cli.main as a user runs it: (exit code, stderr). The log handlers and signal handlers it
    installs are put back afterwards."""
    monkeypatch.delenv("STREAMWEAVE_TEST_UNSET", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def call(*argv: str) -> tuple[int, str]:
        code = cli.main(list(argv))
        return code, capsys.readouterr().err

    yield call
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    for number, handler in signals.items():
        signal.signal(number, handler)


def names_key(message: str, key: str) -> bool:
    """True when a line of `message` is `FILE:LINE: <key>: ...`."""
    return re.search(rf":\d+: {re.escape(key)}: ", message) is not None


def test_the_corpus_is_large_and_each_case_is_named_once():
    assert len(CASES) >= 60
    assert len({case["id"] for case in CASES}) == len(CASES)


def test_the_base_config_validates_and_runs(scratch, main, tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(config_text({"change": {}}, scratch))
    assert main("validate", str(path)) == (0, "")
    code, err = main("run", str(path), "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_a_broken_config_exits_2_naming_its_key(case, scratch, main, tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(config_text(case, scratch))
    for command in ("validate", "run"):
        code, err = main(command, str(path))
        assert code == 2, f"{command}: {err}"
        assert names_key(err, case["key"]), f"{command}: expected '{case['key']}' in:\n{err}"
        assert "Traceback" not in err
    assert not (scratch / "outbox.db").exists()  # nothing started


@pytest.mark.parametrize("case_id", ["model-not-onnx", "duplicate-top-level-key", "mqtt-port-negative",
                                     "sqlite-path-is-a-folder"])
def test_the_program_exits_2_without_a_traceback(case_id, scratch, tmp_path):
    case = next(case for case in CASES if case["id"] == case_id)
    path = tmp_path / "site.yaml"
    path.write_text(config_text(case, scratch))
    for command in ("validate", "run"):
        proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), command, str(path)],
                              capture_output=True, text=True, cwd=REPO, timeout=60,
                              env={k: v for k, v in os.environ.items() if k != "STREAMWEAVE_TEST_UNSET"})
        assert proc.returncode == 2, proc.stderr
        assert names_key(proc.stderr, case["key"]) and "Traceback" not in proc.stderr


def test_a_port_in_use_exits_2_before_any_stream_starts(scratch, main, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        path = tmp_path / "site.yaml"
        path.write_text(config_text({"change": {"runtime": {"http": {"port": taken.getsockname()[1]}}}}, scratch))
        assert main("validate", str(path)) == (0, "")  # only a run can tell
        code, err = main("run", str(path), "--quiet")
    assert code == 2 and "cannot listen on 127.0.0.1" in err and "runtime.http.port" in err, err
