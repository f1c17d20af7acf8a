"""Live previews for the console: small JPEGs of the cameras someone watches, and what was drawn on them.

Nothing happens for a camera nobody watches: the tap (`OutputSinks.add_tap`, called by the stage worker
with every result) looks a stream up in a dict and returns. For a watched camera, at most `fps` times a
second, it takes a small host copy of the picture (decimated first, so a 4K or device frame is never
copied whole and no frame is kept) and what the overlay needs (boxes, classes, track ids, in source
pixels); the `preview:encode` thread scales it to the widest width asked for and encodes it as JPEG (PyAV's
mjpeg), then hands it to each watcher's `deliver` callback, never narrower than that watcher asked (unless
the camera's picture is): a watcher who just asked a camera wider gets its first picture from the next take.
`encoded` counts the JPEGs made (/metrics).

    previews = Previews(class_names, fps=4, max_width=1280)
    outputs.add_tap(previews.tap)
    watch = previews.watch({"cam-1": 320}, deliver)   # deliver(Preview) from the encode thread
    ...
    previews.unwatch(watch)
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import av
import numpy as np

from pipeline.sinks.media import encode_jpeg
from pipeline.types import Frame, FrameResult, array_module, class_name

MIN_WIDTH = 16


@dataclass(frozen=True)
class Preview:
    """One encoded preview: `jpeg` of `width` x `height` pixels from a `source_width` x `source_height` frame.
    boxes: the tracker's rows (else the detections) in source pixels, each {xyxy, class, track_id, score,
    coasted}. wall_ns: the frame's capture time."""

    stream_id: str
    seq: int
    wall_ns: int
    source_width: int
    source_height: int
    width: int
    height: int
    jpeg: bytes
    boxes: list[dict]

    def meta(self) -> dict[str, Any]:
        """Everything but the picture, as JSON-ready values."""
        return {"stream_id": self.stream_id, "seq": self.seq, "wall_ns": self.wall_ns, "width": self.width,
                "height": self.height, "source_width": self.source_width, "source_height": self.source_height,
                "boxes": self.boxes}


class Watch:
    """Who watches which cameras at which width (`Previews.watch`)."""

    def __init__(self, widths: dict[str, int], deliver: Callable[[Preview], None]):
        self.widths, self.deliver = widths, deliver


class _Taken:
    __slots__ = ("stream_id", "seq", "wall_ns", "width", "height", "small", "boxes", "target")

    def __init__(self, frame: Frame, small: np.ndarray, boxes: list[dict], target: int):
        self.stream_id, self.seq, self.wall_ns = frame.stream_id, frame.seq, frame.wall_ns
        self.width, self.height, self.small, self.boxes, self.target = frame.width, frame.height, small, boxes, target


