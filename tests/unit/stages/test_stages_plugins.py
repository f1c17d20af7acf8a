"""`stages:` plugins as a stream runs them: the events they give, what each stream's instance is made with, and a
running stream's stages changed while a plugin misbehaves."""
from __future__ import annotations

import queue

import pytest

from pipeline import plugins
from pipeline.config.models import PipelineConfig, StageConfig
from pipeline.errors import ConfigError
from pipeline.stages import build_stages, restage
from pipeline.stages.python import PythonStage
from tests.support.tracks import CLASS_NAMES, moment, tracked_frame


class Yielding:
    """A plugin written as a generator: one mark per frame."""

    def __init__(self, stream_id: str):
        self.stream_id = stream_id

    def __call__(self, result):
        yield result.moment.event("mark", "mark", -1, -1, {"seq": result.frame.seq})


class Remembering:
    """Appends every frame's seq to the list it was given as an option, and (given one) to a queue made in code."""

    def __init__(self, stream_id: str, seen: list, out: queue.Queue | None = None):
        self.seen, self.out = seen, out

    def __call__(self, result):
        self.seen.append(result.frame.seq)
        if self.out is not None:
            self.out.put(result.frame.seq)
        return []


class Strict:
    """Refuses an option value, as Python code does: ValueError."""

    def __init__(self, stream_id: str, limit_kmh: float = 50):
        if limit_kmh <= 0:
            raise ValueError(f"limit_kmh must be positive, got {limit_kmh}")

    def __call__(self, result):
        return []


class FailingClose:
    def __init__(self, stream_id: str):
        self.stream_id = stream_id

    def __call__(self, result):
        return []

    def close(self):
        raise OSError("cannot flush the report")


class Reporting:
    """Opens its report file when made and closes it in `close`, as a plugin that writes somewhere does."""

    made: list[Reporting] = []

    def __init__(self, stream_id: str, path: str):
        self.file = open(path, "a")  # noqa: SIM115 - closed in close(), as the stream's plugin
        Reporting.made.append(self)

    def __call__(self, result):
        return []

    def close(self):
        self.file.close()


class Calibrated:
    """Reads its calibration file when made."""

    def __init__(self, stream_id: str, path: str):
        with open(path) as file:
            self.calibration = file.read()

    def __call__(self, result):
        return []


class Unreachable:
    """Connects to the service it reports to when made; the service is down."""

    def __init__(self, stream_id: str):
        raise ConnectionRefusedError("report service at 127.0.0.1:9 refused the connection")


class Uploading:
    """Logs in to the service it uploads to when made, and says where it failed, as HTTP clients do: the URL."""

    def __init__(self, stream_id: str, endpoint: str):
        raise ConnectionError(f"cannot log in at {endpoint}: 503 Service Unavailable")


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setattr(Reporting, "made", [])
    for name, factory in (("yielding", Yielding), ("remembering", Remembering), ("failing-close", FailingClose),
                          ("strict", Strict), ("reporting", Reporting), ("unreachable", Unreachable),
                          ("calibrated", Calibrated), ("uploading", Uploading)):
        monkeypatch.setitem(plugins._stages, name, factory)


def test_the_events_of_a_plugin_that_yields_them_reach_the_frame():
    stage = PythonStage(StageConfig(python="yielding"), "cam-1")
    result = tracked_frame(3, [])
    stage.process(result)
    assert [(e.kind, e.payload["seq"]) for e in result.events] == [("mark", 3)]


def test_each_stream_makes_its_plugin_with_options_of_its_own():
    config = StageConfig(python="remembering", options={"seen": []})
    cam1, cam2 = PythonStage(config, "cam-1"), PythonStage(config, "cam-2")
    cam1.process(tracked_frame(7, [], stream_id="cam-1"))
    assert cam1.target.seen == [7] and cam2.target.seen == []
    assert config.options == {"seen": []}  # the config as written, for the next stream and the next change


