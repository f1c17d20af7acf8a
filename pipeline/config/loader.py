"""Load a YAML file into a PipelineConfig; every error names the file, line and key path.

A key given twice in one mapping is an error (YAML parsers silently keep the last, so half of a
section would be ignored).

`${NAME}` in a value is the environment variable NAME (`${NAME:-default}` when it may be unset), so
secrets (an API token, a camera's password) can live in the service's environment file instead of the YAML.
"""
from __future__ import annotations

import contextlib
import datetime
import difflib
import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Iterable, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from pipeline import plugins
from pipeline.config.fields import KeyPathError, key_path
from pipeline.config.models import PipelineConfig
from pipeline.errors import ConfigError


def load_config(path: str | Path) -> PipelineConfig:
    """Parse and validate `path`. Relative paths inside the file stay relative to the working directory.

    Raises ConfigError with one line per problem: `configs/site.yaml:23: streams -> 2 -> lane: ...`.
    """
    return parse_config(config_text(path), path)


def config_text(path: str | Path, newline: str | None = None) -> str:
    """The text of config file `path` (UTF-8, as YAML is; line ends read as `open`'s `newline` says: by default
    each is a "\n"); ConfigError naming it when it cannot be read or is not UTF-8."""
    try:
        with Path(path).open(encoding="utf-8", newline=newline) as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: the config file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}, "
                          "written in another encoding such as Windows-1252?); save it as UTF-8") from None


def parse_config(text: str, path: str | Path = "<config>") -> PipelineConfig:
    """Validate the YAML `text` of a config; errors name `path` and the line in `text`."""
    path = Path(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the file must be a mapping with at least 'streams' and 'detector'")
    lines = key_lines(text, path)
    data = expanded(data, path, lines)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        described = (_line(path, lines, problem.loc, problem.message) for problem in problems_of(exc, data))
        raise ConfigError("\n".join(dict.fromkeys(described))) from None


def located(path: str | Path, problems: Iterable[KeyPathError]) -> ConfigError:
    """One ConfigError for problems found in a config after it was read (`pipeline.runtime.preflight`), each
    line naming the file, line and key path as the loader's own errors do (the file is read again for its
    lines)."""
    path = Path(path)
    try:
        lines = _key_lines(yaml.compose(config_text(path)))
    except (ConfigError, yaml.YAMLError):  # gone, or changed, since it was read
        lines = {}
    return ConfigError("\n".join(_line(path, lines, problem.loc, problem.message) for problem in problems))


def key_lines(text: str, path: str | Path) -> dict[tuple, int]:
    """The line of every key path of YAML `text` (valid: it parsed); ConfigError naming `path` and the line of each
    key given twice in one mapping."""
    repeated: list[str] = []
    lines = _key_lines(yaml.compose(text), repeated=repeated)
    if repeated:
        raise ConfigError("\n".join(f"{path}:{problem}" for problem in repeated))
    return lines


def expanded(data: dict, path: str | Path, lines: dict[tuple, int]) -> dict:
    """`data` with each `${NAME}` read from the environment (`_expand`); ConfigError naming `path`, the line (`lines`,
    from `key_lines`) and the key of one that is not set."""
    try:
        return _expand(data, ())
    except _Unset as unset:
        raise ConfigError(_line(Path(path), lines, unset.loc, unset.message)) from None


def _line(path: Path, lines: dict[tuple, int], loc: tuple, message: str) -> str:
    """One line per problem: characters that are not printable (a control character in a value) are escaped,
    so none breaks the line or hides in it."""
    text = f"{path}:{_nearest_line(lines, loc)}: {key_path(loc)}: {message}"
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def problems_of(exc: ValidationError, data: Any, root: type[BaseModel] = PipelineConfig) -> list[KeyPathError]:
    """The problems pydantic found validating `data` as a `root`, each at its key path in `data`."""
    return [_problem(err, data, root) for err in exc.errors()]


def _problem(err: dict, data: Any, root: type[BaseModel]) -> KeyPathError:
    loc, message = _keys(err["loc"], data), err["msg"]
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, KeyPathError):  # raised by a model validator: its path is relative to that model
        loc, message = loc + original.loc, original.message
    if err["type"] == "extra_forbidden":
        meant = difflib.get_close_matches(str(loc[-1]), _known_keys(root, loc[:-1], data), n=1)
        message = f"unknown key; did you mean '{meant[0]}'? (every key: configs/example.yaml)" if meant else \
            "unknown key; check the spelling against configs/example.yaml"
    # `id: yes`, `id: 0123`, `id: 2024-03-14`
    if err["type"] == "string_type" and isinstance(err.get("input"), (bool, int, float, datetime.date)):
        message += f" (YAML read the value as {_read_as(err['input'])}): put it in quotes as you wrote it"
    if "input" in err and err["input"] is None and err["type"] != "invalid_key":  # `url:` left blank, `streams:`
        needs = _EMPTY.get(err["type"], "it a value")  # with every entry commented out
        message = f"is empty (YAML reads a key with nothing after it as null): give {needs}"
        model = _model_at(root, loc[:-1], data) if loc else None
        field = model.model_fields.get(loc[-1]) if model else None
        if field is not None and not field.is_required():  # a required one would then be missing
            message += ", or remove the key for its default"
    return KeyPathError(loc, message)


