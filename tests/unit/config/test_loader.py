"""Config errors name the file, the line and the key path; good configs load with their defaults."""
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from pipeline import plugins
from pipeline.config import load_config
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

GOOD = """\
streams:
  - id: cam-1
    url: clips/a.mp4
  - id: cam-2
    url: rtsp://user:secret@10.0.0.5/live
    lane: fast
lanes:
  - name: default
  - name: fast
    priority: 10
    max_batch: 2
detector:
  model: models/m.onnx
sinks:
  - type: sqlite
  - type: jsonl
    path: out.jsonl
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_good_config_loads_with_defaults(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert [s.id for s in config.streams] == ["cam-1", "cam-2"]
    assert config.streams[0].is_live is False and config.streams[1].is_live is True
    assert config.lanes[1].priority == 10 and config.lanes[1].max_batch == 2
    assert config.detector.engine == "auto"
    assert [s.type for s in config.sinks] == ["sqlite", "jsonl"]


def test_unknown_key_names_file_line_and_path(tmp_path):
    path = write(tmp_path, GOOD.replace("  model: models/m.onnx", "  model: models/m.onnx\n  conf_treshold: 0.3"))
    assert error_of(path) == (f"{path}:14: detector -> conf_treshold: unknown key; did you mean 'conf_threshold'? "
                              "(every key: configs/example.yaml)")


def test_unknown_lane_is_reported_at_the_stream_that_uses_it(tmp_path):
    path = write(tmp_path, GOOD.replace("lane: fast", "lane: fsat"))
    message = error_of(path)
    assert message.startswith(f"{path}:6: streams -> 1 -> lane: unknown lane 'fsat'")
    assert "'fast'" in message


def test_out_of_range_value_in_a_sink_points_at_its_line(tmp_path):
    path = write(tmp_path, GOOD.replace("  - type: sqlite", "  - type: sqlite\n    batch_size: 0"))
    assert error_of(path).startswith(f"{path}:16: sinks -> 0 -> batch_size: Input should be greater than or equal to 1")


def test_unknown_sink_type_is_named(tmp_path):
    path = write(tmp_path, GOOD.replace("type: jsonl", "type: kafka"))
    assert "sinks -> 1" in error_of(path) and "kafka" in error_of(path)


def test_a_control_character_in_a_value_is_escaped_so_the_error_stays_one_line(tmp_path):
    path = write(tmp_path, GOOD.replace("type: jsonl", 'type: "\\x1e"'))
    error = error_of(path)
    assert len(error.splitlines()) == 1 and error.startswith(f"{path}:16: sinks -> 1") and "\\x1e" in error


def test_duplicate_stream_ids_are_rejected(tmp_path):
    path = write(tmp_path, GOOD.replace("id: cam-2", "id: cam-1"))
    assert error_of(path).startswith(f"{path}:4: streams -> 1 -> id: duplicate id 'cam-1'")


def test_every_problem_is_listed_not_just_the_first(tmp_path):
    path = write(tmp_path, GOOD.replace("max_batch: 2", "max_batch: 0").replace("  - type: sqlite", "  - type: sqlite\n    batch_size: 0"))
    assert len(error_of(path).splitlines()) == 2


def test_alert_rule_needs_an_existing_zone(tmp_path):
    path = write(tmp_path, GOOD + "alerts:\n  - name: loiter\n    when: dwell\n    zone: lobby\n    min_seconds: 5\n")
    assert "alerts -> 0 -> zone: rule 'loiter' needs a zone" in error_of(path)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, GOOD.replace("  - id: cam-1", "  - id: [cam-1"))
    assert error_of(path).startswith(f"{path}:")
    assert "not valid YAML" in error_of(path)


def test_missing_file_is_a_config_error(tmp_path):
    assert "cannot read the config file" in error_of(tmp_path / "nope.yaml")


def test_a_file_not_in_utf_8_names_its_line_and_says_to_save_it_as_utf_8(tmp_path):
    """Windows' Notepad saves 'ANSI' (Windows-1252) unless told otherwise: an accented zone name made `validate` and
    `run` fail with an internal error and a traceback."""
    path = tmp_path / "site.yaml"
    path.write_bytes((GOOD + "zones:\n  - name: entrée\n    polygon: [[0, 0], [9, 0], [9, 9]]\n").encode("cp1252"))
    said = error_of(path)
    assert said == (f"{path}:19: the config file is not UTF-8 text (byte 0xe9, written in another encoding such as "
                    "Windows-1252?); save it as UTF-8")
    from pipeline.config.document import ConfigDocument

    with pytest.raises(ConfigError) as edited:
        ConfigDocument.read(path)  # the API's changes read it too
    assert str(edited.value) == said
    proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "validate", str(path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_command_exits_2_without_a_traceback(tmp_path):
    path = write(tmp_path, GOOD.replace("lane: fast", "lane: fsat"))
    proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "validate", str(path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "unknown lane 'fsat'" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_command_accepts_a_good_file():
    proc = subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "validate", "configs/demo.yaml"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "OK (8 streams, 2 lanes, 7 sinks, 4 alert rules)" in proc.stdout


@pytest.mark.parametrize("name", ["example.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    path = REPO / "configs" / name
    if not path.exists():
        pytest.fail(f"{path} is missing")
    load_config(path)


def test_reconnect_delays_out_of_order_are_reported_at_the_stream(tmp_path):
    path = write(tmp_path, GOOD.replace("    lane: fast", "    lane: fast\n    reconnect_min_s: 10\n    reconnect_max_s: 2"))
    assert error_of(path).startswith(f"{path}:8: streams -> 1 -> reconnect_max_s: must be at least reconnect_min_s (10)")


@pytest.mark.parametrize("value, message", [("-1", "greater than or equal to 0"), ("many", "'auto'")])
def test_decode_processes_takes_a_count_or_auto(tmp_path, value, message):
    path = write(tmp_path, GOOD + f"runtime:\n  decode_processes: {value}\n")
    error = error_of(path)
    assert "runtime -> decode_processes" in error and message in error, error


def test_decode_processes_defaults_to_auto(tmp_path):
    assert load_config(write(tmp_path, GOOD)).runtime.decode_processes == "auto"


def test_environment_variables_fill_values_and_an_unset_one_names_its_line(tmp_path, monkeypatch):
    path = tmp_path / "site.yaml"
    path.write_text("streams:\n  - id: a\n    url: rtsp://admin:${CAM_PASSWORD}@10.0.0.5/live\n"
                    "detector: {model: m.onnx}\n"
                    "runtime: {http: {host: 0.0.0.0, token: '${API_TOKEN:-a-default-token-0123}'}}\n")
    monkeypatch.delenv("CAM_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"site.yaml:3: streams -> 0 -> url: environment variable CAM_PASSWORD is not set"):
        load_config(path)
    monkeypatch.setenv("CAM_PASSWORD", "s3cret:#1")  # YAML-special characters stay a plain value
    config = load_config(path)
    assert config.streams[0].url == "rtsp://admin:s3cret:#1@10.0.0.5/live"
    assert config.runtime.http.token == "a-default-token-0123"
    monkeypatch.setenv("API_TOKEN", "from-the-environment-file")
    assert load_config(path).runtime.http.token == "from-the-environment-file"


@pytest.mark.parametrize("url, instead", [
    ("rtmp://10.0.0.5/live/cam", "MediaMTX"),
    ("rtmps://viewer:secret@10.0.0.5/live/cam", "rtsp://"),
    ("v4l2:///dev/video0", "register a source plugin for v4l2://"),
])
def test_schemes_not_read_yet_are_refused_at_the_stream_url_saying_what_to_use_instead(tmp_path, url, instead):
    path = write(tmp_path, GOOD.replace("url: clips/a.mp4", f"url: {url}"))
    error = error_of(path)
    scheme = url.split(":")[0]
    assert error.startswith(f"{path}:3: streams -> 0 -> url: ") and f"'{scheme}://' URLs are not read yet" in error
    assert instead in error and "secret" not in error


def test_a_key_given_twice_names_both_lines(tmp_path):
    path = write(tmp_path, GOOD.replace("  - type: jsonl\n    path: out.jsonl", "  - type: jsonl\n    path: out.jsonl\n    path: b.jsonl"))
    assert error_of(path) == (f"{path}:18: sinks -> 1 -> path: duplicate key (first at line 17); YAML would keep "
                              "only this one: merge the two into one")


def test_a_value_of_the_wrong_kind_names_the_key_not_pydantics_union_members(tmp_path):
    path = write(tmp_path, GOOD + "runtime:\n  decode_processes: -1\n")
    lines = error_of(path).splitlines()
    assert lines and all(line.startswith(f"{path}:19: runtime -> decode_processes: ") for line in lines), lines


def test_a_key_with_unprintable_characters_is_quoted(tmp_path):
    path = write(tmp_path, GOOD + 'tracker: {"max\\tlost": 3}\n')
    assert error_of(path) == (f"{path}:18: tracker -> 'max\\tlost': unknown key; did you mean 'max_lost_frames'? "
                              "(every key: configs/example.yaml)")


def test_two_plugin_event_outputs_of_one_name_are_refused_naming_the_second(tmp_path, monkeypatch):
    """The outbox keeps each output's cursor under its name: two of one name were let through and the second was
    refused half-way through a start or a reload."""
    class KafkaConfig(BaseModel):
        type: Literal["kafka"]
        topic: str
        name: str

    monkeypatch.setitem(plugins._outputs, "kafka", plugins.OutputKind("kafka", KafkaConfig, lambda e, c: None,
                                                                       events=True))
    twins = "  - {type: kafka, topic: a, name: alarms}\n  - {type: kafka, topic: b, name: alarms}\n"
    path = write(tmp_path, GOOD + twins)
    assert error_of(path).startswith(f"{path}:19: sinks -> 3 -> name: output name 'alarms' is already taken by "
                                     "sinks -> 2 -> name; give one of them another `name:`")


@pytest.mark.parametrize("written", ["${API_TOKEN:please-change-me-0000}", "${API-TOKEN}", "prefix-${API_TOKEN"])
def test_a_variable_written_wrong_is_refused_not_taken_literally(tmp_path, monkeypatch, written):
    monkeypatch.setenv("API_TOKEN", "from-the-environment-file")
    path = write(tmp_path, f"streams: []\ndetector: {{model: m.onnx}}\nruntime: {{http: {{token: '{written}'}}}}\n")
    with pytest.raises(ConfigError, match=r"site.yaml:3: runtime -> http -> token: .* no variable this file reads"):
        load_config(path)


def test_a_default_applies_to_a_variable_that_is_set_but_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("SW_PORT", "")
    path = write(tmp_path, "streams: []\ndetector: {model: m.onnx}\nruntime: {http: {port: '${SW_PORT:-9300}'}}\n")
    assert load_config(path).runtime.http.port == 9300


@pytest.mark.parametrize("written, read", [("yes", "True"), ("0123", "83"), ("12", "12"),
                                           ("2024-03-14", "the date 2024-03-14"),
                                           ("2024-03-14 08:00:00", "the time 2024-03-14T08:00:00")])
def test_an_id_yaml_reads_as_no_string_is_refused_with_the_value_it_read_and_to_quote_it(tmp_path, written, read):
    path = write(tmp_path, f"streams: [{{id: {written}, url: 'rtsp://192.0.2.1/live'}}]\ndetector: {{model: m.onnx}}\n")
    with pytest.raises(ConfigError, match=rf"streams -> 0 -> id: .*YAML read the value as {read}\): put it in quotes"):
        load_config(path)


def test_a_dollar_brace_as_it_is_is_written_doubled_and_text_around_a_variable_stays_as_written(tmp_path, monkeypatch):
    monkeypatch.setenv("CAM_PASS", "s3cret")
    path = write(tmp_path, "streams:\n  - {id: a, url: 'rtsp://u:pa$${w0rd@192.0.2.1/live'}\n"
                    "  - {id: b, url: 'rtsp://u:ab$${CAM_PASS}{x@192.0.2.2/live'}\n"
                    "  - {id: c, url: 'rtsp://u:ab$${CAM_PASS}@192.0.2.3/live'}\ndetector: {model: m.onnx}\n")
    assert [s.url for s in load_config(path).streams] == ["rtsp://u:pa${w0rd@192.0.2.1/live",
                                                          "rtsp://u:ab${CAM_PASS}{x@192.0.2.2/live",
                                                          "rtsp://u:ab${CAM_PASS}@192.0.2.3/live"]


@pytest.mark.parametrize("runtime, http", [("{metrics_port: '${METRICS_PORT:-9300}'}", ("127.0.0.1", 9300)),
                                           ("{metrics_port: null, metrics_host: 127.0.0.1}", None)])
def test_the_old_metrics_keys_still_read_as_they_were_written(tmp_path, runtime, http):
    path = write(tmp_path, f"streams: []\ndetector: {{model: m.onnx}}\nruntime: {runtime}\n")
    served = load_config(path).runtime.http
    assert (served.host, served.port) == http if http else served is None


@pytest.mark.parametrize("first, second", [("service=east", "service=west"),
                                           ("hostaddr=10.0.0.1 dbname=metrics", "hostaddr=10.0.0.2 dbname=metrics"),
                                           ("postgresql://app@db.example/one", "postgresql://app@db.example/two")])
def test_postgres_sinks_on_different_databases_are_two_sinks(tmp_path, first, second):
    path = write(tmp_path, "streams: []\ndetector: {model: m.onnx}\n"
                    f"sinks: [{{type: postgres, dsn: '{first}'}}, {{type: postgres, dsn: '{second}', what: tracks}}]\n")
    assert [s.dsn for s in load_config(path).sinks] == [first, second]


@pytest.mark.parametrize("port", ["99999", "80a", "0"])
def test_a_webhook_url_with_a_bad_port_is_refused_at_its_url(tmp_path, port):
    path = write(tmp_path, f"streams: []\ndetector: {{model: m.onnx}}\nsinks:\n  - type: webhook\n"
                           f"    url: http://alerts.example:{port}/events\n")
    assert error_of(path).startswith(f"{path}:5: sinks -> 0 -> url: Value error, its port must be a number from 1 to "
                                     "65535")


@pytest.mark.parametrize("text, line, where, what", [
    ("streams:\n  # - {id: a, url: a.mp4}\ndetector: {model: m.onnx}\n", 1, "streams", "its entries under it"),
    ("streams: []\ndetector: {model: m.onnx}\nruntime:\n  # log_level: debug\n", 3, "runtime", "its keys under it"),
    ("streams: []\ndetector: {model: m.onnx}\nsinks:\n  - type: media\n    directory:\n", 5, "sinks -> 0 -> directory",
     "it a value"),
    ("streams:\n  - id: a\n    url: a.mp4\n    lane:\ndetector: {model: m.onnx}\n", 4, "streams -> 0 -> lane",
     "it a value"),
])
def test_a_key_with_nothing_after_it_says_it_is_empty_and_what_to_write(tmp_path, text, line, where, what):
    path = write(tmp_path, text)
    assert error_of(path) == (f"{path}:{line}: {where}: is empty (YAML reads a key with nothing after it as null): "
                              f"give {what}, or remove the key for its default")


@pytest.mark.parametrize("text, line, where", [
    ("streams:\n  - id: a\n    url:\ndetector: {model: m.onnx}\n", 3, "streams -> 0 -> url"),
    ("streams: []\ndetector:\n  model:\n", 3, "detector -> model"),
])
def test_a_required_key_with_nothing_after_it_is_not_told_to_go_for_a_default_it_has_not(tmp_path, text, line, where):
    path = write(tmp_path, text)  # removed, it would be missing
    assert error_of(path) == f"{path}:{line}: {where}: is empty (YAML reads a key with nothing after it as null): " \
                             "give it a value"


@pytest.mark.parametrize("typo, where, meant", [
    ("detector:\n  model: m.onnx\n  conf_treshold: 0.3\n", "3: detector -> conf_treshold", "conf_threshold"),
    ("detector: {model: m.onnx}\nruntime:\n  http: {port: 9000, tokn: abcdefghijklmnopqrstu}\n",
     "3: runtime -> http -> tokn", "token"),
    ("detector: {model: m.onnx}\nsinks:\n  - type: sqlite\n  - type: webhook\n    url: http://127.0.0.1/e\n"
     "    timeout: 3\n", "6: sinks -> 1 -> timeout", "timeout_s"),
    ("detector: {model: m.onnx}\nzones:\n  - name: dock\n    polgon: [[0, 0], [10, 0], [0, 10]]\n",
     "4: zones -> 0 -> polgon", "polygon"),
    ("detector: {model: m.onnx}\nstreams:\n  - {id: a, url: a.mp4, lanes: default}\n", "3: streams -> 0 -> lanes",
     "lane"),
    ("detector: {model: m.onnx}\nsink:\n  - type: sqlite\n", "2: sink", "sinks"),
])
def test_an_unknown_key_close_to_a_known_one_is_named_with_the_key_meant(tmp_path, typo, where, meant):
    path = write(tmp_path, typo)
    assert f"{path}:{where}: unknown key; did you mean '{meant}'? (every key: configs/example.yaml)" in \
        error_of(path).splitlines()


def test_an_unknown_key_like_no_known_one_points_at_the_example(tmp_path):
    path = write(tmp_path, "detector: {model: m.onnx}\ntracker:\n  kalman: true\n")
    assert error_of(path) == (f"{path}:3: tracker -> kalman: unknown key; check the spelling against "
                              "configs/example.yaml")