def test_an_object_given_in_the_options_in_code_is_shared_by_every_streams_plugin_as_it_is():
    out = queue.Queue()  # holds a lock: it cannot be copied, and is meant to collect from every stream
    config = StageConfig(python="remembering", options={"seen": [], "out": out})
    cam1, cam2 = PythonStage(config, "cam-1"), PythonStage(config, "cam-2")
    cam1.process(tracked_frame(7, [], stream_id="cam-1"))
    cam2.process(tracked_frame(8, [], stream_id="cam-2"))
    assert cam1.target.out is out and cam2.target.out is out
    assert [out.get_nowait(), out.get_nowait()] == [7, 8]


def site(stages: list[dict], zone_right: int) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"],
        "streams": [{"id": "cam-1", "url": "fake://cam-1?frames=10&live=0"}],
        "detector": {"model": "fake", "engine": "fake"},
        "stages": stages,
        "zones": [{"name": "door", "polygon": [[100, 100], [zone_right, 100], [zone_right, 300], [100, 300]]}],
    })


def test_a_plugin_whose_close_fails_is_still_taken_out_and_the_zone_changes_of_the_same_change_are_reported():
    stages = build_stages(site([{"python": "failing-close"}], 300), "cam-1", CLASS_NAMES)
    for i in range(3):
        result = tracked_frame(i, [(1, 200, 200)])
        for stage in stages:
            stage.process(result)
    stages, events = restage(site([], 400), "cam-1", CLASS_NAMES, stages, moment(2))
    assert [stage.name for stage in stages] == ["tracker", "analytics"]
    assert [(e.kind, e.payload["reason"]) for e in events] == [("zone_exit", "reconfigured")]


def test_a_plugin_that_cannot_be_made_during_a_change_leaves_the_stream_as_it_was_and_no_zone_exit_is_lost(tmp_path):
    """The zones changed first: the visit open in the old zone was closed, its zone_exit thrown away with the
    failed change, and the stream went on with the new zone and the old plugins."""
    stages = build_stages(site([], 300), "cam-1", CLASS_NAMES)
    for i in range(3):
        result = tracked_frame(i, [(1, 200, 200)])
        for stage in stages:
            stage.process(result)
    report = str(tmp_path / "report.txt")
    with pytest.raises(ConfigError, match="refused the connection"):
        restage(site([{"python": "reporting", "options": {"path": report}}, {"python": "unreachable"}], 400),
                "cam-1", CLASS_NAMES, stages, moment(2))
    assert [made.file.closed for made in Reporting.made] == [True]  # made for the change, which did not happen
    events = [event for stage in stages for event in stage.end(moment(3))]
    assert [(e.kind, e.payload["reason"]) for e in events] == [("zone_exit", "end_of_stream")]


def test_a_plugin_that_refuses_an_option_value_is_a_config_error_naming_it_the_stream_and_why():
    with pytest.raises(ConfigError, match=r"stage 'strict' for stream 'cam-1'.*limit_kmh must be positive, got -5.*"
                                          r"stages -> options"):
        PythonStage(StageConfig(python="strict", options={"limit_kmh": -5}), "cam-1")


def test_a_plugin_that_fails_when_made_is_named_without_the_credentials_its_message_quotes():
    """The message goes to the log and to the API's answer: a plugin quoting the URL it was given must not put its
    password or token there."""
    endpoint = "https://ops:hunter2@api.example/v1?access_token=t0k3n&region=eu"
    with pytest.raises(ConfigError) as refused:
        PythonStage(StageConfig(python="uploading", options={"endpoint": endpoint}), "cam-1")
    message = str(refused.value)
    assert "hunter2" not in message and "t0k3n" not in message
    assert "cannot log in at https://***@api.example/v1?access_token=***&region=eu: 503" in message


def test_a_plugin_that_fails_to_open_what_it_reads_when_made_is_a_config_error_naming_it_the_stream_and_why(tmp_path):
    """Only TypeError and ValueError were: a missing file came out as a bare FileNotFoundError, which the control
    API answered with a 500 and no word of which stage or stream, and a reload on SIGHUP with a traceback."""
    missing = tmp_path / "cam-1.json"
    with pytest.raises(ConfigError, match=r"stage 'calibrated' for stream 'cam-1'.*FileNotFoundError.*cam-1.json"):
        PythonStage(StageConfig(python="calibrated", options={"path": str(missing)}), "cam-1")
