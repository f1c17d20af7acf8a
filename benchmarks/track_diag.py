"""Where the tracker loses identities on fast motion: the tune sequences at a fraction of their frame rate.

    .venv/bin/python benchmarks/track_diag.py [--every 3] [--noise blink] [--seqs MOT17-02 MOT17-04 MOT17-09]
        [--pan 0.004] [--zoom 0.008] [--set key=value ...]

Keeps every `--every`-th frame of each MOT17 tune sequence's ground truth (objects move that many times further
per frame, as on the report split's faster, moving-camera sequences), with `--pan` / `--zoom` films it with the
simulated moving camera of `mot_noise.py` (standard deviations of its pan speed, a fraction of the image width a
frame, and of its zoom speed; a camera that walks or drives forward sees a zoom), makes detections with
`../shared/tools/make_mot_dets.py` (`--noise`: the benchmark's `blink` one-frame misses or `uniform` noise), and
prints per sequence and combined the scores of ours (with `--set` overrides of `TrackerConfig`) and of Roboflow
`trackers` SORT, then ours' identity changes and the detections no track took.

An identity change is counted per detection: detections are assigned to ground-truth boxes (IoU >= 0.5), and
when an object's detection is matched to another track than the last one it was matched to, the change is
`new track` (a track just confirmed), `from another object` (the track last followed someone else; split by
how much the two objects' true boxes overlap) or `back to an earlier track` (two tracks took turns on one
object). Each is labelled with the association stage that made the match, told apart by the detection's score
(with `recovery` off, the default: a high-score detection continuing a confirmed track was matched in the first
stage, a low-score one in the second).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import zlib  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import mot_noise  # noqa: E402
import track_bench  # noqa: E402
import track_refs  # noqa: E402
from pipeline import mot  # noqa: E402
from pipeline.config.models import TrackerConfig  # noqa: E402
from pipeline.stages.tracking.bytetrack import ByteTracker  # noqa: E402
from pipeline.stages.tracking.matching import iou_matrix, linear_assignment  # noqa: E402
from pipeline.stages.tracking.mot_eval import evaluate_mot  # noqa: E402



def subsample(mot17: Path, seq: str, every: int, out: Path) -> None:
    """Write out/seq/gt/gt.txt and seqinfo.ini keeping frames 1, 1 + every, ... renumbered 1, 2, ..."""
    gt = mot.read_mot(mot17 / seq / "gt" / "gt.txt")
    gt = gt[(gt[:, 0] - 1) % every == 0]
    gt[:, 0] = (gt[:, 0] - 1) // every + 1
    info = mot.read_seqinfo(mot17 / seq / "seqinfo.ini")
    (out / seq / "gt").mkdir(parents=True)
    np.savetxt(out / seq / "gt" / "gt.txt", gt, delimiter=",", fmt="%d,%d,%.2f,%.2f,%.2f,%.2f,%d,%d,%.5f")
    (out / seq / "seqinfo.ini").write_text(
        f"[Sequence]\nname={seq}\nimDir=img1\nframeRate={info.frame_rate / every:g}\n"
        f"seqLength={(info.length + every - 1) // every}\nimWidth={info.width}\nimHeight={info.height}\nimExt=.jpg\n")


def film(gt_root: Path, seq: str, pan: float, zoom: float) -> None:
    """Rewrite gt_root/seq/gt/gt.txt as the moving camera of `mot_noise.camera_path` sees it (seeded per sequence)."""
    info = mot.read_seqinfo(gt_root / seq / "seqinfo.ini")
    gt_file = gt_root / seq / "gt" / "gt.txt"
    rng = np.random.default_rng([0, zlib.crc32(seq.encode())])
    path = mot_noise.camera_path(info.length, info.width, rng, pan=pan, zoom=zoom)
    gt = mot_noise.move_boxes(mot.read_mot(gt_file), path, info.width, info.height)
    np.savetxt(gt_file, gt, delimiter=",", fmt="%d,%d,%.2f,%.2f,%.2f,%.2f,%d,%d,%.5f")


def truth(gt_file: Path) -> np.ndarray:
    """Rows of the objects TrackEval scores (pedestrians marked to count)."""
    gt = mot.read_mot(gt_file)
    return gt[(gt[:, 6] == 1) & (gt[:, 7] == 1)]


def identity_changes(config: TrackerConfig, frames, gt: np.ndarray) -> tuple[Counter, Counter]:
    """(identity changes by cause and stage, detections no reported track took by score band)."""
    tracker = ByteTracker(config)
    last_track: dict[int, int] = {}  # object -> track its detection last went to
    last_object: dict[int, int] = {}  # track -> object it last followed
    changes, untaken = Counter(), Counter()
    for frame, dets in frames:
        known = set(last_object)
        tracker.update(dets)
        rows = gt[gt[:, 0] == frame]
        boxes = np.column_stack([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]])
        pairs = linear_assignment(1.0 - iou_matrix(dets.xyxy, boxes), 0.5)
        for d, g in pairs:
            obj, track = int(rows[g, 1]), int(tracker.matched_ids[d])
            if track < 0:
                continue
            before = last_track.get(obj)
            if before is not None and before != track:
                stage = "first" if dets.score[d] >= config.high_threshold else "second"
                if track not in known:
                    changes["new track"] += 1
                elif last_object[track] == obj:
                    changes[f"back to an earlier track, {stage} stage"] += 1
                else:
                    other = rows[rows[:, 1] == last_object[track]]
                    overlap = iou_matrix(boxes[g:g + 1], np.column_stack([other[:, 2:4], other[:, 2:4] + other[:, 4:6]]))
                    close = "overlapping > 0.5" if overlap.size and overlap.max() > 0.5 else "apart or gone"
                    changes[f"from another object ({close}), {stage} stage"] += 1
            last_track[obj], last_object[track] = track, obj
        score = dets.score[tracker.matched_ids < 0]
        untaken["score < new_track_threshold"] += int((score < config.new_track_threshold).sum())
        untaken["score >= new_track_threshold"] += int((score >= config.new_track_threshold).sum())
    return changes, untaken


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mot17", type=Path, default=REPO.parent / "shared" / "data" / "mot17")
    parser.add_argument("--seqs", nargs="+", default=track_bench.SPLITS["tune"]["mot17"])
    parser.add_argument("--every", type=int, default=3, help="keep every n-th frame")
    parser.add_argument("--noise", choices=["blink", "uniform"], default="blink")
    parser.add_argument("--pan", type=float, default=0.0,
                        help="moving camera: standard deviation of its pan speed (a fraction of the width a frame)")
    parser.add_argument("--zoom", type=float, default=0.0,
                        help="moving camera: standard deviation of its zoom speed (log scale a frame)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TrackerConfig overrides for ours")
    args = parser.parse_args(argv)
    config = TrackerConfig(**dict(item.split("=", 1) for item in args.set))
    with tempfile.TemporaryDirectory() as tmp:
        gt_root = Path(tmp) / "gt"
        for seq in args.seqs:
            subsample(args.mot17, seq, args.every, gt_root)
            if args.pan or args.zoom:
                film(gt_root, seq, args.pan, args.zoom)
        det_root = track_bench.mot17_set(f"mot17-{args.noise}", gt_root, args.seqs, Path(tmp), args.mot17.parents[1])
        sequences = {}
        for seq in args.seqs:
            info = mot.read_seqinfo(gt_root / seq / "seqinfo.ini")
            sequences[seq] = (info, list(mot.frames_of(mot.read_mot(det_root / seq / "det" / "det.txt"), info.length)))
        camera = f", camera pan {args.pan} zoom {args.zoom}" if args.pan or args.zoom else ""
        print(f"1 frame in {args.every}, {args.noise} noise{camera}; ours with {config.model_dump(exclude_defaults=True)}")
        print("| tracker | sequence | HOTA | IDF1 | MOTA | IDSW | FN |\n| --- | --- | --- | --- | --- | --- | --- |")
        for key, make in (("ours", lambda fps: track_refs.streamweave(fps, config)), ("sort", track_refs.TRACKERS["sort"][1])):
            results, _ = track_bench.run_tracker(make, sequences, Path(tmp) / key)
            for name, chosen in [*((seq, [seq]) for seq in args.seqs), ("combined", args.seqs)]:
                s = evaluate_mot(gt_root, {seq: results[seq] for seq in chosen})
                print(f"| {key} | {name} | {s['HOTA']:.1f} | {s['IDF1']:.1f} | {s['MOTA']:.1f} | {s['IDSW']} | {s['FN']} |")
        for seq, (_, frames) in sequences.items():
            changes, untaken = identity_changes(config, frames, truth(gt_root / seq / "gt" / "gt.txt"))
            print(f"\n{seq}: identity changes {sum(changes.values())}: {dict(changes.most_common())}")
            print(f"{seq}: detections no reported track took: {dict(untaken)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
