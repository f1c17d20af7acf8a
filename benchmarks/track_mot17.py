"""Benchmark the tracker on MOT17 train against reference trackers, on the same detections.

    .venv/bin/python benchmarks/track_mot17.py [--mot17 ../shared/data/mot17] [--trackers ours norfair ...]

Detections: `../shared/tools/make_mot_dets.py <mot17> <tmp> --seed 0` (MOT17 ground truth with
deterministic noise, misses and false positives). Scores: trackeval's MotChallenge2DBox (HOTA, MOTA,
IDF1, IDSW), all 7 sequences combined. frames/s counts only the trackers' update calls, in CPU time
of the one thread that runs them (BLAS threads are pinned to 1 below), so the figure is per CPU core
and holds on a machine shared with other jobs. Reference trackers run with their
default settings and are skipped when not installed (`pip install norfair trackers "supervision==0.30.*"`).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from datetime import date  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config.models import TrackerConfig  # noqa: E402
from pipeline import mot  # noqa: E402
from pipeline.stages.tracking.bytetrack import ByteTracker  # noqa: E402
from pipeline.stages.tracking.mot_eval import evaluate_mot  # noqa: E402

INTERPOLATE_FRAMES = 20
warnings.filterwarnings("ignore", category=FutureWarning)  # supervision 0.30 deprecates its own ByteTrack


def ours(fps, config: TrackerConfig | None = None):
    tracker = ByteTracker(config or TrackerConfig())

    def step(dets):
        out = tracker.update(dets)
        return out.xyxy, out.track_id, out.score
    return step


def norfair_iou(fps):
    from norfair import Detection, Tracker  # noqa: PLC0415

    tracker = Tracker(distance_function="iou", distance_threshold=0.7)

    def step(dets):
        found = [Detection(points=b.reshape(2, 2), scores=np.array([s, s])) for b, s in zip(dets.xyxy, dets.score)]
        objs = tracker.update(found)
        boxes = np.array([o.estimate.reshape(4) for o in objs]).reshape(-1, 4)
        return boxes, np.array([o.id for o in objs], np.int64), np.ones(len(objs))
    return step


def _sv(dets):
    import supervision as sv  # noqa: PLC0415

    return sv.Detections(xyxy=dets.xyxy.astype(np.float32), confidence=dets.score, class_id=dets.class_id)


def _from_sv(out):
    keep = out.tracker_id >= 0 if out.tracker_id is not None else np.zeros(len(out), bool)
    return out.xyxy[keep], out.tracker_id[keep].astype(np.int64), out.confidence[keep]


def roboflow(kind):
    def make(fps):
        import trackers  # noqa: PLC0415

        tracker = getattr(trackers, kind)(frame_rate=fps)
        return lambda dets: _from_sv(tracker.update(_sv(dets)))
    return make


def supervision_bytetrack(fps):
    import supervision as sv  # noqa: PLC0415

    tracker = sv.ByteTrack(frame_rate=fps)
    return lambda dets: _from_sv(tracker.update_with_detections(_sv(dets)))


TRACKERS = {
    "streamweave ByteTracker (online)": ours,
    "norfair (IoU)": norfair_iou,
    "Roboflow `trackers` SORT": roboflow("SORTTracker"),
    "supervision 0.30 ByteTrack": supervision_bytetrack,
    "Roboflow `trackers` ByteTrack": roboflow("ByteTrackTracker"),
}


def run_tracker(make, sequences, out_dir: Path) -> tuple[dict[str, Path], float]:
    """Track every sequence; returns result files and frames/s over the update calls."""
    results, frames, seconds = {}, 0, 0.0
    for seq, (info, per_frame) in sequences.items():
        step = make(info.frame_rate)
        rows = []
        for frame, dets in per_frame:
            start = time.thread_time()
            boxes, ids, scores = step(dets)
            seconds += time.thread_time() - start
            boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
            rows.append(np.column_stack([np.full(len(ids), frame), ids, boxes[:, :2], boxes[:, 2:] - boxes[:, :2],
                                         np.asarray(scores, np.float64)]))
        frames += len(per_frame)
        results[seq] = out_dir / f"{seq}.txt"
        mot.write_mot(results[seq], mot.format_table(np.concatenate(rows)))
    return results, frames / seconds


def interpolated(results: dict[str, Path], out_dir: Path) -> dict[str, Path]:
    out = {}
    for seq, path in results.items():
        out[seq] = out_dir / f"{seq}.txt"
        table = mot.interpolate_gaps(mot.read_mot(path), INTERPOLATE_FRAMES)
        mot.write_mot(out[seq], mot.format_table(table))
    return out


def load(mot17: Path, work: Path) -> dict:
    tool = mot17.parents[1] / "tools" / "make_mot_dets.py"
    subprocess.run([sys.executable, str(tool), str(mot17), str(work / "dets"), "--seed", "0"], check=True,
                   capture_output=True)
    sequences = {}
    for seq in sorted(p.name for p in (work / "dets").iterdir()):
        info = mot.read_seqinfo(work / "dets" / seq / "seqinfo.ini")
        table = mot.read_mot(work / "dets" / seq / "det" / "det.txt")
        sequences[seq] = (info, list(mot.frames_of(table, info.length)))
    return sequences


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mot17", type=Path, default=REPO.parent / "shared" / "data" / "mot17")
    parser.add_argument("--trackers", nargs="*", default=list(TRACKERS), help="names from the table (default: all)")
    args = parser.parse_args(argv)
    print(f"{date.today()} on {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    print("| tracker (default settings) | HOTA | MOTA | IDF1 | IDSW | frames/s |\n| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sequences = load(args.mot17, work)
        for i, name in enumerate(args.trackers):
            out_dir = work / f"t{i}"
            try:
                results, fps = run_tracker(TRACKERS[name], sequences, out_dir)
            except ImportError as exc:
                print(f"| {name} | not installed ({exc.name}) | | | | |")
                continue
            _print_row(name, evaluate_mot(args.mot17, results), fps)
            if TRACKERS[name] is ours:
                offline = partial(ours, config=TrackerConfig(coast_frames=0))
                results, fps = run_tracker(offline, sequences, work / f"t{i}o")
                s = evaluate_mot(args.mot17, interpolated(results, work / f"t{i}i"))
                _print_row(f"streamweave `track --interpolate {INTERPOLATE_FRAMES}` (offline)", s, fps)
    return 0


def _print_row(name: str, s: dict, fps: float) -> None:
    print(f"| {name} | {s['HOTA']:.1f} | {s['MOTA']:.1f} | {s['IDF1']:.1f} | {s['IDSW']} | {fps:.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
