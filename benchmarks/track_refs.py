"""The trackers `track_bench.py` compares: ours and the references, each as `make(fps) -> step(dets)`.

`step` takes one frame's `Detections` and returns (boxes (K, 4) xyxy, ids (K,), scores (K,)): the rows
the tracker reports for that frame. References run with their default settings (norfair needs a
distance: IoU with threshold 0.7, as in its own MOT demo) and are skipped when not installed
(`pip install -e '.[bench]'`).
"""
from __future__ import annotations

from importlib import metadata

import numpy as np

from pipeline.config.models import TrackerConfig
from pipeline.stages.tracking.bytetrack import ByteTracker


def streamweave(fps, config: TrackerConfig | None = None):
    """Ours, as the MOT export writes it: tracks matched to a detection on the frame."""
    tracker = ByteTracker(config or TrackerConfig())

    def step(dets):
        out = tracker.update(dets)
        matched = np.count_nonzero(tracker.matched_ids >= 0)  # their rows come first, the coasted ones after
        return out.xyxy[:matched], out.track_id[:matched], out.score[:matched]
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


def motpy_tracker(fps):
    from motpy import Detection, MultiObjectTracker  # noqa: PLC0415

    tracker = MultiObjectTracker(dt=1.0 / fps)
    ids: dict[str, int] = {}

    def step(dets):
        tracker.step([Detection(box=b, score=s, class_id=c) for b, s, c in zip(dets.xyxy, dets.score, dets.class_id)])
        tracks = tracker.active_tracks()
        boxes = np.array([t.box for t in tracks]).reshape(-1, 4)
        return boxes, np.array([ids.setdefault(t.id, len(ids) + 1) for t in tracks], np.int64), \
            np.array([t.score or 0.0 for t in tracks])
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

        if not hasattr(trackers, kind):  # OC-SORT arrived in trackers 2.3
            raise ImportError(f"trackers {metadata.version('trackers')} has no {kind}", name="trackers>=2.3")
        tracker = getattr(trackers, kind)(frame_rate=fps)
        return lambda dets: _from_sv(tracker.update(_sv(dets)))
    return make


def boxmot(kind):
    """boxmot's motion-only trackers, with their defaults and no image (neither uses one without ReID or CMC)."""
    def make(fps):
        import logging  # noqa: PLC0415

        import boxmot as bm  # noqa: PLC0415

        logging.getLogger("boxmot").disabled = True  # an INFO panel per tracker made (it resets its level)
        tracker = bm.ByteTrack(frame_rate=round(fps)) if kind == "ByteTrack" else getattr(bm, kind)()
        no_image = np.zeros((1, 1, 3), np.uint8)

        def step(dets):
            rows = np.column_stack([dets.xyxy, dets.score, dets.class_id]).astype(np.float32).reshape(-1, 6)
            out = tracker.update(rows, no_image)  # (K, 8): x1, y1, x2, y2, id, score, class, detection row
            return out[:, :4], out[:, 4].astype(np.int64), out[:, 5]
        return step
    return make


def supervision_bytetrack(fps):
    import supervision as sv  # noqa: PLC0415

    tracker = sv.ByteTrack(frame_rate=fps)
    return lambda dets: _from_sv(tracker.update_with_detections(_sv(dets)))


TRACKERS = {
    "streamweave": ("**streamweave ByteTracker (online)**", streamweave),
    "norfair": ("norfair (IoU)", norfair_iou),
    "motpy": ("motpy", motpy_tracker),
    "sort": ("Roboflow `trackers` SORT", roboflow("SORTTracker")),
    "bytetrack": ("Roboflow `trackers` ByteTrack", roboflow("ByteTrackTracker")),
    "ocsort": ("Roboflow `trackers` OC-SORT", roboflow("OCSORTTracker")),
    "supervision": ("supervision ByteTrack", supervision_bytetrack),
    "boxmot-ocsort": ("boxmot OC-SORT", boxmot("OcSort")),
    "boxmot-bytetrack": ("boxmot ByteTrack", boxmot("ByteTrack")),
}


def versions() -> str:
    found = []
    for name in ("norfair", "motpy", "trackers", "supervision", "boxmot", "trackeval"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return ", ".join(found)
