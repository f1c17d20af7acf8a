#!/usr/bin/env bash
# Sets up .venv with the pipeline and its CPU dependencies.
#   bash scripts/setup.sh          the product (enough for the demo)
#   bash scripts/setup.sh --test   also the test tools (pyproject's `test` extra: pytest, psycopg, jsonschema,
#                                  ultralytics on CPU torch, ...) and the real servers the tests start
#                                  (GStreamer RTSP server, Mosquitto, PostgreSQL), systemd-analyze and
#                                  headless Chromium with its WebDriver (the console's browser tests)
#                                  from Debian packages
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[[ "${1:-}" == "--test" ]] && with_tests=1

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: needs python3 >= 3.11 (found: $(python3 --version 2>&1)); use Debian 12, Ubuntu 24.04 or newer" >&2
  exit 1
fi

sudo_cmd=()
[[ "$(id -u)" != 0 ]] && sudo_cmd=(sudo)

apt_pkgs=()
python3 -c "import venv, ensurepip" 2>/dev/null || apt_pkgs+=(python3-venv)
apt_pkgs+=(mosquitto)  # the demo's local MQTT broker
if (( with_tests )); then
  apt_pkgs+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
             gstreamer1.0-plugins-good gstreamer1.0-plugins-bad postgresql
             systemd  # systemd-analyze checks deploy/streamweave.service
             chromium chromium-driver)  # the web console's tests drive a real browser (Selenium)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "setup: installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts these services on install; the demo and the tests run their own instances.
if command -v systemctl >/dev/null && systemctl is-active -q mosquitto 2>/dev/null; then
  "${sudo_cmd[@]}" systemctl stop mosquitto || true
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if (( with_tests )); then
  # ultralytics needs torch: the CPU build is a fraction of the default CUDA one (a venv with torch keeps its own)
  .venv/bin/python -c "import torch" 2>/dev/null ||
    .venv/bin/python -m pip install -q torch torchvision --index-url https://download.pytorch.org/whl/cpu
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "setup: ready (.venv/bin/python)"
