"""`run --gpus 0,1` on the CPU machine (the GPUs named, so none is looked for; fake cameras and engine): two
children, each with its own GPU in its environment, name, port and shard of the cameras; a SIGKILLed child
is started again on its port; SIGTERM stops them all and the supervisor; a SIGKILLed supervisor takes its
children with it; a reload asked for while the children start is applied once they are up. It runs from
another directory than the checkout: the children run the supervisor's code all the same."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import yaml

from pipeline.runtime.placement import shard_of
from tests.conftest import REPO
from tests.support.http_server import free_port
from tests.support.service import config_data

CAMS = [f"cam-{i}" for i in range(6)]


def environ(pid: int) -> dict[str, str]:
    return psutil.Process(pid).environ()


def streams(port: int) -> set[str] | None:
    """The cameras the instance on `port` runs; None while nothing answers there."""
    try:
        listed = httpx.get(f"http://127.0.0.1:{port}/api/streams", timeout=5).json()
    except httpx.TransportError:
        return None
    return {s["id"] for s in listed if s["state"] == "running"}


def poll(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)  # other processes over HTTP: there is nothing to be notified by
    return False


def children(supervisor: subprocess.Popen) -> dict[str, int]:
    """The running children by instance name (their environment says it) -> pid."""
    found = {}
    for child in psutil.Process(supervisor.pid).children():
        try:
            found[environ(child.pid)["STREAMWEAVE_INSTANCE"]] = child.pid
        except (psutil.NoSuchProcess, KeyError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def supervise(tmp_path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """`run site.yaml --gpus 0,1` of the cameras CAMS, started from `tmp_path`, and its base port. The file starts
    with a comment that is not ASCII; env: what to add to the supervisor's environment."""
    path = tmp_path / "site.yaml"
    path.write_text("# caméras du quai\n" + yaml.safe_dump(config_data(
        tmp_path, [{"id": cam, "url": f"fake://{cam}?fps=10&live=1"} for cam in CAMS],
        runtime={"instance": "node", "outbox_path": str(tmp_path / "outbox.db")})), encoding="utf-8")
    port = free_port()
    while free_port() == port + 1:  # the next port must be free too; another draw otherwise
        port = free_port()
    supervisor = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), "run", str(path), "--gpus", "0,1",
                                   "--port", str(port), "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})})
    return supervisor, port


def test_two_children_with_their_own_gpu_port_and_shard_restarted_when_killed_and_stopped_together(tmp_path):
    supervisor, port = supervise(tmp_path)
    try:
        expected = [{cam for cam in CAMS if shard_of(cam, 2) == k} for k in range(2)]
        for k in range(2):
            assert poll(lambda: streams(port + k) == expected[k]), f"instance {k} on port {port + k}"
        first = children(supervisor)
        assert sorted(first) == ["node-gpu0", "node-gpu1"]
        for k in range(2):
            env = environ(first[f"node-gpu{k}"])
            assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == (str(k), "PCI_BUS_ID")
            argv = psutil.Process(first[f"node-gpu{k}"]).cmdline()
            assert argv[argv.index("--outbox") + 1] == str(tmp_path / f"outbox-gpu{k}.db")

        os.kill(first["node-gpu1"], signal.SIGKILL)
        assert poll(lambda: children(supervisor).get("node-gpu1") not in (None, first["node-gpu1"]))
        assert poll(lambda: streams(port + 1) == expected[1])  # the new one serves the same port and shard
        assert children(supervisor)["node-gpu0"] == first["node-gpu0"]  # the other was left alone
        last = children(supervisor)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        out, err = supervisor.communicate(timeout=90)
    assert supervisor.returncode == 0, err[-3000:]
    assert not any(alive(pid) for pid in last.values())
    assert "instance node-gpu1 (GPU 1) died with exit code -9; starting it again in" in err
    assert "SIGTERM received: stopping 2 instance(s)" in err
    for k in range(2):
        assert f"node-gpu{k} | " in err and f"node-gpu{k} | " in out  # logs, and each one's summary
        assert f"instance node-gpu{k} (GPU {k}) ended with exit code 0" in err


def test_a_config_in_utf8_is_supervised_where_the_locale_is_not_utf8(tmp_path):
    """Before, the supervisor read the file again in the locale's encoding: ASCII here, a UnicodeDecodeError."""
    ascii_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    supervisor, port = supervise(tmp_path, env=ascii_locale)
    try:
        for k in range(2):
            assert poll(lambda: supervisor.poll() is not None or bool(streams(port + k)))
            assert supervisor.poll() is None, f"the supervisor exited with {supervisor.returncode}"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        _, err = supervisor.communicate(timeout=90)
    assert supervisor.returncode == 0, err[-3000:]


def test_the_children_stop_when_the_supervisor_is_killed_and_free_their_ports(tmp_path):
    supervisor, port = supervise(tmp_path)
    try:
        for k in range(2):
            assert poll(lambda: streams(port + k) is not None), f"instance {k} on port {port + k}"
        orphans = children(supervisor)
    finally:
        supervisor.kill()  # as the OOM killer or a service manager's stop timeout does: nothing is passed on
        supervisor.communicate(timeout=30)
    try:
        assert poll(lambda: not any(alive(pid) for pid in orphans.values())), "children outlived their supervisor"
        assert streams(port) is None and streams(port + 1) is None
    finally:
        for pid in orphans.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_reload_sent_while_the_children_start_is_applied_once_they_are_up(tmp_path):
    supervisor, port = supervise(tmp_path)
    lines: list[str] = []

    def read() -> None:
        for line in supervisor.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert poll(lambda: sum(": GPU" in line and ", pid " in line for line in list(lines)) == 2), \
            "the supervisor did not start both children"
        supervisor.send_signal(signal.SIGHUP)  # `systemctl reload` right after a start: both are still loading
        for k in range(2):
            assert poll(lambda: streams(port + k) is not None), f"instance {k} on port {port + k}"
            assert poll(lambda: any(line.startswith(f"node-gpu{k} | ") and "reloaded" in line
                                    for line in list(lines))), f"instance {k} did not reload:\n{''.join(lines)[-3000:]}"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=90)  # its stdout (the two summaries) fits in the pipe
        reader.join(10)
    assert supervisor.returncode == 0
    assert "died with exit code" not in "".join(lines)
