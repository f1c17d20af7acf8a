import threading

import pytest

from pipeline.files import write_atomic


def test_writers_of_one_path_at_once_leave_one_whole_file_and_no_partial_one(tmp_path):
    target = tmp_path / "cache" / "model.engine"
    payloads = [bytes([i]) * 4_000_000 for i in range(4)]
    start = threading.Barrier(len(payloads))
    failed = []

    def write(data: bytes) -> None:
        start.wait()
        try:
            for _ in range(5):
                write_atomic(target, data)
        except OSError as exc:  # another writer took this one's partial file away
            failed.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert target.read_bytes() in payloads
    assert [p.name for p in target.parent.iterdir()] == ["model.engine"]


def test_a_write_that_fails_raises_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "snapshot.jpg"
    target.mkdir()  # a folder holds the name: the rename fails
    with pytest.raises(OSError):
        write_atomic(target, b"jpeg")
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.jpg"]
