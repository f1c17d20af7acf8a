"""PostgreSQL storage when the connection drops around a batch's COMMIT: the writer cannot tell whether the
batch was stored, retries it, and the batch's id makes it land exactly once either way."""
from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from pipeline.sinks.storage.postgres import PostgresBackend
from pipeline.sinks.storage.rows import MergedRows
from pipeline.types import Detections, Frame, FrameResult
from tests.integration.storage.replay import RUN, feed, postgres_store
from tests.support.commit_cut_proxy import CommitCutProxy
from tests.support.waiting import wait_until

FRAMES = 10
TRACKS = (1, 2)


def frames(wall_ns: int) -> list[FrameResult]:
    """FRAMES frames of stream cam-05, each with one detection matched to each of TRACKS."""
    out = []
    for seq in range(FRAMES):
        n = len(TRACKS)
        det = Detections(np.arange(n * 4, dtype=np.float32).reshape(n, 4) + seq, np.full(n, 0.75, np.float32),
                         np.zeros(n, np.int32), track_id=np.array(TRACKS, np.int64))
        pts = seq * 40_000_000
        out.append(FrameResult(Frame("cam-05", seq, pts, wall_ns + pts, None, 640, 480, index=seq), det,
                               run_id=RUN.run_id))
    return out


def _through(proxy: CommitCutProxy, dsn: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{proxy.port}/{dsn.rsplit('/', 1)[1]}"


@pytest.mark.fault
@pytest.mark.parametrize("committed", [True, False], ids=["cut-after-commit", "cut-before-commit"])
def test_a_batch_whose_commit_answer_is_lost_is_stored_exactly_once(postgres_server, postgres_dsn, committed):
    with CommitCutProxy(postgres_server.port) as proxy:
        sink = postgres_store(_through(proxy, postgres_dsn)).make(batch_size=1000, flush_interval_s=0.2)
        sink.open()
        proxy.arm(forward_commit=committed)
        feed(sink, frames(time.time_ns()))  # one batch: FRAMES * len(TRACKS) detections
        assert proxy.cut.wait(10)
        assert proxy.committed.is_set() == committed
        assert wait_until(lambda: sink.stats()["items_written"] == FRAMES, timeout=15)
        sink.close()

    stats = sink.stats()
    assert stats["retries"] >= 1 and stats["rows_lost"] == 0 and stats["rows_rejected"] == 0
    assert sink.backend.reconnects >= 1 and sink.backend.batches_found_stored == (1 if committed else 0)
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM detections").fetchone()[0] == FRAMES * len(TRACKS)
        assert conn.execute("SELECT count(*) FROM (SELECT DISTINCT * FROM detections) AS d").fetchone()[0] == \
            FRAMES * len(TRACKS)
        tracks = conn.execute("SELECT track_id, frames FROM tracks ORDER BY track_id").fetchall()
        assert tracks == [(t, FRAMES) for t in TRACKS]


def test_a_database_of_this_version_without_stored_batches_gets_it_and_one_with_it_is_not_locked(postgres_dsn):
    backend = PostgresBackend(postgres_dsn)
    backend.connect()
    backend.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE stored_batches")  # as a database the release before wrote it
    backend.connect()
    backend.close()
    with psycopg.connect(postgres_dsn) as other:
        assert other.execute("SELECT to_regclass('stored_batches_stored_at') IS NOT NULL").fetchone()[0]
        other.execute("LOCK TABLE stored_batches IN ACCESS EXCLUSIVE MODE")  # held until `other` ends
        opened = threading.Thread(target=backend.connect, daemon=True)
        opened.start()
        opened.join(10)
        assert not opened.is_alive(), "opening a database that has stored_batches waited for a lock on it"
    backend.close()


def test_batch_ids_older_than_a_day_are_pruned(postgres_dsn):
    backend = PostgresBackend(postgres_dsn)
    backend.connect()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO stored_batches (id, stored_at) VALUES ('old', now() - interval '25 hours'), "
                     "('recent', now() - interval '23 hours')")
    backend.write(MergedRows(batch="new"))
    backend.write(MergedRows(batch="new"))  # a retry of a stored batch: nothing written again
    backend.close()
    assert backend.batches_found_stored == 1
    with psycopg.connect(postgres_dsn) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT id FROM stored_batches")) == ["new", "recent"]
