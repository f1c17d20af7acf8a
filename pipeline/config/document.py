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

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from pipeline.config.loader import config_text, parse_config
from pipeline.config.models import PipelineConfig
from pipeline.errors import ConfigError, NoSuchItem, PipelineError

KEYS = {"streams": "id", "zones": "name", "lines": "name", "alerts": "name"}
"""The lists the API edits entry by entry, and the key that names an entry."""


class ConfigDocument:
    """path: the file (None: a document of a config made in code, never saved)."""

    def __init__(self, data: CommentedMap, path: Path | None = None, text: str = "", newline: str = "\n"):
        self.data, self.path, self.read_text = data, path, text  # read_text: the file as it was read
        self.newline = newline  # how the file ends its lines ("\r\n": written so again)
        self.head, body = _head(text)  # ruamel drops what is above a `---`: written back as it was
        self.indent = _indent(data, body) if body else _INDENT  # written as the file indents, not anew

    @classmethod
    def read(cls, path: str | Path) -> "ConfigDocument":
        path = Path(path)
        raw = config_text(path, newline="")  # as it is: its line ends are kept
        text = raw.replace("\r\n", "\n").replace("\r", "\n")  # as `config_text(path)` reads it
        try:
            data = _yaml().load(_head(text)[1])
        except Exception as exc:  # noqa: BLE001 - ruamel's parser errors share no base class worth naming
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, CommentedMap):
            raise ConfigError(f"{path}:1: the file must be a mapping with at least 'streams' and 'detector'")
        return cls(data, path, text, "\r\n" if raw.partition("\n")[0].endswith("\r") else "\n")

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
                for k, v in value.items():  # in place: the entry's comments stay
                    if k not in item or not _same(item[k], v):
                        item[k] = v  # a value that did not change keeps how the file writes it
                return False
        items.append(value)
        return True

    def remove(self, section: str, name: str) -> None:
        """Take the entry `name` out of `section`, with the comment lines directly above it and those at the
        end of its lines; the comments above the next entry stay with that entry."""
        i, _ = self._find(section, name)
        items = self.data[section]
        if not isinstance(items, CommentedSeq) or items.fa.flow_style():
            del items[i]
            return
        # ruamel keeps a comment between two entries at the end of the first one (and the one above the first
        # entry on the section's key), so `del items[i]` would take the next entry's comment with it and leave
        # the removed one's: the entry's lines are taken out of the text instead, and the text read again.
        text = _dump(self.data, self.indent)
        data = _yaml(self.indent).load(text)
        items = data[section]
        lines = text.splitlines(keepends=True)
        keys = list(data)
        after = keys[keys.index(section) + 1:]
        start = items.lc.item(i)[0]
        if i + 1 < len(items):
            end = items.lc.item(i + 1)[0]
        else:
            end = data.lc.key(after[0])[0] if after else len(lines)
        while end > start + 1 and _between(lines[end - 1]):  # the comments above what follows stay
            end -= 1
        while start > 0 and lines[start - 1].strip() == "-":
            start -= 1  # an entry written on the line after its "-"
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1  # the comment lines directly above the entry are its own
        if (i == 0 and len(items) > 1) or (start > 0 and not lines[start - 1].strip()):
            while end < len(lines) and not lines[end].strip():
                end += 1  # one blank line between entries, not two (nor one under the section's key)
        try:
            data = _yaml(self.indent).load("".join(lines[:start] + lines[end:]))
        except YAMLError:  # e.g. the entry held an anchor another entry refers to: ruamel moves it on its own
            del self.data[section][i]
            return
        if data.get(section) is None:
            data[section] = CommentedSeq()  # the last entry taken out: an empty list, not null
        self.data = data

    def text(self) -> str:
        return self.head + _dump(self.data, self.indent)

    def validate(self) -> PipelineConfig:
        """The document as `load_config` would read it; ConfigError naming the file, line and key path."""
        return parse_config(self.text(), self.path or "<config>")

    def stage(self) -> Path | None:
        """Write the document to a temporary file beside its file and sync it (None without a file);
        PipelineError when the directory is not writable. `commit` puts it in place, `discard` drops it."""
        if self.path is None:
            return None
        target = self.path.resolve()  # a link to the config stays a link
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8", newline=self.newline) as out:
                out.write(self.text())
                out.flush()
                os.fsync(out.fileno())
            owner = target.stat()
            with contextlib.suppress(PermissionError):  # only root gives a file to another user
                os.chown(tmp, owner.st_uid, owner.st_gid)  # the file stays its owner's to edit
            os.chmod(tmp, owner.st_mode & 0o7777)  # after chown, which clears set-id bits
        except BaseException as exc:
            if tmp is not None:  # a full disk or a failed write leaves no partial file behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if not isinstance(exc, OSError):
                raise
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


