"""`synthetic://` URLs: which world, how fast, how big.

    synthetic://plaza?seed=3&fps=15&size=1280x720&frames=300&realtime=0

scene (the host part, or `scene=` / `viewpoint=`): plaza | street | junction. seed: int (default 0).
fps: frames per second (default 15). size: WxH pixels (default 640x360). frames: stop after this many
(default: endless). realtime: 1 paces frames on the wall clock like a camera (default), 0 renders as
fast as asked. encode: 1 makes the stream an H.264 camera: frames are encoded (libx264, GOP of 2 s)
and decoded again, and the packets reach the pipeline's packet tap, so event clips work (default 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from samples.world.layout import VIEWPOINTS

_KEYS = {"scene", "viewpoint", "seed", "fps", "size", "frames", "realtime", "encode"}


@dataclass(frozen=True)
class SyntheticSpec:
    scene: str = "plaza"
    seed: int = 0
    fps: float = 15.0
    size: tuple[int, int] = (640, 360)
    frames: int | None = None
    realtime: bool = True
    encode: bool = False


def parse_size(text: str, url: str) -> tuple[int, int]:
    """Parse "1280x720" -> (1280, 720); raises ValueError naming `url` (or the option) when malformed or odd."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{url}: size must look like 1280x720, got {text!r}") from None
    if w < 32 or h < 32 or w % 2 or h % 2:
        raise ValueError(f"{url}: size {w}x{h} must be even and at least 32x32 (H.264 needs even sizes)")
    return w, h


def parse_synthetic_url(url: str) -> SyntheticSpec:
    """Parse a `synthetic://` URL; raises ValueError naming the URL and the bad key."""
    parts = urlsplit(url)
    if parts.scheme != "synthetic":
        raise ValueError(f"{url}: not a synthetic:// URL")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(query) - _KEYS
    if unknown:
        raise ValueError(f"{url}: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    scene = query.get("scene") or query.get("viewpoint") or parts.netloc or "plaza"
    if scene not in VIEWPOINTS:
        raise ValueError(f"{url}: unknown scene {scene!r}; choose one of {sorted(VIEWPOINTS)}")
    try:
        seed = int(query.get("seed", 0))
        fps = float(query.get("fps", 15))
        frames = int(query["frames"]) if "frames" in query else None
        realtime = query.get("realtime", "1") not in ("0", "false", "no")
        encode = query.get("encode", "0") not in ("0", "false", "no")
    except ValueError as exc:
        raise ValueError(f"{url}: {exc}") from None
    if not 0 < fps <= 240:
        raise ValueError(f"{url}: fps must be in (0, 240], got {fps}")
    if frames is not None and frames < 1:
        raise ValueError(f"{url}: frames must be at least 1, got {frames}")
    size = parse_size(query["size"], url) if "size" in query else (640, 360)
    return SyntheticSpec(scene, seed, fps, size, frames, realtime, encode)
