"""How `query` reads times and cuts them into buckets: ISO 8601 in a time zone, local days across DST."""
from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from pipeline.errors import ConfigError
from pipeline.sinks.storage.answers import Buckets, parse_bucket, parse_time, parse_zone

PARIS = ZoneInfo("Europe/Paris")


def ns(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def minute(text: str) -> int:
    return ns(text) // (60 * 10**9)


@pytest.mark.parametrize("text, minutes", [("15m", 15), ("1h", 60), ("6h", 360), ("1d", 1440), ("90m", 90)])
def test_buckets_are_minutes_hours_or_a_day(text, minutes):
    assert parse_bucket(text) == minutes


@pytest.mark.parametrize("text", ["7m", "5h", "2d", "h", "", "1w", "-1h"])
def test_a_bucket_that_does_not_divide_a_day_is_refused(text):
    with pytest.raises(ConfigError, match="divide a day"):
        parse_bucket(text)


def test_times_without_an_offset_are_local_to_the_time_zone():
    assert parse_time("2025-03-14", PARIS) == ns("2025-03-13T23:00:00+00:00")  # a date: its local midnight
    assert parse_time("2025-07-14T08:30", PARIS) == ns("2025-07-14T06:30:00+00:00")  # summer time
    assert parse_time("2025-07-14T08:30:00.250Z", PARIS) == ns("2025-07-14T08:30:00.250+00:00")  # an offset wins
    assert parse_time("today", PARIS, today=date(2025, 1, 2)) == ns("2025-01-01T23:00:00+00:00")
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_time("yesterday-ish", PARIS)


def test_an_unknown_time_zone_is_refused_by_name():
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        parse_zone("Mars/Olympus")


def label(buckets: Buckets, text: str) -> str:
    return buckets.label(buckets.start(minute(text)))


def test_buckets_follow_local_time_across_the_change_to_summer_time():
    hours, days, quarters = Buckets(60, PARIS), Buckets(1440, PARIS), Buckets(15, ZoneInfo("Asia/Kolkata"))
    assert label(hours, "2025-03-30T00:59:00+00:00") == "2025-03-30T01:00+01:00"
    assert label(hours, "2025-03-30T01:30:00+00:00") == "2025-03-30T03:00+02:00"  # 02:00 never happened
    assert label(days, "2025-03-29T23:30:00+00:00") == "2025-03-30"  # already the 30th in Paris
    assert label(days, "2025-03-30T21:59:00+00:00") == "2025-03-30"  # a 23-hour day
    assert label(quarters, "2025-03-30T10:14:00+00:00") == "2025-03-30T15:30+05:30"
    assert days.start(minute("2025-03-30T12:00:00+00:00")) == datetime(2025, 3, 29, 23, tzinfo=timezone.utc)
