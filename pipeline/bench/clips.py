"""Camera clips for the benchmark: a source clip re-encoded at a camera's resolution, frame rate and
stream shape (H.264, GOP, B-frames, bitrate), so every run and every peer reads the same bitstream."""
from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av

from pipeline.errors import ConfigError


def camera_clip(source: Path, folder: Path, width: int, height: int, fps: float, seconds: float = 20.0,
                gop: int | None = None, bframes: int = 0, bitrate_kbps: int | None = None) -> Path:
    """`seconds` of `source` (looped as needed) as H.264 `width`x`height` at `fps`, a keyframe every `gop`
    frames (one second by default), `bframes` B-frames (cameras send none), constant quality (crf 23) or
    `bitrate_kbps`. Cached in `folder` by those settings and the source file (its path, size and modification
    time: another file of the same name, or the same file re-exported, is encoded anew)."""
    gop = gop or round(fps)
    rate = Fraction(fps).limit_denominator(1001)
    stat = source.stat()
    origin = hashlib.sha1(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:8]
    name = (f"{source.stem}-{origin}-{width}x{height}-{fps:g}fps-g{gop}-b{bframes}-{bitrate_kbps or 'crf23'}-"
            f"{seconds:g}s.mp4")
    target = folder / name
    if target.exists():
        return target
    _check_video(source)
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.mp4")
    frames = round(seconds * fps)
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = {"g": str(gop), "bf": str(bframes), "preset": "veryfast"}
        if bitrate_kbps:
            stream.bit_rate = bitrate_kbps * 1000
        else:
            options["crf"] = "23"
        stream.options = options
        stream.codec_context.thread_count = 0
        stream.codec_context.thread_type = "FRAME"  # slice threads would cut each picture into several slices
        written = 0
        while written < frames:
            with av.open(str(source)) as src:
                for frame in _every_nth(src, fps):
                    if written >= frames:
                        break
                    image = frame.reformat(width=width, height=height, format="yuv420p")
                    image.pts, image.time_base = written, 1 / rate
                    out.mux(stream.encode(image))
                    written += 1
            if written == 0:
                raise ConfigError(f"{source}: no picture in it could be decoded; give a video file")
        out.mux(stream.encode(None))
    partial.rename(target)
    return target


def _check_video(source: Path) -> None:
    """ConfigError naming `source` unless FFmpeg reads a picture from it."""
    try:
        with av.open(str(source)) as src:
            if not src.streams.video:
                raise ConfigError(f"{source}: has no video stream (sound or data only); give a video file")
            next(src.decode(video=0))
    except av.error.FFmpegError as exc:
        raise ConfigError(f"{source}: not a video FFmpeg can read ({exc.strerror}); give a video file") from None
    except StopIteration:
        raise ConfigError(f"{source}: no picture in it could be decoded; give a video file") from None


def _every_nth(container, fps: float):
    """The source's frames thinned to about `fps` (a faster source) or all of them (a slower one)."""
    stream = container.streams.video[0]
    source_fps = float(stream.average_rate or fps)
    step, due = source_fps / fps, 0.0
    for i, frame in enumerate(container.decode(stream)):
        if i + 1e-9 >= due:
            due += step if step > 1 else 1
            yield frame