_INDENT = (2, 4, 2)
"""How a file with no block mapping or list below its top level is indented: `mapping`, `sequence` and `offset`
as `YAML.indent` takes them (`  - id: a` / `    url: ...`)."""


class _Representer(RoundTripRepresenter):
    """Writes a new float so the YAML 1.1 loader reads it back as one: with a point in its mantissa (`1.0e-07`;
    Python writes `1e-07`, which YAML 1.1 reads as a string). Floats read from the file keep their own form."""

    def represent_float(self, data: float) -> Any:
        mantissa, exp, exponent = repr(data).partition("e")
        if not exp or "." in mantissa:
            return super().represent_float(data)
        return self.represent_scalar("tag:yaml.org,2002:float", f"{mantissa}.0e{exponent}")


_Representer.add_representer(float, _Representer.represent_float)


def _yaml(indent: tuple[int, int, int] = _INDENT) -> YAML:
    yaml = YAML()  # round-trip
    yaml.Representer = _Representer
    yaml.preserve_quotes = True
    yaml.width = 4096  # a line as long as it is: a zone's polygon is not wrapped mid-point at 80 columns
    mapping, sequence, offset = indent
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _dump(data: Any, indent: tuple[int, int, int] = _INDENT) -> str:
    out = io.StringIO()
    _yaml(indent).dump(data, out)
    return out.getvalue()


_START = re.compile(r"---[ \t]*(#.*)?\r?\n")


def _head(text: str) -> tuple[str, str]:
    """`text` as what is above its document start `---` (comments, directives and the `---` line; '' without
    one) and the rest."""
    start = 0
    for line in text.splitlines(keepends=True):
        bare = line.lstrip("\ufeff")  # a byte order mark
        if _START.fullmatch(bare):
            return text[:start + len(line)], text[start + len(line):]
        if bare.strip() and not bare.lstrip().startswith(("#", "%")):
            break
        start += len(line)
    return "", text


def _indent(data: CommentedMap, text: str) -> tuple[int, int, int]:
    """How `text` indents, from its first block mapping and its first block list under a top-level key (ruamel
    writes every one alike: a file is written in the style it has rather than indented anew)."""
    lines = text.splitlines()
    mapping, sequence, offset = _INDENT
    found = set()
    for key, value in data.items():
        if not isinstance(value, (CommentedMap, CommentedSeq)) or not value or value.fa.flow_style():
            continue
        column = data.lc.key(key)[1]
        if isinstance(value, CommentedMap) and "map" not in found:
            mapping = value.lc.key(next(iter(value)))[1] - column
            found.add("map")
        elif isinstance(value, CommentedSeq) and "seq" not in found:
            line, item = value.lc.item(0)
            dash = lines[line] if line < len(lines) else ""
            if dash.lstrip().startswith("- "):  # not an entry written on the line after its "-"
                offset, sequence = len(dash) - len(dash.lstrip()) - column, item - column
                found.add("seq")
    return mapping, sequence, offset


def _node(value: Any) -> Any:
    """Plain data as YAML nodes: mappings in block style, lists of scalars and lists of points in flow style
    (`[car, truck]`, `[[0, 0], [120, 40]]`) as people write them; a string that the loader would not read
    back as that string when written plain (`no`, `on`, `1:30`, `0x1F`, `null`, `~`: ruamel writes YAML 1.2,
    the loader reads YAML 1.1) in double quotes."""
    if isinstance(value, dict):
        node = CommentedMap()
        for key, item in value.items():
            node[_node(key)] = _node(item)
        return node
    if isinstance(value, (list, tuple)):
        node = CommentedSeq(_node(item) for item in value)
        if all(_scalar(item) or (isinstance(item, (list, tuple)) and all(map(_scalar, item))) for item in value):
            node.fa.set_flow_style()
        return node
    if type(value) is str and _PYYAML.resolve(yaml.ScalarNode, value, (True, False)) != _STR:
        return DoubleQuotedScalarString(value)
    return value


_PYYAML = yaml.SafeLoader("")  # resolves plain scalars as the loader (`yaml.safe_load`) does
_STR = "tag:yaml.org,2002:str"


def _same(old: Any, new: Any) -> bool:
    """Whether `new` is the value `old` already is (then the file keeps writing it as it does)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return list(old) == list(new) and all(_same(old[key], new[key]) for key in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(map(_same, old, new))
    kinds = (bool, int, float, str, type(None))
    return old == new and [isinstance(old, t) for t in kinds] == [isinstance(new, t) for t in kinds]


def _between(line: str) -> bool:
    """A blank or comment line: between two entries, it belongs to what follows."""
    return not line.strip() or line.lstrip().startswith("#")


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool))