def _read_as(value: Any) -> str:
    """A value YAML read from a plain scalar, as a user would recognise it."""
    if isinstance(value, datetime.datetime):
        return f"the time {value.isoformat()}"
    return f"the date {value.isoformat()}" if isinstance(value, datetime.date) else repr(value)


_EMPTY = {"list_type": "its entries under it", "model_type": "its keys under it", "dict_type": "its keys under it"}
"""What a key left empty needs, by what pydantic wanted there (else: a value)."""


def _known_keys(root: type[BaseModel], loc: tuple, data: Any) -> list[str]:
    """The keys the mapping at key path `loc` of `data`, a `root`, may hold as the models declare them ([] where
    they cannot tell)."""
    model = _model_at(root, loc, data)
    return list(model.model_fields) if model else []


def _model_at(root: type[BaseModel], loc: tuple, data: Any) -> type[BaseModel] | None:
    """The model of the mapping at key path `loc` of `data`, a `root`, as the models declare it (None where they
    cannot tell)."""
    kind: Any = root
    for part in loc:
        kind = _model_or_list(kind, data)
        if _is_model(kind) and part in kind.model_fields:
            kind = kind.model_fields[part].annotation
        elif isinstance(part, int) and get_origin(kind) is list:
            kind = get_args(kind)[0]
        else:
            return None
        held = isinstance(data, dict) and part in data or isinstance(data, list) and part < len(data)
        data = data[part] if held else None
    kind = _model_or_list(kind, data)
    return kind if _is_model(kind) else None


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _model_or_list(kind: Any, data: Any) -> Any:
    """`kind` without `Annotated` and `| None` (of a union, the member that is a model or a list); for a `sinks:`
    entry, the model its `type` registers."""
    while get_origin(kind) in (Annotated, Union, types.UnionType):
        members = [m for m in get_args(kind) if m is not type(None)]
        if get_origin(kind) is Annotated or len(members) == 1:
            kind = members[0]
        else:
            kind = next((m for m in members if get_origin(m) in (list, Annotated) or _is_model(m)), members[0])
    if kind is Any and isinstance(data, dict) and isinstance(data.get("type"), str):
        with contextlib.suppress(ValueError):  # an unknown type: its own error says so
            return plugins.output(data["type"]).config
    return kind


def _keys(loc: tuple, data: Any) -> tuple:
    """`loc` without the names pydantic gives the members of a union (`literal['auto']`, `constrained-int`),
    which are no keys of the file: a part stays when the data has it, or when it names a key that is missing."""
    keys: list = []
    for part in loc:
        if isinstance(data, dict) and part in data or (isinstance(data, list) and isinstance(part, int)
                                                       and 0 <= part < len(data)):
            data = data[part]
        elif isinstance(part, str) and ("[" in part or "-" in part):
            continue
        else:
            data = None
        keys.append(part)
    return tuple(keys)


def _nearest_line(lines: dict[tuple, int], loc: tuple) -> int:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _key_lines(node, prefix: tuple = (), repeated: list[str] | None = None) -> dict[tuple, int]:
    """Map every key path of the YAML node tree to its 1-based line number; a key given twice in one
    mapping is added to `repeated` as "LINE: key path: ..."."""
    out = {prefix: node.start_mark.line + 1} if node is not None else {}
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple, int] = {}
        for key, value in node.value:
            where, line = prefix + (key.value,), key.start_mark.line + 1
            if (key.tag, key.value) in first and repeated is not None:
                repeated.append(f"{line}: {key_path(where)}: duplicate key (first at line "
                                f"{first[key.tag, key.value]}); YAML would keep only this one: merge the two into one")
            first.setdefault((key.tag, key.value), line)
            out[where] = line
            out.update({k: v for k, v in _key_lines(value, where, repeated).items() if k != where})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(_key_lines(item, prefix + (i,), repeated))
    return out


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Unset(Exception):
    def __init__(self, loc: tuple, message: str):
        self.loc, self.message = loc, message


def _expand(value: Any, loc: tuple) -> Any:
    """`${NAME}` and `${NAME:-default}` (the default also when NAME is empty) in every string of the parsed file, from
    the environment; `$${` is a `${` as written, and any other `${` is refused (`_Unset`), not taken literally."""
    if isinstance(value, dict):
        return {key: _expand(item, loc + (key,)) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, loc + (i,)) for i, item in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def variable(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if default is not None and not found:  # unset or empty, as a shell reads `:-`
            return default
        if found is None:
            raise _Unset(loc, f"environment variable {name} is not set; set it (e.g. in the service's environment "
                              f"file) or give a default: ${{{name}:-value}}")
        return found

    pieces = value.split("$${")  # `$${` is a `${` as written
    if any("${" in _VARIABLE.sub("\0", piece) for piece in pieces):  # taken literally, a token would be this text
        raise _Unset(loc, f"'{value}' holds a '${{' that is no variable this file reads: write ${{NAME}} or "
                          "${NAME:-default} (NAME: letters, digits and _), or $${ for a '${' as it is")
    return "${".join(_VARIABLE.sub(variable, piece) for piece in pieces)
