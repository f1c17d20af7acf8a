"""A sharded instance's camera changes through the API: those naming a camera of another shard are refused
before the shared config file is touched (the instance that runs the camera changes it)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.errors import FileChanged, PartiallyApplied
from pipeline.runtime.placement import OtherShard, Placement, Shard, shard_of
from pipeline.service.control import Control

FILE = """plugins: [pipeline.testing]
detector: {model: fake, engine: fake}
streams:
{streams}
"""


@pytest.mark.parametrize("change", ["add", "change", "remove"])
def test_a_change_of_another_shards_camera_is_refused_and_leaves_the_shared_file_as_it_was(tmp_path, change):
    other = next(f"cam-{i}" for i in range(100) if shard_of(f"cam-{i}", 2) == 1)
    path = tmp_path / "site.yaml"
    path.write_text(FILE.replace("{streams}", f"  - {{id: {other}, url: 'fake://{other}?fps=10'}}"))
    before = path.read_text()
    control = Control(SimpleNamespace(placement=Placement(Shard(0, 2))), path)
    calls = {"add": lambda: control.add_stream({"id": other, "url": f"fake://{other}?fps=10"}),
             "change": lambda: control.change_stream(other, {"url": f"fake://{other}?fps=5"}),
             "remove": lambda: control.remove_stream(other)}
    with pytest.raises(OtherShard, match=rf"stream '{other}' belongs to shard 1/2; this instance runs shard 0/2"):
        calls[change]()
    assert path.read_text() == before


def test_a_hand_edit_made_while_an_api_change_is_applied_is_kept_and_the_api_says_so(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(FILE.replace("{streams}", "  - {id: a, url: 'fake://a?fps=10'}"))
    edited = path.read_text() + "# a zone added by hand while the change was being applied\n"

    class Runner:  # the change takes a while (a camera restarting); the operator edits the file meanwhile
        placement = SimpleNamespace(shard=None)

        def reconfigure(self, config):
            path.write_text(edited)
            return SimpleNamespace(summary=lambda: "a restarted")

    control = Control(Runner(), path)
    with pytest.raises(PartiallyApplied, match="except writing it to .* the file was edited while the change was"):
        control.change_stream("a", {"url": "fake://a?fps=5"})
    assert path.read_text() == edited and not list(tmp_path.glob(".site.yaml.*"))  # nothing staged is left
    with pytest.raises(FileChanged, match="reload it first"):  # the next change through the API waits for a reload
        control.change_stream("a", {"url": "fake://a?fps=2"})


def test_a_reload_that_applied_all_but_one_camera_lets_the_next_api_change_through(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(FILE.replace("{streams}", "  - {id: a, url: 'fake://a?fps=10'}"))
    configs = []

    class Runner:  # camera b cannot be opened on this host: the reload applies the rest and says so
        placement = SimpleNamespace(shard=None)

        def reconfigure(self, config):
            configs.append(config)
            if len(configs) == 1:
                raise PartiallyApplied("applied, except: b: its device is busy")
            return SimpleNamespace(summary=lambda: "a changed")

    control = Control(Runner(), path)
    path.write_text(path.read_text() + "  - {id: b, url: 'fake://b?fps=10'}\n")
    with pytest.raises(PartiallyApplied, match="b: its device is busy"):
        control.reload()
    control.change_stream("a", {"url": "fake://a?fps=5"})  # the file was applied: no "reload it first"
    assert [s.id for s in configs[-1].streams] == ["a", "b"] and "fps=5" in path.read_text()
