"""A config file as an editable document: what the control API changes is written back to the file, with
its comments, key order and layout kept (`ruamel.yaml` round-trip), so the file stays the source of truth
and a later reload never undoes a change.

    doc = ConfigDocument.read("site.yaml")
    doc.put("zones", "dock", {"polygon": [[0, 0], [100, 0], [100, 80]]})
    config = doc.validate()            # the whole file, as `load_config` would see it
    staged = doc.stage()               # written beside the file and synced, not yet in its place
    doc.commit(staged)                 # atomically: readers see the old file or the new one
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from pipeline.config.loader import parse_config
from pipeline.config.models import PipelineConfig
from pipeline.errors import ConfigError, NoSuchItem, PipelineError

KEYS = {"streams": "id", "zones": "name", "lines": "name", "alerts": "name"}
"""The lists the API edits entry by entry, and the key that names an entry."""


class ConfigDocument:
    """path: the file (None: a document of a config made in code, never saved)."""

    def __init__(self, data: CommentedMap, path: Path | None = None, text: str = ""):
        self.data, self.path, self.read_text = data, path, text  # read_text: the file as it was read

    @classmethod
    def read(cls, path: str | Path) -> "ConfigDocument":
        path = Path(path)
        try:
            text = path.read_text()
            data = _yaml().load(text)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
        except Exception as exc:  # noqa: BLE001 - ruamel's parser errors share no base class worth naming
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, CommentedMap):
            raise ConfigError(f"{path}:1: the file must be a mapping with at least 'streams' and 'detector'")
        return cls(data, path, text)

    @classmethod
    def of(cls, config: PipelineConfig) -> "ConfigDocument":
        """A document holding `config`'s keys that were set (for a pipeline whose config has no file)."""
        return cls(_node(config.model_dump(mode="json", exclude_unset=True)))

    def entries(self, section: str) -> list[dict]:
        return [dict(item) for item in self.data.get(section) or []]

    def get(self, section: str, name: str) -> dict:
        return dict(self._find(section, name)[1])

    def put(self, section: str, name: str, entry: dict) -> bool:
        """Set the entry `name` of `section` to `entry` (its key added); True when it is new. An existing entry
        keeps its place and the comments around it."""
        key = KEYS[section]
        value = _node({key: name, **{k: v for k, v in entry.items() if k != key}})
        items = self.data.get(section)
        if not isinstance(items, CommentedSeq) or (not items and items.fa.flow_style()):
            items = self.data[section] = CommentedSeq(items or [])
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get(key) == name:
                for old in [k for k in item if k not in value]:
                    del item[old]
                item.update(value)  # in place: the entry's comments stay
                return False
        items.append(value)
        return True

    def remove(self, section: str, name: str) -> None:
        i, _ = self._find(section, name)
        del self.data[section][i]

    def text(self) -> str:
        return _dump(self.data)

    def validate(self) -> PipelineConfig:
        """The document as `load_config` would read it; ConfigError naming the file, line and key path."""
        return parse_config(self.text(), self.path or "<config>")

    def stage(self) -> Path | None:
        """Write the document to a temporary file beside its file and sync it (None without a file);
        PipelineError when the directory is not writable. `commit` puts it in place, `discard` drops it."""
        if self.path is None:
            return None
        target = self.path.resolve()  # a link to the config stays a link
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            with os.fdopen(fd, "w") as out:
                out.write(self.text())
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        except OSError as exc:
            raise PipelineError(f"{self.path}: changes are written back to the config file, but it cannot be "
                                f"written here ({exc.strerror}); nothing was changed. Make the file and its "
                                "directory writable by the service's user") from None
        return Path(tmp)

    def commit(self, staged: Path | None) -> None:
        if staged is None:
            return
        target = self.path.resolve()
        os.replace(staged, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    @staticmethod
    def discard(staged: Path | None) -> None:
        if staged is not None:
            staged.unlink(missing_ok=True)

    def _find(self, section: str, name: str) -> tuple[int, CommentedMap]:
        key = KEYS[section]
        for i, item in enumerate(self.data.get(section) or []):
            if isinstance(item, dict) and item.get(key) == name:
                return i, item
        names = [item.get(key) for item in self.data.get(section) or [] if isinstance(item, dict)]
        raise NoSuchItem(f"{section}: no entry with {key} '{name}'; there are: {names}")


def _yaml() -> YAML:
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _dump(data: Any) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def _node(value: Any) -> Any:
    """Plain data as YAML nodes: mappings in block style, lists of scalars and lists of points in flow style
    (`[car, truck]`, `[[0, 0], [120, 40]]`) as people write them."""
    if isinstance(value, dict):
        node = CommentedMap()
        for key, item in value.items():
            node[key] = _node(item)
        return node
    if isinstance(value, (list, tuple)):
        node = CommentedSeq(_node(item) for item in value)
        if all(_scalar(item) or (isinstance(item, (list, tuple)) and all(map(_scalar, item))) for item in value):
            node.fa.set_flow_style()
        return node
    return value


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool))
