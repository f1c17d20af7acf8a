"""The media sink forgets a stream when it ends: cameras come and go for as long as the service runs."""
from __future__ import annotations

from pipeline.config.outputs import MediaOutput
from pipeline.sinks.media import MediaSink
from tests.support.tracks import tracked_frame


def test_streams_warned_about_missing_clips_are_forgotten_when_they_end(tmp_path, caplog):
    sink = MediaSink(MediaOutput(type="media", directory=tmp_path), clips=None)
    for n in range(1000):
        result = tracked_frame(0, [], stream_id=f"cam-{n}")
        result.events.append(result.moment.event("door", "alert", 1, 0, {"snapshot": False, "clip": True}))
        sink.on_frame(result)
        sink.on_stream_end(f"cam-{n}")
    assert sink._unrecorded == set()
    assert sink.stats()["clips_missed"] == 1000
    assert sum("no clip recorder" in r.getMessage() for r in caplog.records) == 1000  # once per stream's run
