"""The loop a supervision user writes, one per camera: read a frame with OpenCV, run the Ultralytics model on
it, `sv.Detections.from_ultralytics`, `sv.ByteTrack().update_with_detections`; a thread per camera, each with
its own model (Ultralytics' advice for threads) and tracker, no batching. Run by peers.py (ultralytics is
AGPL-3.0 and supervision a bench extra: never imported by `pipeline/`).

A frame's capture time comes from OpenCV's position in the stream (counted from the connection's first frame)
plus the feeder's start of that connection, as for Ultralytics' stream mode.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import cv2
import supervision as sv
from ultralytics import YOLO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Record, arguments, position_capture_ns, stream_start_ns  # noqa: E402


def camera_loop(index: int, url: str, args, record: Record, errors: list) -> None:
    try:
        model = YOLO(args.model, task="detect")
        tracker = sv.ByteTrack(frame_rate=30)
        device = 0 if args.device == "cuda" else "cpu"
        capture = cv2.VideoCapture(url)
        start_ns = stream_start_ns(url)
        while not record.finished():
            ok, frame = capture.read()
            if not ok:
                capture.open(url)
                start_ns = stream_start_ns(url)
                continue
            captured = position_capture_ns(args.epoch_ns, start_ns, capture.get(cv2.CAP_PROP_POS_MSEC))
            result = model(frame, imgsz=args.imgsz, conf=args.conf, device=device, half=device == 0, verbose=False)[0]
            tracker.update_with_detections(sv.Detections.from_ultralytics(result))
            record.done(index, captured)
        capture.release()
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(f"camera {index}: {exc!r}")


def main() -> int:
    args = arguments(__doc__)
    record = Record(len(args.urls), tuple(args.window))
    errors: list[str] = []
    threads = [threading.Thread(target=camera_loop, args=(i, url, args, record, errors), daemon=True)
               for i, url in enumerate(args.urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record.write(args.out, errors=errors)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
