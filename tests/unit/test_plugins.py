"""Plugins: one registry for source schemes, engines, sink types and stages, filled by installed
packages (entry points) and by the config's `plugins:` list."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipeline import plugins
from pipeline.config.models import PipelineConfig, StreamConfig
from pipeline.errors import ConfigError
from tests.conftest import REPO


def test_a_url_whose_scheme_no_source_reads_is_refused_with_the_known_schemes():
    with pytest.raises(ValueError, match=r"no source reads 'thermal://' URLs; known schemes: \[.*'rtsp://'"):
        StreamConfig(id="cam", url="thermal://10.0.0.5/ir")
    assert StreamConfig(id="cam", url="/videos/dock.mp4").is_live is False
    assert StreamConfig(id="cam", url="rtsp://10.0.0.5/live").is_live is True


def test_a_plugin_named_in_the_config_registers_its_scheme_before_the_streams_are_validated(tmp_path, monkeypatch):
    (tmp_path / "thermal_cams.py").write_text(textwrap.dedent("""
        from pipeline import plugins
        plugins.register_source(plugins.SourceKind("thermal", "thermal_cams:open", live=True))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_sources", dict(plugins._sources))  # the scheme is gone after this test
    monkeypatch.setattr(plugins, "_loaded", set(plugins._loaded))
    config = PipelineConfig.model_validate({"plugins": ["thermal_cams"], "streams": [{"id": "ir", "url": "thermal://a"}],
                                            "detector": {"model": "m.onnx"}})
    assert config.streams[0].is_live and "thermal_cams" in plugins.loaded()


def test_a_plugin_that_cannot_be_imported_is_a_config_error_at_its_key(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("plugins: [no_such_plugin]\nstreams: [{id: a, url: x.mp4}]\ndetector: {model: m.onnx}\n")
    from pipeline.config import load_config

    with pytest.raises(ConfigError, match=r"site.yaml:1: plugins -> 0: plugin module 'no_such_plugin' cannot be imported"):
        load_config(path)


def test_an_installed_package_registers_through_the_entry_point_group(tmp_path):
    """A distribution on the path whose entry point names a module: the scheme works without `plugins:`."""
    (tmp_path / "acme_cams.py").write_text(textwrap.dedent("""
        from pipeline import plugins
        plugins.register_source(plugins.SourceKind("acme", "acme_cams:open", live=True))
    """))
    info = tmp_path / "acme_cams-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-cams\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[streamweave.plugins]\nacme = acme_cams\n")
    script = ("from pipeline import plugins; plugins.load(); "
              "print(plugins.source_for('acme://cam-7').is_live('acme://cam-7'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_a_stage_is_named_by_a_registered_name_or_a_dotted_path():
    plugins.register_stage("mark-test", "pipeline.testing:MarkEveryNth")
    assert plugins.stage_factory("mark-test").__name__ == "MarkEveryNth"
    assert plugins.stage_factory("pipeline.testing:MarkEveryNth").__name__ == "MarkEveryNth"
    with pytest.raises(ValueError, match="neither a registered stage"):
        plugins.stage_factory("mark")
    with pytest.raises(ValueError, match="has no 'Missing'"):
        plugins.stage_factory("pipeline.testing:Missing")


def test_engines_and_sink_types_are_looked_up_in_the_registry():
    assert [kind.name for kind in plugins.engines_by_rank()][:4] == ["tensorrt", "torch", "onnxruntime-cuda", "onnxruntime"]
    with pytest.raises(ValueError, match="unknown engine 'tensorflow'"):
        plugins.engine("tensorflow")
    with pytest.raises(ValueError, match=r"unknown sink type 'kafka'; known: \[.*'sqlite'"):
        plugins.output("kafka")


def test_http_urls_are_live_cameras_unless_the_stream_says_live_false():
    assert StreamConfig(id="cam", url="http://10.0.0.5/cam.mjpg").is_live is True
    assert StreamConfig(id="cam", url="https://cdn.example/live/index.m3u8").is_live is True
    assert StreamConfig(id="clip", url="http://10.0.0.5/clip.mp4", live=False).is_live is False


def test_a_plugin_may_read_a_scheme_the_built_in_sources_refuse(monkeypatch):
    with pytest.raises(ValueError, match=r"'v4l2://' URLs are not read yet: .*rtsp://"):
        StreamConfig(id="usb", url="v4l2:///dev/video0")
    monkeypatch.setitem(plugins._sources, "v4l2", plugins.SourceKind("v4l2", "usb_cams:open", live=True))
    assert StreamConfig(id="usb", url="v4l2:///dev/video0").is_live is True


@pytest.mark.parametrize("name", [".pipeline.testing", "pipeline..testing", "pipe line", 3])
def test_a_plugin_that_is_not_a_module_name_is_refused_naming_it(name):
    with pytest.raises(ValueError, match="is not a module name"):
        plugins.load([name])


@pytest.mark.parametrize("writes, why", [("path", r"writes=\('path', 'file'\)"),
                                         (("file", "file"), "has no field 'file'"),
                                         (("path", "dir"), "'file' or 'folder'")])
def test_a_sink_type_that_says_badly_what_it_writes_is_refused_when_registered(writes, why):
    from pydantic import BaseModel

    class Config(BaseModel):
        type: str = "kafka-dump"
        path: str

    with pytest.raises(ValueError, match=f"sink type 'kafka-dump': .*{why}"):
        plugins.OutputKind("kafka-dump", Config, lambda config, context: None, writes=writes)


def test_a_sink_type_may_say_what_it_writes_as_a_list():
    from pydantic import BaseModel

    class Config(BaseModel):
        type: str = "kafka-dump"
        path: str

    kind = plugins.OutputKind("kafka-dump", Config, lambda config, context: None, writes=["path", "file"])
    assert kind.writes == ("path", "file")


@pytest.mark.parametrize("source, raised", [("raise RuntimeError('licence server unreachable')\n",
                                              r"RuntimeError at .*acme_failing\.py:1: licence server unreachable"),
                                             ("def open(:\n    pass\n", r"SyntaxError at .*acme_failing\.py:1")])
def test_a_plugin_whose_code_fails_when_imported_is_a_config_error_at_its_key(tmp_path, monkeypatch, source, raised):
    (tmp_path / "acme_failing.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "site.yaml"
    path.write_text("streams: [{id: a, url: x.mp4}]\nplugins: [acme_failing]\ndetector: {model: m.onnx}\n")
    from pipeline.config import load_config

    with pytest.raises(ConfigError, match=f"site.yaml:2: plugins -> 0: plugin module 'acme_failing' failed while "
                                          f"imported: {raised}"):
        load_config(path)
    assert "acme_failing" not in plugins.loaded()


def test_a_stage_whose_module_fails_when_imported_is_a_config_error_at_its_key(tmp_path, monkeypatch):
    (tmp_path / "acme_stage.py").write_text("LIMIT = 1 / 0\n\nclass Counter:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "site.yaml"
    path.write_text("streams: [{id: a, url: x.mp4}]\ndetector: {model: m.onnx}\n"
                    "stages:\n  - python: acme_stage:Counter\n")
    from pipeline.config import load_config

    with pytest.raises(ConfigError, match=r"site.yaml:4: stages -> 0 -> python: .*'acme_stage' failed while imported: "
                                          r"ZeroDivisionError at .*acme_stage\.py:1: division by zero"):
        load_config(path)
