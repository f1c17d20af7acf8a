"""MOTChallenge text files: `det.txt` in, tracker results out, `seqinfo.ini` for the frame count.

Row format (comma-separated, frames and ids 1-based, boxes x, y, w, h in pixels):
`frame, id, x, y, w, h, score, -1, -1, -1` (detections use id -1).
"""
from __future__ import annotations

import configparser
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import SourceError
from pipeline.types import Detections


@dataclass(frozen=True, slots=True)
class SeqInfo:
    """What a MOTChallenge `seqinfo.ini` says about a sequence."""

    name: str
    frame_rate: float
    length: int
    width: int
    height: int


MAX_FRAMES = 10_000_000
"""The largest frame number (and sequence length) read: four days at 30 fps, far beyond any benchmark
sequence; a larger one is a broken file, and the tracker would step through every frame up to it."""


def read_seqinfo(path: Path) -> SeqInfo:
    """Parse a `seqinfo.ini`; raises SourceError naming the file (and the line, where there is one) when
    it cannot be read, is not an INI file, or lacks a key or a sane value."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:  # -sig: a Windows tool's BOM
            parser.read_file(f)
    except FileNotFoundError as exc:
        raise SourceError(f"cannot read {path}: no such file; pass --seqinfo with the sequence's seqinfo.ini") from exc
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}; pass --seqinfo with the sequence's "
                          "seqinfo.ini") from exc
    except configparser.Error as exc:
        raise SourceError(f"{path}: not an INI file ({_first_line(exc)}); expected a [Sequence] section") from exc
    try:
        seq = parser["Sequence"]
        info = SeqInfo(seq["name"], float(seq["frameRate"]), int(seq["seqLength"]), int(seq["imWidth"]),
                       int(seq["imHeight"]))
    except (KeyError, ValueError) as exc:
        raise SourceError(f"{path}: [Sequence] needs name, frameRate, seqLength, imWidth, imHeight "
                          f"({_first_line(exc)})") from exc
    if not (math.isfinite(info.frame_rate) and info.frame_rate > 0 and 1 <= info.length <= MAX_FRAMES
            and info.width >= 1 and info.height >= 1):
        raise SourceError(f"{path}: [Sequence] needs frameRate > 0, seqLength 1..{MAX_FRAMES} and imWidth, imHeight "
                          f">= 1; got {info.frame_rate:g}, {info.length}, {info.width}, {info.height}")
    return info


def _first_line(exc: Exception) -> str:
    """An exception's message on one line (configparser's run over several), of bounded length."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "..."


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
"""What ends a line of a text file, as editors number them."""


def read_mot(path: Path) -> np.ndarray:
    """Load a MOT text file as an (N, >=7) float64 array (frame, id, x, y, w, h, score, ...).

    An empty file gives shape (0, 10). Raises SourceError naming the file and the line of the first bad
    row: fewer than 7 values, a value that is not a finite number, a frame number that is not a whole
    number in 1..MAX_FRAMES, or a negative width or height. Rows longer than the shortest are cut to it.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8-sig", errors="surrogateescape")  # -sig: a Windows tool's BOM
    except OSError as exc:
        raise SourceError(f"cannot read MOT file {path}: {exc.strerror}; check the --det path") from exc
    rows = []
    for lineno, line in enumerate(_LINE_BREAK.split(text), 1):  # not splitlines: \x1c-\x1e, \x85 are no line ends
        if line.strip():
            rows.append(_mot_row(line, f"{path}:{lineno}"))
    if not rows:
        return np.zeros((0, 10))
    width = min(len(r) for r in rows)
    return np.array([r[:width] for r in rows])


def _mot_row(line: str, where: str) -> list[float]:
    """One row's values; SourceError prefixed with `where` (file:line) when the row is not a MOT row."""
    expected = "expected frame,id,x,y,w,h,score,... (MOTChallenge)"
    values = []
    for field in line.split(","):
        try:
            value = float(field)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            shown = repr(field.strip()) if len(field) <= 40 else repr(field.strip()[:40]) + "..."
            raise SourceError(f"{where}: {shown} is not a finite number; {expected}")
        values.append(value)
    if len(values) < 7:
        raise SourceError(f"{where}: {len(values)} values where a row has at least 7; {expected}")
    frame = values[0]
    if frame != int(frame) or not 1 <= frame <= MAX_FRAMES:
        raise SourceError(f"{where}: frame {frame:g} is not a frame number (a whole number 1..{MAX_FRAMES}); "
                          f"{expected}")
    if values[4] < 0 or values[5] < 0:
        raise SourceError(f"{where}: width {values[4]:g} and height {values[5]:g} cannot be negative; {expected}")
    return values


