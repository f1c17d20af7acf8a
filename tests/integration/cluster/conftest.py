"""The CPU tests' fleet: twelve fake cameras (10 fps) and the fake engine, each instance storing detections and
events (a MarkEveryNth stage marks every fifth frame) in the same PostgreSQL (tests/support/fleet.py)."""
from __future__ import annotations

import pytest

from tests.support.fleet import Fleet
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures

CAMERAS = [f"cam-{i:02d}" for i in range(12)]
MARK_EVERY = 5


@pytest.fixture
def fleet(postgres_dsn, tmp_path):
    base = {"plugins": ["pipeline.testing"], "detector": {"model": "fake", "engine": "fake"},
            "stages": [{"python": "pipeline.testing:MarkEveryNth", "options": {"every": MARK_EVERY}}],
            "sinks": [{"type": "postgres", "dsn": postgres_dsn, "flush_interval_s": 0.2}]}
    fleet = Fleet(postgres_dsn, tmp_path, [{"id": cam, "url": f"fake://{cam}?fps=10&live=1"} for cam in CAMERAS], base)
    yield fleet
    fleet.close()
