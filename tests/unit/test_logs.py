"""The process's log: JSON lines with the fields a collector indexes, and records held while the config is
read come out in the format it names."""
import io
import json
import logging
import warnings
from datetime import datetime

import pytest

from pipeline import logs
from tests.support.logs import configured_log


def json_lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_message_and_the_extra_fields():
    with configured_log("json") as out:
        logging.getLogger("test.logs.fields").warning(
            "cam %s at %.1f fps", "cam-3", 24.96,
            extra={"stream": "cam-3", "fps": 25.0, "dropped": {"overflow": 2, "age": 0}, "last_error": None})
    [line] = json_lines(out)
    assert {k: line[k] for k in ("level", "logger", "message", "process", "thread")} == {
        "level": "WARNING", "logger": "test.logs.fields", "message": "cam cam-3 at 25.0 fps",
        "process": "MainProcess", "thread": "MainThread"}
    assert line["stream"] == "cam-3" and line["fps"] == 25.0 and line["dropped"] == {"overflow": 2, "age": 0}
    assert line["last_error"] is None
    assert datetime.fromisoformat(line["ts"]).utcoffset().total_seconds() == 0  # ISO-8601, in UTC


def test_an_exception_is_one_json_line_with_the_traceback_in_a_field():
    with configured_log("json") as out:
        try:
            raise RuntimeError("disk full")
        except RuntimeError:
            logging.getLogger("test.logs.exc").exception("sink %s failed", "sqlite")
    assert len(out.getvalue().splitlines()) == 1
    [line] = json_lines(out)
    assert line["message"] == "sink sqlite failed" and line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("RuntimeError: disk full")


def test_python_warnings_go_through_the_same_handler():
    with configured_log("json") as out:
        warnings.warn("old option", DeprecationWarning, stacklevel=1)
    [line] = json_lines(out)
    assert line["logger"] == "py.warnings" and "DeprecationWarning: old option" in line["message"]


def test_configure_leaves_one_handler_at_the_level_asked_and_says_its_format():
    with configured_log("json", "warning"):
        assert len(logging.getLogger().handlers) == 1 and logging.getLogger().level == logging.WARNING
        assert logs.current_format() == "json"
        logs.configure("info", "text", stream=io.StringIO())
        assert logs.current_format() == "text"


def test_records_held_while_the_config_is_read_come_out_in_the_format_it_names():
    after = io.StringIO()
    with configured_log("text") as before:
        with logs.held():
            logging.getLogger("test.logs.held").warning("metrics_port is deprecated")
            logs.configure("info", "json", stream=after)
            logging.getLogger("test.logs.held").info("running")
    assert before.getvalue() == ""
    assert [line["message"] for line in json_lines(after)] == ["metrics_port is deprecated", "running"]


def test_held_records_go_to_the_previous_handler_when_nothing_was_configured():
    with configured_log("text") as out:
        with pytest.raises(ValueError):
            with logs.held():
                logging.getLogger("test.logs.held").warning("read so far")
                raise ValueError("bad config")
        assert logs.current_format() == "text" and len(logging.getLogger().handlers) == 1
    assert out.getvalue().endswith(" WARNING test.logs.held: read so far\n")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_credentials_a_plugin_s_failure_quotes_never_reach_the_log(log_format):
    """Every stage and sink runs behind `guarded`, which logs what a plugin raised with its traceback; a plugin,
    like the HTTP clients it uses, names the URL it failed on, and a message may be given one by any library."""
    from pipeline.runtime.outputs import Failures, guarded  # noqa: PLC0415

    url = "https://ops:hunter2@uploads.example/v1/clips?token=t0k3n"

    def upload(result):
        raise ConnectionError(f"Max retries exceeded with url: {url}")

    with configured_log(log_format) as out:
        guarded(Failures(), "sink 'uploader'", upload, None)
        logging.getLogger("test.logs.secret").warning("connecting to %s", url)
    text = out.getvalue()
    assert "hunter2" not in text and "t0k3n" not in text
    assert text.count("https://***@uploads.example/v1/clips?token=***") == 2
    assert "ConnectionError: Max retries exceeded with url: https://***@" in text


def test_masking_leaves_the_record_as_every_other_handler_gets_it():
    """The record is shared by every handler (a test's, an operator's own): the masking is in what this one writes."""
    seen: list[logging.LogRecord] = []
    other = logging.Handler()
    other.emit = seen.append
    with configured_log("text") as out:
        logging.getLogger().addHandler(other)
        try:
            raise ConnectionError("refused by https://ops:hunter2@uploads.example/v1")
        except ConnectionError:
            logging.getLogger("test.logs.shared").exception("upload to %s failed", "rtsp://u:pw@cam/live")
        finally:
            logging.getLogger().removeHandler(other)
    assert "hunter2" not in out.getvalue() and "u:pw@" not in out.getvalue()
    (record,) = [r for r in seen if r.name == "test.logs.shared"]
    assert record.exc_info is not None and record.args == ("rtsp://u:pw@cam/live",)


def test_a_json_line_whose_message_ends_in_a_masked_secret_is_still_json():
    """The masking of a query value or a DSN password runs to the next space: on the JSON line it must not swallow
    the quote and comma that close the field."""
    with configured_log("json") as out:
        logging.getLogger("test.logs.json").warning("opening rtsp://cam/live?token=t0k3n")
        logging.getLogger("test.logs.json").warning("connecting to host=db password=hunter2")
        try:
            raise ConnectionError("refused by http://cam/mjpg?pwd=s3cret")
        except ConnectionError:
            logging.getLogger("test.logs.json").exception("upload failed")
    lines = json_lines(out)
    assert [line["message"] for line in lines] == [
        "opening rtsp://cam/live?token=***", "connecting to host=db password=***", "upload failed"]
    assert lines[2]["exception"].endswith("ConnectionError: refused by http://cam/mjpg?pwd=***")
