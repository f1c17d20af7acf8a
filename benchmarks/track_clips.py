"""Trackers on real footage through YOLOX-Nano: speed, camera-motion cost, and videos to look at.

    .venv/bin/python benchmarks/track_clips.py [--clips car-detection.mp4 ...] [--render out/track_clips]

The shared clips (`../shared/media`) have no ground truth, so this measures what can be measured
without it: frames/s per core of each tracker's update calls (BLAS pinned to one thread, CPU time of the
thread), our tracker with `camera_motion` on (its cost includes making the small grey frame and the
optical flow), how many ids each tracker hands out (fewer for the same objects = fewer breaks) and the
mean length of a track. With `--render DIR` our tracks (camera motion on) are drawn into `DIR/<clip>.mp4`
for inspection. Detections (YOLOX-Nano 416, ONNX Runtime on the CPU, conf 0.1) are cached in
`out/clip_dets/`.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import track_refs  # noqa: E402
from pipeline.config.models import DetectorConfig, TrackerConfig  # noqa: E402
from pipeline.stages.tracking.bytetrack import ByteTracker  # noqa: E402
from pipeline.stages.tracking.camera_motion import CameraMotion  # noqa: E402
from pipeline.types import Detections, Frame  # noqa: E402

SHARED = REPO.parent / "shared"
CLIPS = ("car-detection.mp4", "person-bicycle-car-detection.mp4", "dashcam-highway-960x540.mp4",
         "highway-cctv-320x240.avi")


def frames_of(clip: Path):
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")
            yield Frame(clip.stem, i, i, 0, rgb, rgb.shape[1], rgb.shape[0], index=i), float(stream.average_rate or 25)


def detections(clip: Path, cache: Path) -> tuple[list[Detections], float]:
    """Per frame YOLOX-Nano detections of the clip (made once, then read from `cache`) and its frame rate."""
    path = cache / f"{clip.stem}.npz"
    if not path.exists():
        from pipeline.detect.detector import Detector  # noqa: PLC0415

        config = DetectorConfig(model=SHARED / "models" / "yolox_nano_416.onnx", engine="onnxruntime", conf_threshold=0.1)
        detector = Detector(config, max_batch=1)
        rows, fps = [], 25.0
        try:
            for frame, fps in frames_of(clip):
                d = detector.detect_images([frame.image])[0].to_host()
                rows.append(np.column_stack([np.full(len(d), frame.seq), d.xyxy, d.score, d.class_id]))
        finally:
            detector.close()
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, rows=np.concatenate(rows), fps=fps, frames=len(rows))
    data = np.load(path)
    rows, frames = data["rows"], int(data["frames"])
    per_frame = [rows[rows[:, 0] == i] for i in range(frames)]
    return [Detections(r[:, 1:5].astype(np.float32), r[:, 5].astype(np.float32), r[:, 6].astype(np.int32))
            for r in per_frame], float(data["fps"])


def summary(ids_per_frame: list[np.ndarray]) -> tuple[int, float]:
    """(distinct ids, mean frames per id)."""
    ids = np.concatenate(ids_per_frame) if ids_per_frame else np.zeros(0)
    _, counts = np.unique(ids, return_counts=True)
    return len(counts), float(counts.mean()) if len(counts) else 0.0


def run_reference(make, dets, fps) -> tuple[float, list[np.ndarray]]:
    step = make(fps)
    seconds, ids = 0.0, []
    for d in dets:
        start = time.thread_time()
        _, found, _ = step(d)
        seconds += time.thread_time() - start
        ids.append(np.asarray(found))
    return len(dets) / max(seconds, 1e-9), ids


def run_ours_with_camera_motion(clip: Path, dets, render: Path | None) -> tuple[float, list[np.ndarray]]:
    tracker, camera = ByteTracker(TrackerConfig(camera_motion=True)), CameraMotion()
    seconds, ids, writer = 0.0, [], None
    for (frame, fps), d in zip(frames_of(clip), dets):
        start = time.thread_time()
        out = tracker.update(d, camera.of_frame(frame))
        seconds += time.thread_time() - start
        seen = np.isin(out.track_id, tracker.matched_ids)
        ids.append(out.track_id[seen])
        if render is not None:
            writer = writer or cv2.VideoWriter(str(render / f"{clip.stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                               fps, (frame.width, frame.height))
            writer.write(draw(frame.image, out.xyxy[seen], out.track_id[seen]))
    if writer is not None:
        writer.release()
    return len(dets) / max(seconds, 1e-9), ids


def draw(rgb: np.ndarray, boxes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for (x1, y1, x2, y2), tid in zip(boxes.astype(int).tolist(), ids.tolist()):
        colour = tuple(int(c) for c in np.random.default_rng(tid).integers(64, 256, 3))
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(image, str(tid), (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    return image


def main(argv=None) -> int:
    cv2.setNumThreads(1)  # per-core figures: OpenCV's own threads would escape the thread's CPU time
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), help="file names in ../shared/media")
    parser.add_argument("--trackers", nargs="*", choices=list(track_refs.TRACKERS), default=list(track_refs.TRACKERS))
    parser.add_argument("--cache", type=Path, default=REPO / "out" / "clip_dets")
    parser.add_argument("--render", type=Path, help="write our tracks drawn on the clips to this folder")
    args = parser.parse_args(argv)
    if args.render:
        args.render.mkdir(parents=True, exist_ok=True)
    print(track_refs.versions())
    print("| clip | tracker | frames/s | ids | mean frames per id |\n| --- | --- | --- | --- | --- |")
    for name in args.clips:
        clip = SHARED / "media" / name
        dets, fps = detections(clip, args.cache)
        for key in args.trackers:
            label, make = track_refs.TRACKERS[key]
            try:
                speed, ids = run_reference(make, dets, fps)
            except ImportError as exc:
                print(f"| {name} | {label} | not installed ({exc.name}) | | |")
                continue
            print(f"| {name} ({len(dets)} frames) | {label} | {speed:.0f} | {summary(ids)[0]} | {summary(ids)[1]:.1f} |",
                  flush=True)
        speed, ids = run_ours_with_camera_motion(clip, dets, args.render)
        print(f"| {name} ({len(dets)} frames) | streamweave, `camera_motion: true` | {speed:.0f} | {summary(ids)[0]} | "
              f"{summary(ids)[1]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
