"""Detector-like noisy detections from MOTChallenge ground truth, for tracker development.

    .venv/bin/python benchmarks/mot_noise.py ../shared/data/mot17 OUT [--seqs MOT17-02 ...] [--seed 0]

`../shared/tools/make_mot_dets.py` draws every miss, jitter and false positive independently per box;
a real detector's errors are correlated in time and space, and a tracker tuned on the first can fail
on the second. This model makes the errors a detector makes (`detector_like`):

- **misses come in runs**: per ground-truth track a two-state chain (seen / missed) whose chance of
  starting a miss grows as the object gets occluded or small, and whose misses last `miss_run` frames
  on average, so an occluded person vanishes for several frames at a time;
- **scores fall with occlusion and size** (a logistic in visibility and log height) and drift slowly
  per track (an AR(1) term), so a track's score is consistently high or low, not white noise;
- **box jitter proportional to size**, also AR(1) in time (a detector's box bias persists);
- **clutter near objects** (a box shifted off a person by about half its width, as a duplicate
  that NMS did not remove, or a part of the person) and **in the background** (a few fixed places per
  sequence that fire in runs, like a poster or a mannequin), with low to medium scores.

With `--moving`, the sequence is first filmed by a simulated moving camera (`camera_path`): every box
of the ground truth shifts and scales with a smooth random pan and zoom (velocities that drift, AR(1)), so
static-camera sequences can stand in for moving ones; the moved ground truth is written too.

Output: `<out>/<seq>/det/det.txt` (frame,-1,x,y,w,h,score,-1,-1,-1), a copy of `seqinfo.ini` and with
`--moving` `<out>/<seq>/gt/gt.txt`, the same layout as make_mot_dets.py. Deterministic for a seed and
sequence name.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class NoiseModel:
    """Parameters of `detector_like`; every one is a command-line option of the same name."""

    miss_base: float = 0.02  # chance per frame that a fully visible, tall object starts a miss run
    miss_occ: float = 0.25  # added chance per frame at visibility 0
    miss_small: float = 0.08  # added chance per frame for an object 40 px tall (scales with 40 / height)
    miss_run: float = 4.0  # mean length of a miss run, frames
    score_bias: float = -1.0  # logit of the score at visibility 0 and height 100 px
    score_vis: float = 4.0  # logit gain from visibility 0 to 1
    score_size: float = 0.6  # logit gain per doubling of height
    score_drift: float = 0.5  # standard deviation of a track's slowly drifting score logit offset
    jitter: float = 0.04  # box centre and size noise as a fraction of the box's width and height
    jitter_memory: float = 0.7  # AR(1) coefficient of the jitter from one frame to the next
    near_rate: float = 0.03  # clutter boxes per object per frame, beside the object
    background_sites: int = 6  # fixed places per sequence that fire as false positives
    background_on: float = 0.15  # fraction of frames each background place fires, in runs of ~8 frames


def _ar1(rng: np.random.Generator, n: int, memory: float) -> np.ndarray:
    """(n,) stationary AR(1) with unit variance and coefficient `memory`."""
    out = np.empty(n)
    noise = rng.normal(size=n) * np.sqrt(1 - memory ** 2)
    out[0] = rng.normal()
    for i in range(1, n):
        out[i] = memory * out[i - 1] + noise[i]
    return out


def _miss_mask(rng: np.random.Generator, start_p: np.ndarray, run: float) -> np.ndarray:
    """(T,) bool: True on frames in a miss run. start_p (T,): chance of starting one on each frame."""
    stop_p = 1.0 / max(run, 1.0)
    u = rng.random(len(start_p))
    out = np.zeros(len(start_p), bool)
    missing = False
    for i in range(len(start_p)):
        missing = u[i] >= stop_p if missing else u[i] < start_p[i]
        out[i] = missing
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def detector_like(gt: np.ndarray, width: float, height: float, length: int, rng: np.random.Generator,
                  model: NoiseModel = NoiseModel()) -> np.ndarray:
    """Detections a detector might give for MOT17 ground truth.

    gt: (N, 9) MOT17 gt rows (frame, id, x, y, w, h, conf, class, visibility); only rows that count for
    evaluation (conf 1, class 1: pedestrian) are used. Returns (M, 7) float64 rows
    (frame, -1, x, y, w, h, score), sorted by frame and falling score.
    """
    gt = gt[(gt[:, 6] == 1) & (gt[:, 7] == 1)]
    rows = []
    for track in np.unique(gt[:, 1]):
        g = gt[gt[:, 1] == track]
        g = g[np.argsort(g[:, 0])]
        vis = np.clip(g[:, 8], 0, 1)
        h = np.maximum(g[:, 5], 1.0)
        start_p = model.miss_base + model.miss_occ * (1 - vis) + model.miss_small * np.minimum(40.0 / h, 3.0)
        seen = ~_miss_mask(rng, np.clip(start_p, 0, 1), model.miss_run)
        logit = (model.score_bias + model.score_vis * vis + model.score_size * np.log2(h / 100.0)
                 + model.score_drift * _ar1(rng, len(g), 0.95))
        jitter = np.stack([_ar1(rng, len(g), model.jitter_memory) for _ in range(4)], 1) * model.jitter
        w2 = g[:, 4] * np.exp(jitter[:, 2])
        h2 = g[:, 5] * np.exp(jitter[:, 3])
        cx = g[:, 2] + g[:, 4] / 2 + jitter[:, 0] * g[:, 4]
        cy = g[:, 3] + g[:, 5] / 2 + jitter[:, 1] * g[:, 5]
        rows.append(np.column_stack([g[:, 0], cx - w2 / 2, cy - h2 / 2, w2, h2, _sigmoid(logit)])[seen])
    rows.append(_near_clutter(gt, rng, model))
    rows.append(_background_clutter(gt, width, height, length, rng, model))
    det = np.concatenate(rows)
    det = np.column_stack([det[:, 0], -np.ones(len(det)), det[:, 1:]])
    return det[np.lexsort((-det[:, 6], det[:, 0]))]


def _near_clutter(gt: np.ndarray, rng: np.random.Generator, model: NoiseModel) -> np.ndarray:
    """(K, 6) frame, x, y, w, h, score: boxes shifted off objects by 0.3-0.7 of their size, or a part of one."""
    g = gt[rng.random(len(gt)) < model.near_rate]
    shift = rng.uniform(0.3, 0.7, (len(g), 2)) * rng.choice([-1, 1], (len(g), 2))
    shrink = rng.uniform(0.5, 1.0, (len(g), 2))
    w, h = g[:, 4] * shrink[:, 0], g[:, 5] * shrink[:, 1]
    x = g[:, 2] + shift[:, 0] * g[:, 4]
    y = g[:, 3] + shift[:, 1] * g[:, 5] * 0.3
    score = _sigmoid(rng.normal(-1.2, 0.8, len(g)))
    return np.column_stack([g[:, 0], x, y, w, h, score])


def _background_clutter(gt: np.ndarray, width: float, height: float, length: int, rng: np.random.Generator,
                        model: NoiseModel) -> np.ndarray:
    """(K, 6): a few fixed places, person-sized, that fire in runs with their own typical score."""
    out = []
    sizes = gt[rng.integers(0, len(gt), model.background_sites), 4:6] if len(gt) else np.zeros((0, 2))
    for w, h in sizes:
        x, y = rng.uniform(0, max(width - w, 1)), rng.uniform(0, max(height - h, 1))
        run = 8.0
        start_p = np.full(length, model.background_on / (run * (1 - model.background_on)))
        on = np.flatnonzero(_miss_mask(rng, start_p, run))  # "miss" runs of this chain are firing runs
        score = _sigmoid(rng.normal(-0.8, 0.6) + 0.3 * rng.normal(size=len(on)))
        wobble = rng.normal(0, 0.03, (len(on), 2)) * [w, h]
        out.append(np.column_stack([on + 1.0, x + wobble[:, 0], y + wobble[:, 1], np.full(len(on), w),
                                    np.full(len(on), h), score]))
    return np.concatenate(out) if out else np.zeros((0, 6))


def camera_path(length: int, width: float, rng: np.random.Generator, pan: float = 0.004,
                zoom: float = 0.002) -> np.ndarray:
    """(length, 3) per frame: x shift, y shift (pixels) and scale of a camera that pans and zooms smoothly.

    pan: standard deviation of the pan speed as a fraction of the image width per frame (its y part is
    a third of it); zoom: standard deviation of the zoom speed (log scale per frame). Speeds drift (AR(1),
    memory 0.95), so the camera speeds up, slows and turns like a hand-held or vehicle camera.
    """
    speed = np.column_stack([_ar1(rng, length, 0.95) * pan * width, _ar1(rng, length, 0.95) * pan * width / 3,
                             _ar1(rng, length, 0.95) * zoom])
    path = np.cumsum(speed, axis=0)
    path[:, 2] = np.exp(np.clip(path[:, 2], -0.7, 0.7))
    return path


def move_boxes(gt: np.ndarray, path: np.ndarray, width: float, height: float) -> np.ndarray:
    """MOT rows (frame, id, x, y, w, h, ...) as the moving camera of `camera_path` sees them (about the image centre)."""
    out = gt.copy()
    p = path[gt[:, 0].astype(int) - 1]
    centre = np.array([width / 2, height / 2])
    out[:, 2:4] = centre + p[:, 2:3] * (gt[:, 2:4] - centre) - p[:, :2]
    out[:, 4:6] = gt[:, 4:6] * p[:, 2:3]
    return out


def write_sequence(gt_root: Path, out_root: Path, seq: str, seed: int, model: NoiseModel = NoiseModel(),
                   moving: bool = False) -> Path:
    """Write `<out_root>/<seq>/det/det.txt` and its seqinfo.ini (and with `moving` the moved gt/gt.txt);
    returns the det.txt path."""
    from pipeline import mot  # noqa: PLC0415 - the module runs as a script from the repository root

    info = mot.read_seqinfo(gt_root / seq / "seqinfo.ini")
    gt = np.loadtxt(gt_root / seq / "gt" / "gt.txt", delimiter=",", ndmin=2)
    if gt.shape[1] < 9:
        raise SystemExit(f"{gt_root / seq / 'gt' / 'gt.txt'}: needs MOT16/17 rows with class and visibility (9 columns)")
    rng = np.random.default_rng([seed, zlib.crc32(seq.encode())])
    if moving:
        gt = move_boxes(gt, camera_path(info.length, info.width, rng), info.width, info.height)
        (out_root / seq / "gt").mkdir(parents=True, exist_ok=True)
        np.savetxt(out_root / seq / "gt" / "gt.txt", gt, fmt="%d,%d,%.2f,%.2f,%.2f,%.2f,%d,%d,%.3f")
    det = detector_like(gt, info.width, info.height, info.length, rng, model)
    out = out_root / seq / "det" / "det.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    mot.write_mot(out, mot.format_table(det))
    shutil.copy(gt_root / seq / "seqinfo.ini", out_root / seq / "seqinfo.ini")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gt_root", type=Path, help="folder holding <seq>/gt/gt.txt and <seq>/seqinfo.ini")
    parser.add_argument("out_root", type=Path)
    parser.add_argument("--seqs", nargs="*", help="sequence folders (default: all with a gt.txt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--moving", action="store_true", help="film the ground truth with a simulated moving camera")
    for f in fields(NoiseModel):
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    model = NoiseModel(**{f.name: getattr(args, f.name) for f in fields(NoiseModel)})
    seqs = args.seqs or sorted(p.parent.parent.name for p in args.gt_root.glob("*/gt/gt.txt"))
    for seq in seqs:
        print(write_sequence(args.gt_root, args.out_root, seq, args.seed, model, args.moving))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
