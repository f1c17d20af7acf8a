"""A short soak (`pytest -m soak`, about 3 minutes): cameras with faults, and the process stays the same size.

Runs benchmarks/soak.py in its own process (synthetic cameras, one RTSP camera whose server is restarted,
a camera removed and added again) and checks its samples after warm-up.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.rtsp_server import gst_rtsp_available

pytestmark = [pytest.mark.soak, pytest.mark.fault]
REPO = Path(__file__).resolve().parents[2]
SYNTHETIC, WARM_UP_S = 4, 40


def test_a_short_soak_with_faults_loses_no_event_and_does_not_grow(tmp_path):
    rtsp = 1 if gst_rtsp_available()[0] else 0
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "soak.py"), "--out", str(tmp_path), "--minutes", "2",
                    "--synthetic", str(SYNTHETIC), "--rtsp", str(rtsp), "--restart-every-s", "20",
                    "--swap-every-s", "30", "--sample-every-s", "2", "--warm-up-s", str(WARM_UP_S)],
                   check=True, timeout=600, cwd=REPO)
    summary = json.loads((tmp_path / "soak.json").read_text())
    rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader((tmp_path / "soak.csv").open())]
    late = [r for r in rows if r["t_s"] >= WARM_UP_S]
    warm = late[0]

    events = summary["events"]
    assert events["published"] == events["seen_by_sinks"] == events["stored"] > 0
    assert summary["healthy_stalls"] == []
    assert rtsp == 0 or (summary["restarts"] >= 2 and summary["recovery_s"]["never"] == 0)
    # threads and files come and go with reconnects, removals and snapshots, but do not pile up: the second
    # half after warm-up (as many restarts and swaps as the first) never needs more than the first
    first, second = late[:len(late) // 2], late[len(late) // 2:]
    for key in ("threads", "fds"):
        assert max(r[key] for r in second) <= max(r[key] for r in first), key
    # the demo world's lighting backgrounds fill for minutes; nothing else may grow (16 MiB: allocator arenas,
    # the SQLite page cache)
    assert late[-1]["rss_mib"] <= warm["rss_mib"] + summary["world_bank_mib"] + 16, summary["rss_mib"]
