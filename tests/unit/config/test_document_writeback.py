"""What the control API writes back into the config file (`ConfigDocument`) reads back, with PyYAML as the
loader does, as what was written; a removed entry takes its own comments and leaves the others' in place; a
write that fails leaves the file as it was and nothing beside it."""
import os
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.config import document
from pipeline.config.document import ConfigDocument
from pipeline.errors import PipelineError

HEAD = """\
# site config
detector:  # the model
  model: models/m.onnx
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# -- strings the YAML 1.1 loader would read as something else ----------------------------------------------
# ruamel writes YAML 1.2, where these are plain strings; PyYAML (YAML 1.1) reads them as a bool, an int, a float,
# a date or null unless they are quoted.
TRICKY = ["no", "on", "yes", "off", "NO", "Off", "1:30", "0x1F", "0o17", "1_000", "1e3", "+1", ".inf", "2001-12-14",
          "~", "null", "Null", "", "=", "<<", "true", "12"]


@pytest.mark.parametrize("value", TRICKY)
def test_a_new_entry_reads_back_as_the_strings_written(tmp_path, value):
    doc = ConfigDocument.read(write(tmp_path, HEAD + "streams:\n  - id: a\n    url: clips/a.mp4\n"))
    doc.put("streams", value, {"url": value or "x", "lane": value})
    doc.put("zones", value, {"polygon": [[0, 0], [100, 0], [100, 80]], "classes": [value]})
    data = yaml.safe_load(doc.text())
    assert data["streams"][1] == {"id": value, "url": value or "x", "lane": value}
    assert data["zones"][0]["name"] == value and data["zones"][0]["classes"] == [value]
    assert "%YAML" not in doc.text()


@pytest.mark.parametrize("value", [1e-07, -2e-05, 1e+20, 1.5e-07, 0.1, 3.0, 1e16, float("inf"), -float("inf")])
def test_a_new_number_reads_back_as_the_number_written(tmp_path, value):
    # Python writes 1e-07 and 1e+20 without a point, which YAML 1.1 (the loader) reads as a string
    doc = ConfigDocument.read(write(tmp_path, HEAD + "streams:\n  - id: a\n    url: clips/a.mp4\n"))
    doc.put("zones", "dock", {"polygon": [[0, 0], [100, 0], [100, 80]], "min_score": value, "points": [value]})
    data = yaml.safe_load(doc.text())
    assert data["zones"][0]["min_score"] == value and type(data["zones"][0]["min_score"]) is float
    assert data["zones"][0]["points"] == [value]


@pytest.mark.parametrize("name", ["no", "on", "yes", "off", "1:30", "0x1F", "1e3", "1_000", ".inf", "null", "NO"])
def test_a_camera_and_a_zone_named_like_a_yaml_1_1_value_validate(tmp_path, name):
    doc = ConfigDocument.read(write(tmp_path, HEAD + "streams:\n  - id: a\n    url: clips/a.mp4\n"))
    doc.put("streams", name, {"url": "clips/b.mp4"})
    doc.put("zones", name, {"polygon": [[0, 0], [100, 0], [100, 80]]})
    config = doc.validate()  # as the loader reads the written file
    assert [stream.id for stream in config.streams] == ["a", name]
    assert [zone.name for zone in config.zones] == [name]


def test_only_what_needs_quotes_is_quoted_and_the_rest_of_the_file_is_kept(tmp_path):
    text = HEAD + textwrap.dedent("""\
        streams:
          - id: 'front'  # single-quoted by hand
            url: clips/a.mp4
            loop: yes
          - id: back
            url: "clips/b.mp4"
        """)
    doc = ConfigDocument.read(write(tmp_path, text))
    doc.put("streams", "no", {"url": "clips/no.mp4", "lane": "default"})
    assert doc.text() == text + '  - id: "no"\n    url: clips/no.mp4\n    lane: default\n'


def test_a_change_keeps_how_the_file_writes_the_values_it_does_not_change(tmp_path):
    text = HEAD + textwrap.dedent("""\
        streams:
          - id: front
            url: clips/a.mp4
            loop: yes  # YAML 1.1: true
            lane: 'default'
        """)
    doc = ConfigDocument.read(write(tmp_path, text))
    doc.put("streams", "front", {**doc.get("streams", "front"), "fps": 5})
    assert doc.text() == text + "    fps: 5\n"
    assert doc.validate().streams[0].loop is True


# -- how the file indents --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, added", [
    ("detector:\n  model: m.onnx\nstreams:\n- id: a\n  url: clips/a.mp4\n  fps: 5\n",
     "- id: b\n  url: clips/b.mp4\n"),
    ("detector:\n    model: m.onnx\nstreams:\n-   id: a\n    url: clips/a.mp4\n    fps: 5\n",
     "-   id: b\n    url: clips/b.mp4\n"),
    ("detector:\n    model: m.onnx\nstreams:\n    - id: a\n      url: clips/a.mp4\n      fps: 5\n",
     "    - id: b\n      url: clips/b.mp4\n"),
], ids=["dash-at-the-key", "four-spaces", "four-spaces-dash-indented"])
def test_a_change_keeps_how_the_file_indents_its_lists_and_sections(tmp_path, text, added):
    """Before, the whole file was indented anew in one style (2, then "  - ") by its first change."""
    doc = ConfigDocument.read(write(tmp_path, text))
    doc.put("streams", "b", {"url": "clips/b.mp4"})
    assert doc.text() == text + added
    doc.remove("streams", "b")
    assert doc.text() == text


def test_the_lines_above_the_document_start_are_kept(tmp_path):
    """Before, the comments above `---` (an editor's schema line, say) and the `---` itself were dropped."""
    text = ("# yaml-language-server: $schema=./streamweave.schema.json\n# site config, north\n---\n"
            "detector:\n  model: m.onnx\nstreams:\n  - id: a\n    url: clips/a.mp4\n")
    doc = ConfigDocument.read(write(tmp_path, text))
    doc.put("streams", "b", {"url": "clips/b.mp4"})
    assert doc.text() == text + "  - id: b\n    url: clips/b.mp4\n"
    doc.remove("streams", "b")
    assert doc.text() == text
    assert [stream.id for stream in doc.validate().streams] == ["a"]


def test_a_file_with_windows_line_ends_keeps_them(tmp_path):
    """Before, the first change through the API wrote every line of the file anew with a Unix line end."""
    path = tmp_path / "site.yaml"
    path.write_bytes(b"# site config\r\ndetector:\r\n  model: m.onnx\r\n"
                     b"streams:\r\n  - id: a\r\n    url: clips/a.mp4\r\n")
    before = path.read_bytes()
    doc = ConfigDocument.read(path)
    doc.put("streams", "b", {"url": "clips/b.mp4"})
    doc.commit(doc.stage())
    assert path.read_bytes() == before + b"  - id: b\r\n    url: clips/b.mp4\r\n"


def test_a_long_polygon_stays_on_its_line(tmp_path):
    """Before, every flow list past 80 columns (a zone drawn with a few points on a 1080p camera) was wrapped,
    the ones the change did not touch included, mid-point."""
    polygon = [[412, 630], [980, 612], [1204, 880], [860, 1040], [300, 1010], [250, 800], [330, 700]]
    text = HEAD + f"zones:\n  - name: dock\n    polygon: {polygon}\n"
    doc = ConfigDocument.read(write(tmp_path, text))
    doc.put("zones", "yard", {"polygon": polygon})
    assert doc.text() == text + f"  - name: yard\n    polygon: {polygon}\n"


# -- a removed entry's comments ----------------------------------------------------------------------------------
CAMERAS = """\
# site config
streams:  # the cameras
  # front door camera, ask Bob before changing
  - id: front
    url: fake://front?fps=5
  # back door camera (PoE switch port 7)
  - id: back
    url: fake://back?fps=5  # the old one
  # loading dock
  # (two lines)
  - id: dock
    url: fake://dock?fps=5

# the detector
detector:  # fake engine for tests
  model: fake
"""


@pytest.mark.parametrize("name, expected", [
    ("front", """\
# site config
streams:  # the cameras
  # back door camera (PoE switch port 7)
  - id: back
    url: fake://back?fps=5  # the old one
  # loading dock
  # (two lines)
  - id: dock
    url: fake://dock?fps=5

# the detector
detector:  # fake engine for tests
  model: fake
"""),
    ("back", """\
# site config
streams:  # the cameras
  # front door camera, ask Bob before changing
  - id: front
    url: fake://front?fps=5
  # loading dock
  # (two lines)
  - id: dock
    url: fake://dock?fps=5

# the detector
detector:  # fake engine for tests
  model: fake
"""),
    ("dock", """\
# site config
streams:  # the cameras
  # front door camera, ask Bob before changing
  - id: front
    url: fake://front?fps=5
  # back door camera (PoE switch port 7)
  - id: back
    url: fake://back?fps=5  # the old one

# the detector
detector:  # fake engine for tests
  model: fake
"""),
])
def test_a_removed_camera_takes_its_comments_and_leaves_the_others(tmp_path, name, expected):
    doc = ConfigDocument.read(write(tmp_path, CAMERAS))
    doc.remove("streams", name)
    assert doc.text() == expected


def test_removing_one_camera_after_another(tmp_path):
    doc = ConfigDocument.read(write(tmp_path, CAMERAS))
    doc.remove("streams", "back")
    doc.remove("streams", "front")
    assert doc.text() == textwrap.dedent("""\
        # site config
        streams:  # the cameras
          # loading dock
          # (two lines)
          - id: dock
            url: fake://dock?fps=5

        # the detector
        detector:  # fake engine for tests
          model: fake
        """)
    doc.remove("streams", "dock")
    assert doc.text() == textwrap.dedent("""\
        # site config
        streams: [] # the cameras

        # the detector
        detector:  # fake engine for tests
          model: fake
        """)
    assert yaml.safe_load(doc.text())["streams"] == []


ZONES = """\
detector:
  model: m.onnx
zones:
  # the yard
  - name: yard
    polygon: [[0, 0], [100, 0], [100, 80]]
  # the gate: keep it small
  - name: gate
    polygon: [[0, 0], [10, 0], [10, 8]]
    classes:
      - person
      - car  # and vans
  # the dock
  - name: dock
    polygon:
      - [0, 0]
      - [5, 0]
      - [5, 5]
  # the road, last
  - name: road
    polygon: [[0, 0], [50, 0], [50, 50]]
"""


@pytest.mark.parametrize("name", ["yard", "gate", "dock", "road"])
def test_a_removed_zone_takes_its_comments_whatever_its_last_line_is(tmp_path, name):
    doc = ConfigDocument.read(write(tmp_path, ZONES))
    doc.remove("zones", name)
    assert doc.text() == re.sub(rf"  # the {name}.*?(?=  # the |\Z)", "", ZONES, flags=re.S)
    assert [zone.name for zone in doc.validate().zones] == [z for z in ["yard", "gate", "dock", "road"] if z != name]


BLANKS = """\
detector:
  model: m.onnx
streams:
  - id: a
    url: clips/a.mp4

  # b
  - id: b
    url: clips/b.mp4

  - id: c
    url: clips/c.mp4

# the end
"""


@pytest.mark.parametrize("name, expected", [
    ("a", "detector:\n  model: m.onnx\nstreams:\n  # b\n  - id: b\n    url: clips/b.mp4\n\n"
          "  - id: c\n    url: clips/c.mp4\n\n# the end\n"),
    ("b", "detector:\n  model: m.onnx\nstreams:\n  - id: a\n    url: clips/a.mp4\n\n"
          "  - id: c\n    url: clips/c.mp4\n\n# the end\n"),
    ("c", "detector:\n  model: m.onnx\nstreams:\n  - id: a\n    url: clips/a.mp4\n\n"
          "  # b\n  - id: b\n    url: clips/b.mp4\n\n# the end\n"),
])
def test_entries_apart_by_blank_lines_stay_apart_by_one(tmp_path, name, expected):
    doc = ConfigDocument.read(write(tmp_path, BLANKS))
    doc.remove("streams", name)
    assert doc.text() == expected


def test_a_flow_style_list_loses_just_the_entry(tmp_path):
    doc = ConfigDocument.read(write(tmp_path, HEAD + "streams: [{id: a, url: x}, {id: b, url: y}]  # both\n"))
    doc.remove("streams", "a")
    assert yaml.safe_load(doc.text())["streams"] == [{"id": "b", "url": "y"}] and "# both" in doc.text()


def test_an_entry_whose_anchor_another_entry_refers_to_is_removed_and_the_other_keeps_its_values(tmp_path):
    text = HEAD + ("zones:\n  - &base\n    name: base\n    polygon: [[0, 0], [100, 0], [100, 80]]\n"
                   "  - <<: *base\n    name: other\n")
    doc = ConfigDocument.read(write(tmp_path, text))
    doc.remove("zones", "base")
    assert yaml.safe_load(doc.text())["zones"] == [{"name": "other", "polygon": [[0, 0], [100, 0], [100, 80]]}]


# -- a write that fails ------------------------------------------------------------------------------------------
def _full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("step", ["fsync", "chmod"])
def test_a_failed_write_leaves_the_file_and_nothing_beside_it(tmp_path, monkeypatch, step):
    path = write(tmp_path, CAMERAS)
    doc = ConfigDocument.read(path)
    doc.remove("streams", "back")
    monkeypatch.setattr(document.os, step, _full_disk)
    with pytest.raises(PipelineError, match="No space left on device"):
        doc.stage()
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["site.yaml"]
    assert path.read_text() == CAMERAS


def test_a_write_that_cannot_finish_the_text_leaves_nothing_beside_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, CAMERAS)
    doc = ConfigDocument.read(path)

    class Full:  # the staged file, on a disk that fills up on the first write
        def __init__(self, fd, *args, **kwargs):
            self.file = open(fd, *args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(document.os, "fdopen", Full)
    with pytest.raises(PipelineError, match="No space left on device"):
        doc.stage()
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["site.yaml"]
    assert path.read_text() == CAMERAS


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_written_change_keeps_the_file_s_owner_and_mode(tmp_path):
    """Before, a service running as root (in a container, say) took the file it wrote from its owner, who could then
    no longer edit it."""
    path = write(tmp_path, CAMERAS)
    os.chown(path, 12345, 23456)
    path.chmod(0o640)
    doc = ConfigDocument.read(path)
    doc.remove("streams", "back")
    doc.commit(doc.stage())
    assert "back" not in path.read_text()
    assert (path.stat().st_uid, path.stat().st_gid, path.stat().st_mode & 0o7777) == (12345, 23456, 0o640)


def test_a_written_change_leaves_nothing_beside_the_file(tmp_path):
    path = write(tmp_path, CAMERAS)
    doc = ConfigDocument.read(path)
    doc.remove("streams", "back")
    doc.commit(doc.stage())
    assert sorted(os.listdir(tmp_path)) == ["site.yaml"]
    assert "back" not in path.read_text() and "# loading dock" in path.read_text()
