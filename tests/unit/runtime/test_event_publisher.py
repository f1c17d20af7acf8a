"""EventPublisher: the stages' events reach the outbox whatever a live view (a listener) does."""
from __future__ import annotations

from pipeline.backoff import Backoff
from pipeline.runtime.events import EventPublisher
from pipeline.sinks.outbox import Outbox
from tests.unit.sinks.outputs.test_outbox import RecordingOutput, make_events


def test_a_listener_that_raises_loses_no_event_and_the_other_listeners_still_see_them(tmp_path):
    seen: list = []

    def broken(events) -> None:
        raise KeyError("a console client went away")

    out = RecordingOutput()
    publisher = EventPublisher(Outbox(tmp_path / "outbox.db", [out], backoff=Backoff(0.01, 0.05)))
    publisher.add_listener(broken)
    publisher.add_listener(seen.extend)
    publisher.start()
    events = make_events(5)
    publisher.publish(events[:2])
    publisher.publish(events[2:])
    publisher.close()
    assert out.delivered == events and seen == events
    assert publisher.stats()["published"] == 5 and publisher.stats()["stored"] == 5
