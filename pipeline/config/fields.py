"""What every config model shares: strict models, bounded value types, and errors that know their key path.

Every value of a config has a bound, so a typo (`port: 99999`, `timeout_s: 0`, `input_size: [0, 0]`) is
refused when the file is read rather than found at run time, and never a value that is not finite.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Unknown keys are errors; models are frozen; NaN and infinity are refused wherever a float is taken."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KeyPathError(ValueError):
    """An error that knows the key path it belongs to, relative to the model that raised it (the loader
    prefixes the model's own path and adds the file and line)."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


def key_path(loc: tuple) -> str:
    """`streams -> 2 -> lane`: keys as written, quoted when blank, with surrounding spaces or unprintable
    characters, or no string (`null:` as a key)."""
    return " -> ".join(map(_key, loc)) or "(top level)"


def _key(part: Any) -> str:
    plain = isinstance(part, int) and not isinstance(part, bool) or isinstance(part, str) and part.isprintable() \
        and part.strip() == part != ""
    return str(part) if plain else repr(part)


Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]
"""A name that other keys refer to (a lane, zone, line or alert rule): not empty, no surrounding spaces."""


def _has_letter_or_digit(stream_id: str) -> str:
    if not any(c.isascii() and c.isalnum() for c in stream_id):
        raise KeyPathError((), f"{stream_id!r} has no letter or digit; a stream id names a folder (the media sink's) "
                               "and a part of the API's paths, where '.' and '..' mean this folder and the one above: "
                               "put a letter or digit in it")
    return stream_id


StreamId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$"), AfterValidator(_has_letter_or_digit)]
"""A stream id: 1 to 64 letters, digits, `_`, `.`, `:` or `-`, at least one a letter or digit."""

Fraction = Annotated[float, Field(ge=0, le=1)]
"""A score or threshold between 0 and 1."""

Coordinate = Annotated[float, Field(ge=-100_000, le=100_000)]
"""A source-pixel coordinate (may lie outside the frame, to draw a line past its edge)."""

HOUR_S, DAY_S = 3600.0, 86400.0


def _not_blank(path: Path) -> Path:
    if str(path) in ("", ".") or "\x00" in str(path):
        raise ValueError("needs a file or folder name")
    return path


FilePath = Annotated[Path, AfterValidator(_not_blank)]
"""A path the pipeline reads or writes: not empty (where it exists and is writable is checked before a run)."""


def same_place(path: Path) -> str:
    """The absolute form of `path` (user folder expanded, `..` resolved), to tell whether two keys name one file."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))
