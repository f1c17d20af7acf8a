"""Preflight looks at the files as the pipeline will open them: a stream's file as the reader opens its url."""
import shutil

from pipeline.config.models import StreamConfig
from pipeline.runtime.preflight import stream_problem
from pipeline.sources.demux import Demuxer


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
