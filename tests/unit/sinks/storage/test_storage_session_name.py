"""The name a fleet instance's storage connection gives the server, by which a takeover finds it."""
from pipeline.sinks.storage.postgres import storage_session


def test_each_instance_has_its_own_short_ascii_session_name():
    long_a, long_b = "camera-fleet-statefulset-" + "x" * 40 + "-0", "camera-fleet-statefulset-" + "x" * 40 + "-1"
    names = ["a", "a2", long_a, long_b, "café", "cafe"]
    sessions = [storage_session(name) for name in names]
    assert len(set(sessions)) == len(names)  # no two instances share one, however long or alike their names
    for session in sessions:
        assert session.isascii() and session.isprintable() and len(session.encode()) <= 63  # kept whole by the server
    assert storage_session("a") == storage_session("a")
