"""Score a pipeline run on a synthetic stream against the world's exact ground truth.

    from samples.world.scoring import score_stream
    report = score_stream("synthetic://plaza?seed=3&fps=15&size=640x360", rows)

`rows`: the stored per-frame detections of that one stream, each a mapping with keys
`pts_ns` (int), `xyxy` (4 floats, source pixels), `class_id`, `score`, `track_id` (-1 = untracked),
or a sequence in that order. Frame index = round(pts_ns * fps / 1e9).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np

from samples.world.events import clip_events, line_crossings
from samples.world.layout import CLASS_NAMES
from samples.world.metrics import box_iou
from samples.world.render import World
from samples.world.url import parse_synthetic_url

MIN_VISIBILITY = 0.35  # ground truth below this (or under MIN_HEIGHT_PX tall) is neither required nor penalised
MIN_HEIGHT_PX = 8.0
IOU = 0.5


def _rows(rows: Iterable[Mapping | Sequence]) -> list[tuple[int, np.ndarray, int, float, int]]:
    out = []
    for r in rows:
        if isinstance(r, Mapping):
            out.append((int(r["pts_ns"]), np.asarray(r["xyxy"], np.float64), int(r["class_id"]),
                        float(r["score"]), int(r.get("track_id", -1))))
        else:
            out.append((int(r[0]), np.asarray(r[1], np.float64), int(r[2]), float(r[3]), int(r[4])))
    return out


def _frame_matches(dets, truth):
    """Greedy per-class IoU>=0.5 matching in one frame: (pairs [(det k, gt j)], n unmatched dets not on ignored gt)."""
    keep = [j for j, g in enumerate(truth) if g.visibility >= MIN_VISIBILITY and g.box[3] - g.box[1] >= MIN_HEIGHT_PX]
    ignored = [j for j in range(len(truth)) if j not in set(keep)]
    pairs, false_pos = [], []
    if not dets:
        return pairs, false_pos, keep
    db = np.stack([d[1] for d in dets])
    gb = np.asarray([g.box for g in truth], np.float64).reshape(-1, 4)
    iou = box_iou(db, gb)
    taken = set()
    for k in np.argsort([-d[3] for d in dets], kind="stable"):
        cands = [(iou[k, j], j) for j in keep if j not in taken and truth[j].class_id == dets[k][2] and iou[k, j] >= IOU]
        if cands:
            j = max(cands)[1]
            taken.add(j)
            pairs.append((int(k), j))
        elif not any(iou[k, j] >= IOU for j in ignored):
            false_pos.append(int(k))
    return pairs, false_pos, keep


def _idf1(id_pairs: dict, n_pred: int, n_gt: int) -> float:
    """IDF1 from co-occurrence counts {(gt_id, pred_id): frames matched} via optimal one-to-one assignment."""
    import lap  # noqa: PLC0415 - a core dependency, loaded only for tracking scores

    if not id_pairs or n_pred + n_gt == 0:
        return 0.0
    gts = sorted({g for g, _ in id_pairs})
    preds = sorted({p for _, p in id_pairs})
    cost = np.zeros((len(gts), len(preds)))
    gi, pi = {g: i for i, g in enumerate(gts)}, {p: i for i, p in enumerate(preds)}
    for (g, p), n in id_pairs.items():
        cost[gi[g], pi[p]] = -n
    _, x, _ = lap.lapjv(cost, extend_cost=True)
    idtp = -sum(cost[i, j] for i, j in enumerate(x) if j >= 0)
    return float(2 * idtp / (n_pred + n_gt))


def _line_counts(tracks: dict[int, list[tuple[int, np.ndarray]]], lines: dict) -> dict:
    counts = {name: {"in": 0, "out": 0} for name in lines}
    for samples in tracks.values():
        samples.sort(key=lambda s: s[0])
        frames = np.asarray([s[0] for s in samples])
        anchors = np.asarray([((b[0] + b[2]) / 2, b[3]) for _, b in samples], np.float64)
        for name, (a, b) in lines.items():
            for _, direction in line_crossings(frames, anchors, a, b):
                counts[name][direction] += 1
    return counts


def score_stream(url: str, rows: Iterable[Mapping | Sequence], frames: Iterable[int] | None = None) -> dict:
    """Detection precision/recall (IoU 0.5, per class and overall), IDF1 and line-count accuracy.

    frames: the frame indices the pipeline processed (default: every frame from the first to the last
    one that has a detection; frames dropped by a live pipeline then count as misses).
    Returns {"frames", "detection": {"precision", "recall", "per_class": {name: {...}}},
    and when track ids are present "idf1", "line_counts": {"truth", "predicted"}, "line_count_accuracy"}.
    """
    spec = parse_synthetic_url(url)
    data = _rows(rows)
    by_frame: dict[int, list] = defaultdict(list)
    for r in data:
        by_frame[int(round(r[0] * spec.fps / 1e9))].append(r)
    if frames is None:
        frames = range(min(by_frame), max(by_frame) + 1) if by_frame else range(0)
    frames = sorted(set(frames))
    world = World(spec.scene, spec.seed, spec.size, spec.fps)
    tp, fp, fn = np.zeros(len(CLASS_NAMES), int), np.zeros(len(CLASS_NAMES), int), np.zeros(len(CLASS_NAMES), int)
    id_pairs: dict[tuple[int, int], int] = defaultdict(int)
    n_pred_ids = n_gt_ids = 0
    tracks: dict[int, list] = defaultdict(list)
    for f in frames:
        dets, truth = by_frame.get(f, []), world.ground_truth(f)
        pairs, false_pos, keep = _frame_matches(dets, truth)
        for k, j in pairs:
            tp[truth[j].class_id] += 1
            if dets[k][4] >= 0:
                id_pairs[(truth[j].track_id, dets[k][4])] += 1
        for k in false_pos:
            fp[dets[k][2]] += 1
        matched = {j for _, j in pairs}
        for j in keep:
            fn[truth[j].class_id] += j not in matched
        n_gt_ids += len(keep)
        counted = {k for k, _ in pairs} | set(false_pos)  # detections on ignored objects do not count
        for k, d in enumerate(dets):
            if d[4] >= 0:
                n_pred_ids += k in counted
                tracks[d[4]].append((f, d[1]))
    report = {"frames": len(frames), "detection": _pr(tp, fp, fn)}
    if tracks:
        report["idf1"] = _idf1(id_pairs, n_pred_ids, n_gt_ids)
        report.update(_count_report(world, frames, tracks))
    return report


def _pr(tp, fp, fn) -> dict:
    def pr(t, p, n):
        return {"precision": float(t / max(t + p, 1)), "recall": float(t / max(t + n, 1)), "tp": int(t), "fp": int(p), "fn": int(n)}

    per_class = {CLASS_NAMES[c]: pr(tp[c], fp[c], fn[c]) for c in range(len(CLASS_NAMES)) if tp[c] + fp[c] + fn[c]}
    return {**pr(tp.sum(), fp.sum(), fn.sum()), "per_class": per_class}


def _count_report(world: World, frames: list[int], tracks: dict) -> dict:
    if not frames:
        return {}
    truth = clip_events(world, frames[-1] + 1)
    lines = truth["geometry"]["lines"]
    expected = {name: {"in": 0, "out": 0} for name in lines}
    for e in truth["events"]:
        if e["kind"] == "line_cross" and e["frame"] > frames[0]:
            expected[e["rule"]][e["direction"]] += 1
    predicted = _line_counts(tracks, lines)
    total = sum(v for c in expected.values() for v in c.values())
    error = sum(abs(predicted[n][d] - expected[n][d]) for n in lines for d in ("in", "out"))
    accuracy = max(0.0, 1 - error / total) if total else float(error == 0)
    return {"line_counts": {"truth": expected, "predicted": predicted}, "line_count_accuracy": accuracy}