def frames_of(table: np.ndarray, length: int | None = None):
    """Yield (frame number, Detections) for frames 1..last, including frames with no rows.

    table: (N, >=7) MOT rows. `length` extends the range to the sequence length when given.
    """
    frames = table[:, 0].astype(np.int64)
    order = np.argsort(frames, kind="stable")
    table, frames = table[order], frames[order]
    last = max(int(frames.max()) if len(frames) else 0, length or 0)
    bounds = np.searchsorted(frames, np.arange(1, last + 2))
    xyxy = np.concatenate([table[:, 2:4], table[:, 2:4] + table[:, 4:6]], axis=1).astype(np.float32)
    score = table[:, 6].astype(np.float32)
    for frame in range(1, last + 1):
        lo, hi = bounds[frame - 1], bounds[frame]
        yield frame, Detections(xyxy[lo:hi], score[lo:hi], np.zeros(hi - lo, np.int32))


def format_rows(frame: int, dets: Detections) -> list[str]:
    """MOT result lines for one frame's tracked detections (ids from `dets.track_id`)."""
    x1, y1, x2, y2 = np.asarray(dets.xyxy, np.float64).T
    return [
        f"{frame},{tid},{a:.2f},{b:.2f},{c - a:.2f},{d - b:.2f},{s:.4f},-1,-1,-1"
        for tid, a, b, c, d, s in zip(dets.track_id.tolist(), x1, y1, x2, y2, dets.score.tolist())
    ]


def write_mot(path: Path, lines: list[str]) -> None:
    """Write result lines (creating the folder); raises SourceError naming the path when it cannot."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("".join(line + "\n" for line in lines))
    except OSError as exc:
        raise SourceError(f"cannot write MOT results to {path}: {exc.strerror}") from exc


def interpolate_gaps(table: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill short holes in each track by linear interpolation of its box (offline post-processing).

    table: (N, >=7) MOT result rows. A track missing for 1..`max_gap` frames between two of its rows
    gets one row per missing frame, with the box interpolated and the score of the earlier row.
    Returns the rows plus the filled ones, sorted by frame then id. Only usable after the fact: an
    online tracker cannot know that a lost object will come back.
    """
    if len(table) == 0 or max_gap <= 0:
        return table
    table = table[np.lexsort((table[:, 0], table[:, 1]))]
    same_track = table[1:, 1] == table[:-1, 1]
    gap = table[1:, 0] - table[:-1, 0]
    holes = np.flatnonzero(same_track & (gap > 1) & (gap <= max_gap + 1))
    filled = [table]
    for i in holes:
        a, b = table[i], table[i + 1]
        steps = np.arange(1, int(b[0] - a[0]))[:, None]
        t = steps / (b[0] - a[0])
        rows = np.repeat(a[None, :], len(steps), axis=0)
        rows[:, 0] = a[0] + steps[:, 0]
        rows[:, 2:6] = a[2:6] + t * (b[2:6] - a[2:6])
        filled.append(rows)
    out = np.concatenate(filled)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def format_table(table: np.ndarray) -> list[str]:
    """MOT result lines for (N, >=7) rows of frame, id, x, y, w, h, score."""
    return [
        f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{r[6]:.4f},-1,-1,-1" for r in table
    ]
