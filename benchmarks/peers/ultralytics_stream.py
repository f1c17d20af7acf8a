"""Ultralytics' stream mode, as its docs show it: `YOLO(model).predict(source="list.streams", stream=True)`.
Run by peers.py (ultralytics is AGPL-3.0: a benchmark extra, never imported by `pipeline/`).

To know each processed frame's capture time, `LoadStreams.update` is replaced by a copy of the library's
own loop that also notes the frame's capture time (CAP_PROP_POS_MSEC, counted from the connection's first
frame, plus the feeder's start of that connection) by the frame object; how frames are read, decoded
(OpenCV's default: a thread per CPU, frame threading), kept (only the newest, `buffer=False`) and batched is
unchanged.
"""
from __future__ import annotations

import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
from ultralytics import YOLO
from ultralytics.data import loaders

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Record, arguments, position_capture_ns, stream_start_ns  # noqa: E402

CAPTURED: OrderedDict[int, tuple[int, int]] = OrderedDict()  # id(frame) -> (camera, capture ns)


def timed_update(self, i: int, cap, stream) -> None:
    """LoadStreams.update (ultralytics 8.4), plus the capture time of each frame kept. OpenCV reports a
    frame's position from the stream's start, so the feeder is asked where this connection's stream began
    (again after a reconnection: the new connection's stream begins anew)."""
    start_ns = stream_start_ns(stream)
    n, f = 0, self.frames[i]
    while self.running and cap.isOpened() and n < (f - 1):
        if len(self.imgs[i]) < 30:
            n += 1
            cap.grab()
            if n % self.vid_stride == 0:
                success, im = cap.retrieve()
                if not success or im is None:
                    im = np.zeros(self.shape[i], dtype=np.uint8)
                    cap.open(stream)
                    start_ns = stream_start_ns(stream)
                else:
                    CAPTURED[id(im)] = (i, position_capture_ns(EPOCH_NS, start_ns, cap.get(cv2.CAP_PROP_POS_MSEC)))
                    while len(CAPTURED) > 64 * len(self.imgs):
                        CAPTURED.popitem(last=False)
                if self.buffer:
                    self.imgs[i].append(im)
                else:
                    self.imgs[i] = [im]
        else:
            time.sleep(0.01)


EPOCH_NS = 0


def main() -> int:
    global EPOCH_NS
    args = arguments(__doc__)
    EPOCH_NS = args.epoch_ns
    loaders.LoadStreams.update = timed_update
    streams = Path(tempfile.mkdtemp()) / "cameras.streams"
    streams.write_text("\n".join(args.urls) + "\n")
    record = Record(len(args.urls), tuple(args.window))
    model = YOLO(args.model, task="detect")
    device = 0 if args.device == "cuda" else "cpu"
    results = model.predict(source=str(streams), stream=True, imgsz=args.imgsz, conf=args.conf, device=device,
                            half=device == 0, verbose=False, max_det=300)
    for result in results:
        now = time.time_ns()
        camera, captured = CAPTURED.pop(id(result.orig_img), (None, None))
        if camera is not None:
            record.done(camera, captured, now)
        if record.finished():
            break
    record.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
