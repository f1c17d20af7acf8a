"""`run` without a terminal: per-stream progress lines in the log (text or JSON), a service's heartbeat, and
with `runtime.log_format: json` nothing on stderr but JSON objects, decode processes and uvicorn included."""
import json
import signal
import subprocess
import sys
import threading

import yaml

from tests.conftest import REPO

LIVE = {"a": "fake://a?fps=30", "b": "fake://b?fps=30"}


def write_config(tmp_path, streams: dict[str, str], **runtime) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": sid, "url": url} for sid, url in streams.items()],
        "detector": {"model": "fake", "engine": "fake"},
        "runtime": {"outbox_path": str(tmp_path / "outbox.db"), "log_interval_s": 0.2, **runtime}}))
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "run", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def test_a_json_log_is_json_on_every_line_with_progress_per_stream_and_a_summary(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")  # exists (a missing file is a config error), cannot be read
    streams = {**LIVE, "gone": str(tmp_path / "broken.mp4")}
    proc = run(write_config(tmp_path, streams, log_format="json", decode_processes=1), "--duration", "3")
    assert proc.returncode == 3, proc.stderr  # one stream failed
    lines = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["process"] == "decode-proc:0" for line in lines)  # the decode process logs alike

    progress = [line for line in lines if line["logger"] == "pipeline.progress" and "stream" in line]
    for sid in streams:
        frames = [line["frames"] for line in progress if line["stream"] == sid]
        assert len(frames) >= 2 and frames == sorted(frames), (sid, frames)
        if sid in LIVE:
            assert frames[-1] > frames[0]
    assert [line["state"] for line in progress if line["stream"] == "gone"][-1] == "failed"
    totals = [line for line in lines if line["logger"] == "pipeline.progress" and "batches" in line
              and line["message"] != "summary"]
    assert totals and all(line["engine"] == "fake" and "outbox_backlog" in line for line in totals)

    [summary] = [line for line in lines if line["message"] == "summary"]
    assert summary["exit_code"] == 3 and summary["streams"]["a"]["state"] == "stopped"
    assert summary["failed"].keys() == {"gone"} and "cannot open" in summary["failed"]["gone"]
    assert proc.stdout.startswith("Ran ")  # the summary table stays on stdout


def test_without_a_terminal_a_text_log_has_a_progress_line_per_stream(tmp_path):
    proc = run(write_config(tmp_path, LIVE), "--duration", "2")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stderr  # no redrawn table
    for sid in LIVE:
        assert f" INFO pipeline.progress: {sid} running: " in proc.stderr
    assert " streams, engine fake: " in proc.stderr


def test_quiet_logs_no_progress(tmp_path):
    proc = run(write_config(tmp_path, LIVE), "--duration", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "pipeline.progress" not in proc.stderr and proc.stdout.startswith("Ran ")


def test_a_service_logs_progress_as_its_heartbeat_until_stopped(tmp_path):
    config = write_config(tmp_path, {"cam": "fake://cam?fps=30"}, log_format="json", http={"port": 0})
    proc = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "run", config], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, proc.kill)  # only if the heartbeat never comes
    watchdog.start()
    lines = []
    try:
        for raw in proc.stderr:
            lines.append(json.loads(raw))
            if lines[-1].get("stream") == "cam" and lines[-1]["frames"] > 0:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
    assert proc.returncode == 0, err
    lines += [json.loads(line) for line in err.splitlines()]
    assert any(line["logger"] == "pipeline.service.server" for line in lines)  # "HTTP on ...", as JSON
    assert any(line["logger"] == "pipeline.progress" and line.get("stream") == "cam" for line in lines)
    assert [line["message"] for line in lines].count("summary") == 1 and "on 1 streams" in out
