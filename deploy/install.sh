#!/usr/bin/env bash
# Installs or upgrades streamweave as a systemd service from a wheel; running it again is safe.
#   sudo bash deploy/install.sh dist/streamweave-0.1.0-py3-none-any.whl [EXTRAS]    EXTRAS: e.g. gpu,postgres
# An existing /etc/streamweave/streamweave.yaml or .env is kept. Needs Python >= 3.11 with venv; PYTHON picks
# another interpreter than /usr/bin/python3, but not one under a home directory (ProtectHome= hides those).
set -euo pipefail
wheel=$(realpath "${1:?usage: install.sh WHEEL [EXTRAS]}")
extras=${2:+[$2]}
here=$(dirname "$(realpath "$0")")
venv=/opt/streamweave/venv

id -u streamweave >/dev/null 2>&1 ||
  useradd --system --user-group --home-dir /var/lib/streamweave --no-create-home --shell /usr/sbin/nologin streamweave
[[ -x $venv/bin/python ]] || "${PYTHON:-/usr/bin/python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade "$wheel$extras"
# pip keeps an installed version it is given again, saying nothing with -q: a wheel rebuilt from newer code under
# the same version number would not replace the old code. The wheel itself is put in place every time.
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
install -d -m 0755 /opt/streamweave/models
# The service writes API changes back to its config (a new file beside it, then a rename): the directory
# and the config are writable by its group; both may hold secrets: root and the service's group only.
install -d -m 0770 -g streamweave /etc/streamweave
[[ -e /etc/streamweave/streamweave.yaml ]] || install -m 0660 -g streamweave "$here/streamweave.yaml" /etc/streamweave/
[[ -e /etc/streamweave/streamweave.env ]] || install -m 0640 -g streamweave "$here/streamweave.env" /etc/streamweave/
install -m 0644 "$here/streamweave.service" /etc/systemd/system/streamweave.service
[[ -d /run/systemd/system ]] && systemctl daemon-reload  # not when systemd is not running (an image build)
if [[ -d /run/systemd/system ]] && systemctl is-active -q streamweave; then  # an upgrade: the old code runs on
  echo "installed; the service still runs the previous version until it restarts: systemctl restart streamweave"
else
  echo "installed; put the detector at /opt/streamweave/models/detector.onnx and edit"
  echo "/etc/streamweave/streamweave.yaml, then: systemctl enable --now streamweave && journalctl -u streamweave -f"
fi
