"""`fleet import` reads its file as the config loader reads a config: a file it cannot take is refused before
anything is written, naming the file, the line and what to do."""
from __future__ import annotations

import io

import pytest

from pipeline.cluster.cli import Import, fleet_command

NOWHERE = "postgresql://streamweave@127.0.0.1:1/fleet"  # every file here is refused before connecting


def refused(path, capsys) -> str:
    """What `fleet import` says about `path`, asserting it refused the file as bad input (exit 2)."""
    assert fleet_command(["import", str(path), "--dsn", NOWHERE], io.StringIO()) == 2
    return capsys.readouterr().err


def test_a_file_saved_in_another_encoding_is_refused_naming_the_line(tmp_path, capsys):
    site = tmp_path / "site.yaml"
    site.write_bytes("streams:\n  - {id: lobby, url: rtsp://h/lobby}\n  - {id: caf\u00e9, url: rtsp://h/cafe}\n"
                     .encode("cp1252"))
    said = refused(site, capsys)
    assert said.startswith(f"fleet import: {site}:3: the config file is not UTF-8 text (byte 0xe9"), said
    assert "save it as UTF-8" in said


def test_a_section_or_key_given_twice_is_refused_rather_than_half_of_it_imported(tmp_path, capsys):
    """YAML keeps the last of two equal keys: the first site's cameras, or a camera's first url, would be lost."""
    site = tmp_path / "site.yaml"
    site.write_text("streams:\n  - {id: north-1, url: rtsp://north/1}\n"
                    "streams:\n  - {id: south-1, url: rtsp://south/1, url: rtsp://south/2}\n")
    assert refused(site, capsys).splitlines() == [
        f"fleet import: {site}:3: streams: duplicate key (first at line 1); YAML would keep only this one: merge the "
        "two into one",
        f"{site}:4: streams -> 0 -> url: duplicate key (first at line 4); YAML would keep only this one: merge the two "
        "into one"]


def test_a_variable_is_read_from_the_environment_as_in_a_config_and_one_unset_is_refused(tmp_path, capsys,
                                                                                      monkeypatch):
    """Left as text, the camera would run with '${CAM_PASSWORD}' as its password, and fail to log in."""
    site = tmp_path / "site.yaml"
    site.write_text("runtime:\n  http: {token: '${TOKEN_OF_ANOTHER_HOST}'}\n"  # not imported: not read
                    "streams:\n  - {id: gate, url: 'rtsp://viewer:${CAM_PASSWORD}@gate.local/live'}\n"
                    "  - {id: dock, url: 'rtsp://dock.local/${DOCK_PATH:-main}'}\n")
    monkeypatch.setenv("CAM_PASSWORD", "s3cret")
    monkeypatch.delenv("DOCK_PATH", raising=False)
    assert Import(site).streams == [{"id": "gate", "url": "rtsp://viewer:s3cret@gate.local/live"},
                                    {"id": "dock", "url": "rtsp://dock.local/main"}]
    monkeypatch.delenv("CAM_PASSWORD")
    assert refused(site, capsys) == (f"fleet import: {site}:4: streams -> 0 -> url: environment variable CAM_PASSWORD "
                                     "is not set; set it (e.g. in the service's environment file) or give a default: "
                                     "${CAM_PASSWORD:-value}\n")


def test_a_camera_written_as_its_url_alone_is_refused_saying_an_entry_needs_its_keys(tmp_path, capsys):
    """'id: Field required' and 'url: Field required' would say the url is missing, which it is not."""
    site = tmp_path / "site.yaml"
    site.write_text("streams:\n  - {id: lobby, url: rtsp://h/lobby}\n  - rtsp://viewer:s3cret@h/dock\n")
    assert refused(site, capsys) == (f"fleet import: {site}:3: streams -> 1: 'rtsp://***@h/dock' is not a camera's "
                                     "entry; write its keys, as in a config: - {id: dock, url: rtsp://...}\n")


def test_every_bad_camera_of_a_long_list_is_named_at_once_by_its_line_in_the_configs_words(tmp_path, capsys):
    cameras = [f"  - {{id: cam-{i:03d}, url: 'rtsp://h/{i}'}}" for i in range(300)]
    cameras[117] = "  - {id: cam-117, uri: 'rtsp://h/117'}"
    cameras[254] = "  - {id: 0254, url: 'rtsp://h/254'}"
    site = tmp_path / "site.yaml"
    site.write_text("streams:\n" + "\n".join(cameras) + "\n")
    assert refused(site, capsys).splitlines() == [
        f"fleet import: {site}:119: streams -> 117 -> url: Field required",
        f"{site}:119: streams -> 117 -> uri: unknown key; did you mean 'url'? (every key: configs/example.yaml)",
        f"{site}:256: streams -> 254 -> id: Input should be a valid string (YAML read the value as 172): put it in "
        "quotes as you wrote it"]  # 0254 is octal to YAML


def test_a_misspelt_key_of_a_camera_is_named_with_the_camera_key_meant(tmp_path, capsys):
    """Looked up among a whole config's keys, 'lanes' was told it meant 'lanes', and 'sink' 'sinks'."""
    site = tmp_path / "site.yaml"
    site.write_text("streams:\n  - {id: a, url: 'rtsp://h/1', lanes: default}\n"
                    "  - {id: b, url: 'rtsp://h/2', fsp: 5}\n")
    assert refused(site, capsys).splitlines() == [
        f"fleet import: {site}:2: streams -> 0 -> lanes: unknown key; did you mean 'lane'? (every key: "
        "configs/example.yaml)",
        f"{site}:3: streams -> 1 -> fsp: unknown key; did you mean 'fps'? (every key: configs/example.yaml)"]


@pytest.mark.parametrize("dsn", ["postgresql://ops:s3cret@[::1/fleet", "postgresql://ops:s3cret@db/f?sslmod=require",
                                 "host=db password=s3cret dbname"])
def test_a_dsn_that_is_no_postgresql_address_is_a_config_error_naming_it_without_its_password(dsn, capsys):
    """It was an internal error with a traceback (an instance restarted for ever), some quoting the password."""
    assert fleet_command(["list", "--dsn", dsn], io.StringIO()) == 2
    said = capsys.readouterr().err
    assert said.startswith("fleet list: the fleet's PostgreSQL DSN: not a DSN libpq can read ("), said
    assert "write postgresql://user@host/db" in said and "s3cret" not in said and said.count("\n") == 1


def test_a_camera_sent_to_the_fleet_api_is_told_its_mistake_in_the_words_of_fleet_import():
    from pipeline.cluster.cameras import stream_entry  # noqa: PLC0415
    from pipeline.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError) as refused:
        stream_entry({"id": "a", "url": "rtsp://h/1", "lanes": "default"}, "streams -> a")
    assert str(refused.value) == ("streams -> a -> lanes: unknown key; did you mean 'lane'? "
                                  "(every key: configs/example.yaml)")
