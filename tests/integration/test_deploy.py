"""The systemd deployment: the unit is valid, and the service it runs works from an installed wheel."""
from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import REPO
from tests.support.http_server import free_port
from tests.support.service import ServiceProcess

UNIT = REPO / "deploy" / "streamweave.service"
VENV_SCRIPT = "/opt/streamweave/venv/bin/streamweave"
CONFIG = "/etc/streamweave/streamweave.yaml"
FIND_VERSIONS = """
import importlib.metadata, json, sys
def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
print(json.dumps({name: version(name) for name in sys.argv[1:]}))
"""


def unit_service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return dict(parser["Service"])


def exec_start() -> list[str]:
    """The unit's command line, checked to run the venv's console script on the config under /etc."""
    argv = unit_service_section()["ExecStart"].split()
    assert argv[0] == VENV_SCRIPT and argv[-1] == CONFIG, argv
    return argv


def test_systemd_accepts_the_unit_without_a_warning(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: `bash scripts/setup.sh --test` installs it (Debian package systemd)")
    # `verify` also checks that ExecStart's program exists and is executable, and /opt/streamweave is not
    # installed here: the copy runs this environment's own console script instead, all else unchanged.
    here = Path(sys.executable).with_name("streamweave")
    assert os.access(here, os.X_OK), f"{here}: the console script of this environment's install is missing"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(VENV_SCRIPT, str(here)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_a_config_error_is_the_exit_status_the_unit_does_not_restart_on(tmp_path):
    service = unit_service_section()
    assert service["Restart"] == "on-failure"
    bad = tmp_path / "site.yaml"
    bad.write_text("streams: []\ndetector: {model: m.onnx}\nruntime: {http: {port: 99999}}\n")
    proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), *exec_start()[1:-1], str(bad)],
                          check=False, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == int(service["RestartPreventExitStatus"]), proc.stderr
    assert "runtime -> http -> port" in proc.stderr


@pytest.mark.slow
def test_the_service_runs_from_a_wheel_installed_in_a_fresh_virtual_environment(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = dist.glob("streamweave-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    # The dependencies come from this environment instead of the network: a .pth line puts its site-packages
    # after the fresh one's. A plain path line runs none of the .pth files there, so this environment's
    # editable install of the checkout stays out, and `pipeline` can only come from the wheel.
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (fresh_site / "dependencies-of-the-tests.pth").write_text("\n".join(sorted(ours)) + "\n")
    work = tmp_path / "work"  # the working directory: neither the checkout nor anything on PYTHONPATH
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}

    def in_venv(*args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(args, check=check, capture_output=True, text=True, cwd=work, env=env, timeout=120)

    imported = in_venv(str(python), "-c", "import pipeline; print(pipeline.__file__)", check=True).stdout.strip()
    assert Path(imported) == fresh_site / "pipeline" / "__init__.py"

    requires = [Requirement(line.split(":", 1)[1].strip()) for line in _metadata(wheel).splitlines()
                if line.startswith("Requires-Dist:")]
    required = [req for req in requires if req.marker is None or req.marker.evaluate({"extra": ""})]
    assert {req.name for req in required} >= {"numpy", "pydantic", "fastapi", "uvicorn"}
    found = json.loads(in_venv(str(python), "-c", FIND_VERSIONS, *[req.name for req in required], check=True).stdout)
    unmet = [f"{req} (found {found[req.name]})" for req in required
             if found[req.name] is None or found[req.name] not in req.specifier]
    assert not unmet, unmet

    script = venv / "bin" / "streamweave"
    usage = in_venv(str(script), "--help")
    assert usage.returncode == 0 and usage.stdout.startswith("usage: streamweave "), usage.stdout + usage.stderr
    shipped = work / "deploy.yaml"  # the shipped config, with the model and the state folder of this machine
    shipped.write_text((REPO / "deploy" / "streamweave.yaml").read_text()
                       .replace("/opt/streamweave/models/detector.onnx", str(REPO / "samples/models/world_detector.onnx"))
                       .replace("/var/lib/streamweave", str(work / "state")))
    example = in_venv(str(script), "validate", str(shipped))
    assert example.returncode == 0, example.stdout + example.stderr

    port = free_port()
    config = work / "streamweave.yaml"
    config.write_text(yaml.safe_dump({
        "plugins": ["pipeline.testing"], "streams": [], "detector": {"model": "fake", "engine": "fake"},
        "runtime": {"http": {"port": port}, "outbox_path": str(work / "outbox.db")}}))
    unit = unit_service_section()
    with ServiceProcess([str(script), *exec_start()[1:-1], str(config)], port, cwd=work, env=env) as service:
        assert service.poll(lambda: service.status("/healthz") == 200 and service.status("/readyz") == 200, 60)
        assert service.client.get("/openapi.json").json()["info"]["version"] == wheel.name.split("-")[1]
        assert service.client.post("/api/streams", json={"id": "cam", "url": "fake://cam?fps=40"}).status_code == 201
        assert service.poll(lambda: service.client.get("/api/streams/cam").json()["counters"]["staged"] >= 10, 60)
        service.stop(signal.Signals[unit["KillSignal"]], timeout=int(unit["TimeoutStopSec"]))
    assert service.returncode == 0, service.err
    assert "SIGTERM received" in service.err and "on 1 streams" in service.out


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()


def _stand_in_wheel(where: Path, marker: str) -> Path:
    """A wheel named streamweave 0.1.0 whose module `install_marker` holds `marker`: what install.sh is given."""
    (where / "install_marker").mkdir(parents=True)
    (where / "install_marker" / "__init__.py").write_text(f"MARKER = {marker!r}\n")
    (where / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\n'
                                          'build-backend = "setuptools.build_meta"\n'
                                          '[project]\nname = "streamweave"\nversion = "0.1.0"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(where / "dist"), str(where)], check=True, capture_output=True, timeout=300)
    (wheel,) = (where / "dist").glob("streamweave-0.1.0-*.whl")
    return wheel


def _own_mounts() -> bool:
    """Whether this process may make a mount namespace of its own (root, and a container that allows it)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _own_mounts(), reason="runs install.sh as root in a mount namespace of its own (unshare)")
def test_install_sh_run_again_with_a_rebuilt_wheel_of_the_same_version_installs_the_new_code(tmp_path):
    """The README upgrades by running install.sh again with a wheel built from newer code, whose version is the
    same until a release: pip kept the old code, saying nothing. /etc, /opt and /run are the namespace's own
    (an overlay and empty folders), so the machine's users, services and files stay as they are."""
    old, new = _stand_in_wheel(tmp_path / "old", "old"), _stand_in_wheel(tmp_path / "new", "new")
    (tmp_path / "upper").mkdir()
    (tmp_path / "work").mkdir()
    venv_python = "/opt/streamweave/venv/bin/python"
    script = f"""set -e
        mount -t overlay overlay -o lowerdir=/etc,upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'} /etc
        mount -t tmpfs none /opt && mount -t tmpfs none /run
        bash {REPO / 'deploy' / 'install.sh'} {old} >/dev/null
        {venv_python} -c 'import install_marker; print(install_marker.MARKER)'
        bash {REPO / 'deploy' / 'install.sh'} {new} >/dev/null
        {venv_python} -c 'import install_marker; print(install_marker.MARKER)'
        """
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # nothing from the network: the stand-in has no dependencies
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script], check=False,
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["old", "new"]