class Previews:
    """class_names: the model's (boxes are labelled with them). fps: most previews per second per watched
    camera. max_width: the widest preview made whatever is asked. jpeg_qscale: 2 (best) .. 31 (smallest)."""

    def __init__(self, class_names: list[str], fps: float = 4.0, max_width: int = 1280, jpeg_qscale: int = 6):
        self.class_names = list(class_names)
        self.interval_s = 1.0 / fps
        self.max_width = max_width
        self.jpeg_qscale = jpeg_qscale
        self.encoded = 0
        self._watches: list[Watch] = []
        self._wanted: dict[str, int] = {}  # stream -> widest width asked; replaced, never changed
        self._due: dict[str, float] = {}  # stream -> monotonic time its next preview may be taken
        self._taken: dict[str, _Taken] = {}  # waiting to be encoded, the newest per stream
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="preview:encode", daemon=True)
        self._thread.start()

    # -- watchers (any thread) ------------------------------------------------------------------
    def watch(self, widths: dict[str, int], deliver: Callable[[Preview], None]) -> Watch:
        """Start previews of each stream in `widths` (stream id -> width in pixels) for `deliver`, which is
        called on the encode thread and must return at once."""
        watch = Watch({sid: max(MIN_WIDTH, min(int(w), self.max_width)) for sid, w in widths.items()}, deliver)
        with self._cond:
            self._watches.append(watch)
            self._update_locked()
        return watch

    def unwatch(self, watch: Watch) -> None:
        with self._cond:
            if watch in self._watches:
                self._watches.remove(watch)
            self._update_locked()

    def viewers(self) -> int:
        return len(self._watches)

    def _update_locked(self) -> None:
        wanted: dict[str, int] = {}
        for watch in self._watches:
            for sid, width in watch.widths.items():
                wanted[sid] = max(width, wanted.get(sid, 0))
        self._wanted = wanted
        for sid in [sid for sid in self._taken if sid not in wanted]:
            del self._taken[sid]
        for sid in [sid for sid in list(self._due) if sid not in wanted]:  # taps add to it from other threads
            self._due.pop(sid, None)

    # -- the tap (stage workers) ----------------------------------------------------------------
    def tap(self, result: FrameResult) -> None:
        """Take a preview of `result` when its stream is watched and due; else return at once."""
        frame = result.frame
        width = self._wanted.get(frame.stream_id)
        if width is None:
            return
        now = time.monotonic()
        if now < self._due.get(frame.stream_id, 0.0):
            return
        self._due[frame.stream_id] = now + self.interval_s
        taken = _Taken(frame, small_rgb(frame, width), self._boxes(result), min(width, frame.width))
        with self._cond:
            self._taken[frame.stream_id] = taken
            self._cond.notify_all()

    def _boxes(self, result: FrameResult) -> list[dict]:
        if len(result.tracks):
            rows, coasted = result.tracks.to_host(), result.coasted()
        else:
            rows = result.detections.to_host()
            coasted = np.zeros(len(rows), bool)
        return [{"xyxy": [round(float(v), 1) for v in rows.xyxy[i]],
                 "class": class_name(self.class_names, int(rows.class_id[i])), "track_id": int(rows.track_id[i]),
                 "score": round(float(rows.score[i]), 3), "coasted": bool(coasted[i])} for i in range(len(rows))]

    # -- encoding (thread preview:encode) -------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._taken and not self._closed:
                    self._cond.wait(1.0)
                if self._closed:
                    return
                sid = next(iter(self._taken))
                taken = self._taken.pop(sid)
                # a watch that began after the picture was taken, asking it wider, waits for the next one
                watches = [w for w in self._watches
                           if sid in w.widths and min(w.widths[sid], taken.width) <= taken.target]
            preview = self._encode(taken)
            for watch in watches:
                watch.deliver(preview)

    def _encode(self, taken: _Taken) -> Preview:
        width = max(2, taken.target - taken.target % 2)
        height = max(2, round(width * taken.height / taken.width / 2) * 2)
        picture = av.VideoFrame.from_ndarray(taken.small, format="rgb24").reformat(width=width, height=height)
        jpeg = encode_jpeg(picture.to_ndarray(format="rgb24"), self.jpeg_qscale)
        self.encoded += 1
        return Preview(taken.stream_id, taken.seq, taken.wall_ns, taken.width, taken.height, width, height, jpeg,
                       taken.boxes)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._watches.clear()
            self._wanted = {}
            self._cond.notify_all()
        self._thread.join(5.0)


def small_rgb(frame: Frame, width: int) -> np.ndarray:
    """A host RGB copy of `frame` at least `width` pixels wide (when the frame is), decimated by a whole
    factor before anything is copied: an NV12 device frame crosses to the host at that size only."""
    step = max(1, frame.width // max(width, 1))
    image = frame.image
    if frame.pixel_format == "avframe":
        height = max(2, frame.height // step)
        return image.reformat(width=max(2, frame.width // step), height=height, format="rgb24").to_ndarray()
    if frame.pixel_format == "nv12":
        return _nv12_to_rgb(_decimate_nv12(image, frame.height, step))
    return np.ascontiguousarray(image[::step, ::step])


def _decimate_nv12(image, height: int, step: int):
    """Every `step`-th pixel of an NV12 `(H*3/2, W)` array (numpy or cupy), as a host NV12 array of even size."""
    xp = array_module(image)
    luma, chroma = image[:height], image[height:]
    luma = luma[::step, ::step]
    uv = chroma.reshape(chroma.shape[0], -1, 2)[::step, ::step]
    rows = min(uv.shape[0] * 2, luma.shape[0]) // 2 * 2
    cols = min(uv.shape[1] * 2, luma.shape[1]) // 2 * 2
    small = xp.concatenate([xp.ascontiguousarray(luma[:rows, :cols]),
                            xp.ascontiguousarray(uv[:rows // 2, :cols // 2]).reshape(rows // 2, cols)])
    return small.get() if hasattr(small, "get") else small


def _nv12_to_rgb(nv12: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(nv12), format="nv12").to_ndarray(format="rgb24")
