"""The same input run twice by the whole pipeline into one SQLite file and one PostgreSQL database: two
runs with their own rows, nothing summed across them, and every event of both stored and delivered,
although the second run's events have the same streams, tracks, rules and stream times as the first's."""
from __future__ import annotations

import json
from collections import Counter

import pytest

import pipeline.testing  # noqa: F401 - fake:// and the fake engine
from pipeline.config.models import PipelineConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.sinks.storage import query
from pipeline.sinks.storage.query import ALL_RUNS
from tests.support.http_server import RecordingHttpServer
from tests.support.postgres import postgres_dsn, postgres_server  # noqa: F401 - fixtures

FRAMES = 240  # the square crosses the picture four times: zone visits, line crossings, marks


@pytest.fixture
def webhook():
    server = RecordingHttpServer().start()
    yield server
    server.stop()


def same_input_config(tmp_path, dsn: str, hook: str) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": cam, "url": f"fake://{cam}?fps=25&frames={FRAMES}&live=0"} for cam in ("a", "b")],
        "detector": {"model": "fake", "engine": "fake"},
        "zones": [{"name": "left", "polygon": [[0, 0], [20, 0], [20, 48], [0, 48]]}],
        "lines": [{"name": "middle", "start": [32, 0], "end": [32, 48]}],
        "alerts": [{"name": "in-left", "when": "enter", "zone": "left"}],
        "stages": [{"python": "pipeline.testing:MarkEveryNth", "options": {"every": 25}}],
        "sinks": [{"type": "sqlite", "path": str(tmp_path / "site.db")}, {"type": "postgres", "dsn": dsn},
                  {"type": "webhook", "url": hook},
                  {"type": "jsonl", "what": "events", "path": str(tmp_path / "events.jsonl")}],
        "runtime": {"outbox_path": str(tmp_path / "outbox.db")},
    })


def test_a_second_run_of_the_same_input_is_a_second_run_and_all_its_events_arrive(tmp_path, postgres_dsn, webhook):
    config = same_input_config(tmp_path, postgres_dsn, webhook.url("/events"))
    snaps = [PipelineRunner(config).run() for _ in range(2)]
    first, second = (snap.extra["run_id"] for snap in snaps)
    assert first < second  # run ids sort by start time
    per_run = snaps[0].events
    assert per_run > 20 and snaps[1].events == per_run and not any(s.sink_failures for s in snaps)

    for target in (tmp_path / "site.db", postgres_dsn):
        assert [(r["run_id"], r["ended_ns"] is not None) for r in query.runs(target)] == [(second, True), (first, True)]
        counts = query.counts_by_stream_and_class(target, run=first)
        assert counts == query.counts_by_stream_and_class(target, run=second)
        assert counts == query.counts_by_stream_and_class(target)  # the latest run
        assert query.counts_by_stream_and_class(target, run=ALL_RUNS) == {
            cam: {name: 2 * n for name, n in names.items()} for cam, names in counts.items()}
        tracks = [query.tracks(target, "a", run=run) for run in (first, second)]
        assert [{k: v for k, v in t.items() if k != "run_id"} for t in tracks[0]] == [
            {k: v for k, v in t.items() if k != "run_id"} for t in tracks[1]]  # the same tracks, counted apart
        # every detection is matched to its track but each track's first, which min_hits=2 leaves tentative
        assert tracks[0] and sum(t["frames"] for t in tracks[0]) == counts["a"]["person"] - len(tracks[0])
        stored = query.events(target, run=ALL_RUNS)
        by_run = Counter(e.run_id for e in stored)
        assert by_run == {first: per_run, second: per_run} and len({e.event_id for e in stored}) == 2 * per_run
        assert Counter((e.kind, e.ts_ns) for e in stored if e.run_id == first) == Counter(
            (e.kind, e.ts_ns) for e in stored if e.run_id == second)  # same content, new ids

    ids = {e.event_id for e in query.events(tmp_path / "site.db", run=ALL_RUNS)}
    assert {e.event_id for e in query.events(postgres_dsn, run=ALL_RUNS)} == ids
    delivered = {json.loads(r.body)["event_id"] for r in webhook.wait_for(len(ids), timeout=30)}
    assert delivered == ids
    logged = [json.loads(line)["event_id"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(logged) == len(set(logged)) and set(logged) == ids
