"""Benchmark the tracker against reference trackers on the same detections, scored by TrackEval.

    .venv/bin/python benchmarks/track_bench.py [--split report] [--sets mot17-uniform demo ...]
        [--trackers streamweave norfair ...] [--mot17 ../shared/data/mot17]

Sets (each a noise model or a detector; every tracker gets the same input rows):
- `mot17-uniform`: MOT17 train ground truth through `../shared/tools/make_mot_dets.py --seed 0`
  (independent misses, jitter and clutter per box);
- `mot17-blink`: the same tool with one-frame random misses only (`--p_drop 0.1 --p_occ 0 --fp_rate 0`);
- `mot17-detector`: `benchmarks/mot_noise.py --seed 0` (misses in runs, scores falling with occlusion
  and size, jitter proportional to size and correlated in time, clutter near objects and in the background);
- `mot17-moving`: `benchmarks/mot_noise.py --seed 0 --moving`: the same, filmed by a simulated camera that
  pans and zooms (ground truth moved with it), so the tune split, whose three sequences have static
  cameras, has moving-camera material too;
- `demo`: the demo world's cameras through the bundled detector (`benchmarks/demo_mot.py`, cached in
  `out/demo_mot`; exact ground truth, every class scored as one).

Splits: `tune` (MOT17-02/04/09, demo seeds 2001-2003) is what the settings were chosen on; `report`
(MOT17-05/10/11/13, demo seeds 2101-2106) is never
tuned on. A reduced run: fewer `--sets`, `--trackers` or `--split tune`.

Output rows are what each tracker reports for a frame. Ours follows the MOT export rule: tracks matched to
a detection on the frame only (coasted predictions are not boxes anyone saw). frames/s counts only the
update calls and each tracker's adapter (`track_refs.py`), in CPU time of the one thread that runs them (BLAS pinned
to 1 thread): per CPU core.
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
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import demo_mot  # noqa: E402
import mot_noise  # noqa: E402
import track_refs  # noqa: E402
from pipeline import mot  # noqa: E402
from pipeline.stages.tracking.mot_eval import evaluate_mot  # noqa: E402
from pipeline.types import Detections  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)  # supervision 0.30 deprecates its own ByteTrack
INTERPOLATE_FRAMES = 20
SPLITS = {
    "tune": {"mot17": ["MOT17-02", "MOT17-04", "MOT17-09"], "demo": [2001, 2002, 2003]},
    "report": {"mot17": ["MOT17-05", "MOT17-10", "MOT17-11", "MOT17-13"], "demo": [2101, 2102, 2103, 2104, 2105, 2106]},
}
NOISE_ARGS = {
    "mot17-uniform": ["--seed", "0"],
    "mot17-blink": ["--seed", "0", "--p_drop", "0.1", "--p_occ", "0", "--fp_rate", "0"],
}
SETS = ("mot17-uniform", "mot17-blink", "mot17-detector", "mot17-moving", "demo")


def mot17_set(name: str, mot17: Path, seqs: list[str], work: Path, shared: Path | None = None) -> Path:
    """Write the set's det.txt files under work/name for the ground truth in `mot17`; returns that folder.
    shared: where `tools/make_mot_dets.py` is (default: two levels above `mot17`, as in ../shared)."""
    out = work / name
    if name in ("mot17-detector", "mot17-moving"):
        for seq in seqs:
            mot_noise.write_sequence(mot17, out, seq, seed=0, moving=name == "mot17-moving")
    else:
        tool = (shared or mot17.parents[1]) / "tools" / "make_mot_dets.py"
        subprocess.run([sys.executable, str(tool), str(mot17), str(out), "--seqs", *seqs, *NOISE_ARGS[name]],
                       check=True, capture_output=True)
    return out


def load_set(name: str, split: str, mot17: Path, work: Path, demo_cache: Path):
    """(ground-truth root, {sequence: (SeqInfo, [(frame, Detections), ...])})."""
    sequences = {}
    if name == "demo":
        folders = demo_mot.write_all(demo_cache, SPLITS[split]["demo"], seconds=60)
        for folder in folders:
            info = mot.read_seqinfo(folder / "seqinfo.ini")
            sequences[folder.name] = (info, list(_frames_with_class(np.load(folder / "det" / "det.npy"), info.length)))
        return demo_cache, sequences
    dets = mot17_set(name, mot17, SPLITS[split]["mot17"], work)
    for seq in SPLITS[split]["mot17"]:
        info = mot.read_seqinfo(dets / seq / "seqinfo.ini")
        sequences[seq] = (info, list(mot.frames_of(mot.read_mot(dets / seq / "det" / "det.txt"), info.length)))
    return (dets if name == "mot17-moving" else mot17), sequences


def _frames_with_class(table: np.ndarray, length: int):
    """(frame, Detections) for frames 1..length from (N, 7) frame, x, y, w, h, score, class rows."""
    frames = table[:, 0].astype(np.int64)
    bounds = np.searchsorted(frames, np.arange(1, length + 2))
    xyxy = np.concatenate([table[:, 1:3], table[:, 1:3] + table[:, 3:5]], axis=1).astype(np.float32)
    for frame in range(1, length + 1):
        lo, hi = bounds[frame - 1], bounds[frame]
        yield frame, Detections(xyxy[lo:hi], table[lo:hi, 5].astype(np.float32), table[lo:hi, 6].astype(np.int32))


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
    return results, frames / max(seconds, 1e-9)


def interpolated(results: dict[str, Path], out_dir: Path) -> dict[str, Path]:
    out = {}
    for seq, path in results.items():
        out[seq] = out_dir / f"{seq}.txt"
        mot.write_mot(out[seq], mot.format_table(mot.interpolate_gaps(mot.read_mot(path), INTERPOLATE_FRAMES)))
    return out


def benchmark_set(name: str, split: str, trackers: list[str], args, work: Path) -> list[tuple[str, dict, float]]:
    gt_root, sequences = load_set(name, split, args.mot17, work, args.demo_cache)
    rows = []
    for key in trackers:
        label, make = track_refs.TRACKERS[key]
        out_dir = work / f"{name}-{split}-{key}"
        try:
            results, fps = run_tracker(make, sequences, out_dir)
        except ImportError as exc:
            print(f"{label}: not installed ({exc.name})", file=sys.stderr)
            continue
        rows.append((label, evaluate_mot(gt_root, results), fps))
        if key == "streamweave":
            scores = evaluate_mot(gt_root, interpolated(results, work / f"{out_dir.name}-interp"))
            rows.append((f"streamweave `track --interpolate {INTERPOLATE_FRAMES}` (offline)", scores, fps))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mot17", type=Path, default=REPO.parent / "shared" / "data" / "mot17")
    parser.add_argument("--demo-cache", type=Path, default=REPO / "out" / "demo_mot")
    parser.add_argument("--split", choices=[*SPLITS, "both"], default="report")
    parser.add_argument("--sets", nargs="*", choices=SETS, default=list(SETS))
    parser.add_argument("--trackers", nargs="*", choices=list(track_refs.TRACKERS), default=list(track_refs.TRACKERS))
    args = parser.parse_args(argv)
    print(f"{date.today()} on {platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}; "
          f"{track_refs.versions()}")
    splits = list(SPLITS) if args.split == "both" else [args.split]
    with tempfile.TemporaryDirectory() as tmp:
        for split in splits:
            for name in args.sets:
                print(f"\n{name}, {split}: {', '.join(map(str, SPLITS[split]['demo' if name == 'demo' else 'mot17']))}")
                print("| tracker | HOTA | MOTA | IDF1 | IDSW | frames/s |\n| --- | --- | --- | --- | --- | --- |", flush=True)
                for label, s, fps in benchmark_set(name, split, args.trackers, args, Path(tmp)):
                    print(f"| {label} | {s['HOTA']:.1f} | {s['MOTA']:.1f} | {s['IDF1']:.1f} | {s['IDSW']} | {fps:.0f} |",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
