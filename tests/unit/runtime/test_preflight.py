"""Preflight looks at the files as the pipeline will open them (a stream's file as the reader opens its url), and
at the optional libraries the config needs."""
import shutil
import sys

import yaml

from pipeline.config.fields import key_path
from pipeline.config.loader import parse_config
from pipeline.config.models import StreamConfig
from pipeline.runtime.preflight import check, stream_problem
from pipeline.sources.demux import Demuxer
from tests.conftest import REPO


def test_a_stream_url_in_the_home_folder_is_the_file_there_and_is_kept_as_written(tmp_path, monkeypatch, shared):
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(shared("media/dog-848x464.mp4"), tmp_path / "lobby.mp4")
    stream = StreamConfig(id="lobby", url="~/lobby.mp4")  # FFmpeg itself would open './~/lobby.mp4'
    assert stream.url == "~/lobby.mp4" and stream_problem(stream) is None  # another host: its own home
    demuxer = Demuxer(stream.url, "stream 'lobby'")
    try:
        assert demuxer.open().width == 848
    finally:
        demuxer.close()


def test_a_stream_file_that_exists_is_fine_and_a_missing_one_is_named(tmp_path):
    (tmp_path / "gate.mp4").write_bytes(b"\x00")
    assert stream_problem(StreamConfig(id="gate", url=str(tmp_path / "gate.mp4"))) is None
    why = stream_problem(StreamConfig(id="yard", url=str(tmp_path / "yard.mp4")))
    assert why.startswith(f"no such file '{tmp_path / 'yard.mp4'}'")


def test_postgresql_without_psycopg_is_refused_before_the_run_naming_the_extra(tmp_path, monkeypatch):
    """A postgres sink or a fleet's database cannot be opened without the `postgres` extra: `validate` said OK,
    and `run` failed once started (exit 1, which systemd restarts every few seconds)."""
    def site(**more):
        return parse_config(yaml.safe_dump({"detector": {"model": str(REPO / "samples/models/world_detector.onnx")},
                                            **more}), "site.yaml")

    storage = site(streams=[{"id": "gate", "url": "rtsp://cam/live"}], runtime={"outbox_path": str(tmp_path / "o.db")},
                   sinks=[{"type": "jsonl", "path": str(tmp_path / "d.jsonl")},
                          {"type": "postgres", "dsn": "postgresql://db/x"}])
    fleet = site(streams=[], runtime={"cluster": {"dsn": "postgresql://db/fleet", "capacity": 8}})
    assert check(storage) == [] and check(fleet) == []
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as where it is not installed: importing it fails
    problems = {key_path(problem.loc): problem.message for problem in check(storage) + check(fleet)}
    assert list(problems) == ["sinks -> 1 -> type", "runtime -> cluster -> dsn"]
    assert all("pip install 'streamweave[postgres]'" in message for message in problems.values())


def test_a_postgresql_dsn_libpq_cannot_read_is_refused_before_the_run_without_its_password(tmp_path):
    """Found only when the sink or the fleet's store connected: exit 1 and a restart loop for a typo, or (for the
    fleet) a traceback."""
    config = parse_config(yaml.safe_dump({
        "streams": [], "detector": {"model": str(REPO / "samples/models/world_detector.onnx")},
        "sinks": [{"type": "postgres", "dsn": "sw:s3cret@db/analytics"}],  # the scheme left out
        "runtime": {"outbox_path": str(tmp_path / "o.db"), "cluster": {"dsn": "host=db bogus=1", "capacity": 8}},
    }), "site.yaml")
    problems = {key_path(problem.loc): problem.message for problem in check(config)}
    assert list(problems) == ["sinks -> 0 -> dsn", "runtime -> cluster -> dsn"]
    assert problems["runtime -> cluster -> dsn"].startswith("not a DSN libpq can read (invalid connection option")
    assert "s3cret" not in problems["sinks -> 0 -> dsn"]
