"""The README's first command, `python -m samples.demo`, on a short config: it runs the cameras with its own
webhook receiver and MQTT broker, then prints the summary, what was delivered and the accuracy report."""
from __future__ import annotations

import subprocess
import sys

import yaml

from samples.demo import main
from tests.conftest import REPO
from tests.support.postgres import free_port


def test_the_demo_command_runs_its_cameras_and_prints_what_was_delivered_and_how_accurate(tmp_path):
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["streams"] = [{**stream, "url": stream["url"] + "&frames=40&realtime=0"} for stream in data["streams"][:3]]
    names = {stream["id"] for stream in data["streams"]}
    for place in data["zones"] + data["lines"]:
        place["streams"] = [cam for cam in place["streams"] if cam in names]
    data["detector"]["model"] = str(REPO / data["detector"]["model"])
    webhook, broker = free_port(), free_port()
    data["sinks"] = [{"type": "sqlite", "path": str(tmp_path / "detections.db")},
                     {"type": "webhook", "url": f"http://127.0.0.1:{webhook}/events", "timeout_s": 2},
                     {"type": "mqtt", "host": "127.0.0.1", "port": broker, "topic_prefix": "demo"}]
    data["runtime"] = {"outbox_path": str(tmp_path / "outbox.db")}
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))

    done = subprocess.run([sys.executable, "-m", "samples.demo", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ran " in done.stdout and "on 3 streams" in done.stdout
    assert "webhook received" in done.stdout and "Accuracy against the synthetic world's ground truth:" in done.stdout


def test_the_demo_runs_a_config_and_prints_its_summary_and_report(tmp_path, capsys):
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump({
        "plugins": ["samples.world.source"],
        "streams": [{"id": "cam-1", "url": "synthetic://plaza?seed=1001&fps=10&size=640x360&frames=20&realtime=0"}],
        "detector": {"model": str(REPO / "samples/models/world_detector.onnx")},
        "sinks": [{"type": "sqlite", "path": str(tmp_path / "detections.db")}],
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
    }))
    assert main([str(config)]) == 0
    out = capsys.readouterr().out
    assert "20 frames" in out and "cam-1   finished" in out  # the summary: every frame of the camera detected
    written = f"Written:\n  {tmp_path / 'detections.db'} (sqlite: detections)\nAsk the stored results"
    assert written in out  # the files of this config's sinks, not of configs/demo.yaml
    assert f"python run_pipeline.py query {config} [lines|zones|events|runs]" in out  # what to run next: this config
