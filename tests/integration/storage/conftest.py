"""Fixtures for the storage tests: MOT17-05 replayed as tracked detections, and each storage
back-end (a SQLite file, a throw-away PostgreSQL server) behind one factory."""
from __future__ import annotations

import time

import pytest

from pipeline.types import FrameResult
from tests.integration.storage.replay import (
    RUN,
    Store,
    mot_results,
    postgres_store,
    sqlite_store,
)
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures


@pytest.fixture
def mot17_05(shared) -> list[FrameResult]:
    """MOT17-05 (837 frames, 14 fps, ~6900 boxes, 125 tracks) as stream 'cam-05', captured now, in run RUN."""
    return mot_results(shared("data/mot17/MOT17-05/gt/gt.txt"), "cam-05", 14.0, time.time_ns(), RUN.run_id)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> Store:
    if request.param == "sqlite":
        return sqlite_store(tmp_path / "detections.db")
    return postgres_store(request.getfixturevalue("postgres_dsn"))
