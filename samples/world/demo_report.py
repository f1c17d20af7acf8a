"""How accurate a pipeline run on synthetic streams was, from what it stored, against the world's truth.

    print(demo_report(config, "runs/demo/detections.db"))

Per synthetic stream: precision/recall (IoU 0.5) of the stored detections (the detector's), identity
accuracy (IDF1) of the track ids they were matched to, directed
line counts from the pipeline's own `line_cross` events against the world's crossings, and zone
visits from its `zone_exit` events matched to the world's (same zone, exit within `match_s`) with
their dwell-time error. Frames: from the first to the last frame the pipeline stored.
"""
from __future__ import annotations

import numpy as np

from pipeline.config.models import PipelineConfig
from pipeline.sinks.storage import query
from samples.world.events import clip_events
from samples.world.render import World
from samples.world.scoring import score_stream
from samples.world.url import parse_synthetic_url


def demo_report(config: PipelineConfig, db_path, match_s: float = 1.5) -> str:
    rows, totals = [], {"line_err": 0, "line_truth": 0, "visits_matched": 0, "visits_truth": 0, "visits_pred": 0,
                        "dwell_err": []}
    for stream in config.streams:
        if not stream.url.startswith("synthetic://"):
            continue
        stored = query.detections_for_stream(db_path, stream.id)
        if len(stored.pts_ns) == 0:
            rows.append([stream.id, 0, "-", "-", "-", "-", "-"])
            continue
        spec = parse_synthetic_url(stream.url)
        frames = np.rint(stored.pts_ns * spec.fps / 1e9).astype(int)
        first, last = int(frames.min()), int(frames.max())
        det_rows = [(int(p), b, int(c), float(s), int(t)) for p, b, c, s, t in
                    zip(stored.pts_ns, stored.xyxy, stored.class_id, stored.score, stored.track_id)]
        score = score_stream(stream.url, det_rows, frames=range(first, last + 1))
        truth = [e for e in clip_events(World(spec.scene, spec.seed, spec.size, spec.fps), last + 1)["events"]
                 if first < e["frame"] <= last]
        events = query.events(db_path, stream_id=stream.id)
        lines = _line_accuracy(config, stream.id, spec, truth, events)
        visits = _zone_visits(truth, events, match_s)
        totals["line_err"] += lines["error"]
        totals["line_truth"] += lines["truth"]
        for key in ("matched", "truth", "pred"):
            totals[f"visits_{key}"] += visits[key]
        totals["dwell_err"] += visits["dwell_err"]
        det = score["detection"]
        rows.append([stream.id, score["frames"], f"{det['precision']:.3f}", f"{det['recall']:.3f}",
                     f"{score.get('idf1', 0):.3f}", f"{lines['pred']}/{lines['truth']} ({lines['accuracy']:.0%})",
                     f"{visits['matched']}/{visits['truth']} truth, {visits['pred']} found"])
    if not rows:
        return ""
    acc = 1 - totals["line_err"] / totals["line_truth"] if totals["line_truth"] else 1.0
    dwell = float(np.median(totals["dwell_err"])) if totals["dwell_err"] else float("nan")
    head = ["stream", "frames", "det precision", "det recall", "IDF1", "line crossings found/true", "zone visits matched"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    table = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [head] + rows]
    return "\n".join(["Accuracy against the synthetic world's ground truth:", *table,
                      f"line counts (per line and direction): {max(acc, 0.0):.1%} accurate; zone visits: "
                      f"{totals['visits_matched']} of {totals['visits_truth']} true visits found "
                      f"({totals['visits_pred']} reported), median dwell-time error {dwell:.2f} s"])


def _world_line(geometry: dict, start, end) -> str | None:
    """The world's line with these endpoints (the config copies the world's geometry)."""
    for name, (a, b) in geometry["lines"].items():
        if np.allclose([a, b], [start, end], atol=1.0):
            return name
    return None


def _line_accuracy(config, stream_id, spec, truth, events) -> dict:
    from samples.world.layout import viewpoint_geometry

    geometry = viewpoint_geometry(spec.scene, spec.size)
    names = {ln.name: _world_line(geometry, ln.start, ln.end) for ln in config.lines
             if ln.streams is None or stream_id in ln.streams}
    expected, found = {}, {}
    for e in truth:
        if e["kind"] == "line_cross" and e["rule"] in names.values():
            expected[(e["rule"], e["direction"])] = expected.get((e["rule"], e["direction"]), 0) + 1
    for e in events:
        if e.kind == "line_cross" and names.get(e.payload.get("line")):
            key = (names[e.payload["line"]], e.payload["direction"])
            found[key] = found.get(key, 0) + 1
    error = sum(abs(found.get(k, 0) - expected.get(k, 0)) for k in set(found) | set(expected))
    total = sum(expected.values())
    return {"pred": sum(found.values()), "truth": total, "error": error,
            "accuracy": max(0.0, 1 - error / total) if total else float(error == 0)}


def _zone_visits(truth, events, match_s: float) -> dict:
    true_exits = [(e["pts_ns"] / 1e9, e["dwell_s"], e["rule"]) for e in truth if e["kind"] == "zone_exit"]
    found = [(e.ts_ns / 1e9, e.payload.get("dwell_s", 0.0), e.payload.get("zone")) for e in events
             if e.kind == "zone_exit" and e.payload.get("reason") != "end_of_stream"]
    used, errors = set(), []
    for t_true, dwell_true, zone in sorted(true_exits):
        options = [(abs(t - t_true), i) for i, (t, _, z) in enumerate(found) if i not in used and z == zone]
        best = min(options) if options else None
        if best is not None and best[0] <= match_s:
            used.add(best[1])
            errors.append(abs(found[best[1]][1] - dwell_true))
    return {"matched": len(errors), "truth": len(true_exits), "pred": len(found), "dwell_err": errors}
