"""The allocator set-up of `run`: frames freed by the pipeline's threads go back to the system, where glibc's
defaults keep them mapped (the RSS growth of long runs)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runtime import memory

pytestmark = pytest.mark.skipif(memory._LIBC is None, reason="glibc is not this process's allocator")

REPO = Path(__file__).resolve().parents[3]
CAMERAS = """
import sys, threading
import numpy as np
from pipeline.runtime import memory

def rss_mib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024

if sys.argv[1] == "tuned":
    memory.tune_allocator()
big = np.ones(4 << 20, np.uint8)
del big  # a large block freed: glibc raises its mmap threshold above a frame's size
frames = [[] for _ in range(4)]

def camera(mine):
    for _ in range(40):
        mine.append(np.ones((360, 640, 3), np.uint8))

threads = [threading.Thread(target=camera, args=(mine,)) for mine in frames]
for t in threads:
    t.start()
for t in threads:
    t.join()
peak = rss_mib()
for mine in frames:
    del mine[:-1]  # each camera's newest frame is still in use
kept = rss_mib()
if sys.argv[2] == "release":
    memory.release_free_memory()
print(peak, kept, rss_mib())
"""


def frames_kept_mib(allocator: str, release: bool) -> tuple[float, float]:
    """(MiB resident with 4 cameras' 40 frames each, MiB still resident once all but each camera's newest are
    freed) in a fresh process."""
    out = subprocess.run([sys.executable, "-c", CAMERAS, allocator, "release" if release else "keep"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, check=True)
    peak, _, end = map(float, out.stdout.split())
    return peak, end


def test_with_glibc_defaults_freed_frames_stay_resident():
    peak, end = frames_kept_mib("default", release=False)
    assert peak - end < 30, (peak, end)  # of ~105 MiB of frames, ~100 were freed and stay mapped


def test_the_tuned_allocator_gives_freed_frames_back_at_once():
    peak, end = frames_kept_mib("tuned", release=False)
    assert peak - end > 85, (peak, end)


def test_releasing_free_memory_gives_them_back_with_glibc_defaults_too():
    peak, end = frames_kept_mib("default", release=True)
    assert peak - end > 85, (peak, end)


@pytest.mark.parametrize("environment, calls", [({}, [(memory.M_MMAP_THRESHOLD, memory.MMAP_THRESHOLD)]),
                                                 ({"MALLOC_MMAP_THRESHOLD_": "65536"}, [])])
def test_a_threshold_set_in_the_environment_wins(monkeypatch, environment, calls):
    made = []
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(memory, "_LIBC", type("Libc", (), {"mallopt": lambda _self, *a: made.append(a)})())
    assert memory.tune_allocator()
    assert made == calls
