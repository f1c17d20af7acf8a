"""The times GET /api/events takes (`since`, `until`): ISO 8601 or Unix seconds, to the nanosecond."""
from __future__ import annotations

import time

import pytest
from fastapi import HTTPException

from pipeline.service.config_api import _time_ns


@pytest.fixture
def tokyo(monkeypatch):
    """The server's own time zone is not UTC."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_time_without_an_offset_is_utc_as_every_time_the_api_gives_not_the_servers_zone(tokyo):
    utc = _time_ns("since", "2025-03-14T08:00:00+00:00")
    assert _time_ns("since", "2025-03-14T08:00:00") == utc == 1_741_939_200 * 10**9
    assert _time_ns("since", "2025-03-14T17:00:00+09:00") == utc
    assert _time_ns("since", "2025-03-14T08:00:00.000123") == utc + 123_000


def test_unix_seconds_are_read_to_the_nanosecond():
    assert _time_ns("until", "1741939200.123456789") == 1_741_939_200_123_456_789
    assert _time_ns("until", "-1.5") == -1_500_000_000


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e10", "yesterday", "sNaN"])
def test_times_that_are_none_or_out_of_range_are_refused_naming_the_key(value):
    with pytest.raises(HTTPException) as refused:
        _time_ns("since", value)
    assert refused.value.status_code == 400 and refused.value.detail.startswith(f"since: '{value}'")
