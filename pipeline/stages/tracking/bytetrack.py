"""ByteTrack-style multi-object tracker for one stream: IoU association in two stages by score.

Per frame (`update`):
1. every track's Kalman state is predicted one frame ahead;
2. high-score detections (>= `high_threshold`) are matched to confirmed tracks, lost ones included,
   on IoU x detection score (a confident detection wins a contested track);
3. the low-score detections (>= `low_threshold`) are matched to the confirmed tracks still unmatched,
   on plain IoU >= `low_match_iou`; this keeps occluded objects whose score dropped, while low-score
   clutter can never start a track;
4. with `recovery`, observation-centric recovery (OC-SORT): the high-score detections left are matched to
   the lost tracks still unmatched on IoU with the box each was last *seen* at, minimum `recovery_iou`: an
   object that stopped while hidden is found where it was, not where its velocity carried the prediction;
5. the remaining high-score detections are offered to tentative tracks; tentative tracks left
   unmatched are removed at once;
6. unmatched detections above `new_track_threshold` start tentative tracks; a track is confirmed after
   `min_hits` matched frames and only then gets an id; a confirmed track unmatched for more than
   `max_lost_frames` frames is ended.

`low_scores` says how the low-score detections are used: `separate` is steps 3 and 6 above (ByteTrack); `joint`
matches every detection >= `low_threshold` in step 2, on plain IoU >= 0.3, and starts tracks from 0.25 (SORT);
`adaptive` (the default) is joint while at least half of the recent low-score detections lay on a confirmed track's
prediction (a detector whose low scores are real, partly hidden objects) and separate otherwise (one whose low scores
are mostly clutter).

With `follow_shared_motion`, the tracks no detection matched in the first stage are moved by the shift the
matched tracks share (their median innovation, when it is significant): on a moving camera a lost track
then stays on the scene instead of drifting away from where its object will reappear. A clearer shift is
taken as a change of the camera's speed: every track, matched ones too, is moved by it and goes on moving
by it on the following frames (a shared velocity that passes into each track's own over a few frames), so
on a panning camera a track missed for a frame, or just started with no velocity of its own, is predicted
where its object went. A lost track counts (box heights) the shared motion it was moved by while unseen that no
velocity had taken in yet: the camera's changes of speed, not a steady pan's distance. With `drift_scale`, its
first-stage similarity above the gate is weighted by exp(-(drift / drift_scale)^2): such a track is mostly a stale
duplicate of an object a recent track follows, and loses a contested detection to it, while on a still camera a
hidden object coming back keeps its full weight. With `camera_motion`, the warp moves the tracks and the count stays 0.

With `reanchor`, a track found again after a gap is re-anchored on its observations (OC-SORT's idea):
its velocity becomes the displacement from the last observation to this one over the gap, instead of what
the filter drifted to while it predicted blind. With `camera_motion` given to `update`, every track is
first moved by the camera's motion (`kalman.warp`), as BoT-SORT does for moving cameras.

Output rows (the tracks): every confirmed track matched on this frame, with its Kalman-corrected box
(smoother than the raw detection) and the detection's score and class, in the order of the input rows; with
`min_hits` 1, then the tracks born on this frame with their detection's box; then every confirmed track lost for at most `coast_frames` frames, with its predicted box and score 0.0 (so
a consumer can tell a prediction from a detection). Tentative tracks are never output. `matched_ids` says
which input row went to which reported track, so the detections themselves can carry its id.
Ids are 1, 2, 3, ... from the tracker's `TrackIds` (its own, or the stream's for a whole run, which
outlives the tracker); an id is spent only when a track is confirmed, so clutter that never confirms burns
no ids. Association is class-aware (`class_aware`): a detection only matches a track of its class.
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.config.models import TrackerConfig
from pipeline.stages.tracking import kalman
from pipeline.stages.tracking.ids import TrackIds
from pipeline.stages.tracking.matching import index_pairs, iou_matrix, linear_assignment
from pipeline.stages.tracking.shared_motion import MIN_PAIRS, drift_weight, shared_shift
from pipeline.types import Detections

_TENTATIVE_MATCH_IOU = 0.3  # a tentative track has no velocity yet, so it needs a larger overlap
_NO_PAIRS = np.zeros((0, 2), np.int64)
_NO_ROWS = np.zeros(0, np.int64)
# Per frame, the shared velocity keeps this part; the rest passes into every track's own velocity, so what a
# newborn track inherits is the camera's recent change of speed, not the street's usual traffic (tune split:
# with all of it kept, and every significant shift taken as the camera's, the demo world lost 6 HOTA: its objects
# mostly move one way, and newborn tracks inherited that; 0.5 to 0.9 were within 0.8 HOTA of 0.7).
_SHARED_VELOCITY_DECAY = 0.7
# `low_scores: joint` (SORT's association): every detection on plain IoU, in one stage, and SORT's threshold to
# start a track.
_JOINT_MATCH_IOU = 0.3
_JOINT_NEW_TRACK_THRESHOLD = 0.25
# `low_scores: adaptive`: joint once at least this share of the low-score detections lay on a confirmed track's
# prediction (IoU >= `low_match_iou`, same class), counted over about the last `_LOW_SCORE_MEMORY` low-score
# detections (older ones fade out) and only after `_LOW_SCORE_MIN_COUNT` of them (tune split: MOT17 with independent
# noise 0.58 to 0.95 per sequence, the demo world's detector 0.17 to 0.39, the detector-like noise 0.35 to 0.65).
_JOINT_SHARE = 0.5
_LOW_SCORE_MEMORY = 500
_LOW_SCORE_MIN_COUNT = 100
_STATE = ("_mean", "_cov", "_id", "_hits", "_lost", "_class", "_seen", "_drift")  # per-track arrays, one row per track


class ByteTracker:
    """Tracks of one stream. Not thread-safe; one instance per stream. ids: where its ids come from (default:
    its own, from 1)."""

    def __init__(self, config: TrackerConfig | None = None, ids: TrackIds | None = None):
        self.config = config or TrackerConfig()
        self._ids = ids or TrackIds()
        self.matched_ids = np.zeros(0, np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget every track (e.g. after a stream reconnects to another scene). Ids go on from where they
        were, so an id never names two objects."""
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._id = np.zeros(0, np.int64)  # -1 while tentative
        self._hits = np.zeros(0, np.int32)
        self._lost = np.zeros(0, np.int32)  # frames since the last match; 0 = matched on this frame
        self._class = np.zeros(0, np.int32)
        self._seen = np.zeros((0, 4))  # xyah of the last detection matched to the track
        self._drift = np.zeros(0)  # box heights the shared motion moved the track by since its last match
        self._shared_velocity = (0.0, 0.0)  # pixels per frame every track moves by on top of its own velocity
        self._low_count = 0.0  # low-score detections seen (fading), and how many of them lay on a confirmed track
        self._low_on_tracks = 0.0
        self.frame_count = 0
        self._updated_at = 0  # frame_count at the last `update`: the frames between two are dropped ones

    @property
    def active_track_ids(self) -> np.ndarray:
        """Ids of confirmed tracks still alive (seen or coasting), (K,) int64."""
        return self._id[self._id >= 0].copy()

    def skip(self, frames: int) -> None:
        """Advance `frames` frames that were never seen (dropped upstream): tracks coast, tentative ones too (a frame
        nobody looked at is no miss: on a stream that drops every other frame a new object must still be confirmed),
        and a track unseen for more than `max_lost_frames` ends however long the gap (later frames predict nothing)."""
        self.frame_count += frames
        for _ in range(min(frames, self.config.max_lost_frames + 1)):
            self._predict()
        self._retire(_NO_ROWS)

    def update(self, dets: Detections, camera_motion: np.ndarray | None = None) -> Detections:
        """Associate one frame's host detections; returns the tracks reported on it, with `track_id` set.

        dets: the detections of a single frame (numpy arrays). Rows below `low_threshold` are ignored.
        camera_motion: optional (2, 3) affine from the previous frame's pixels to this frame's
        (`CameraMotion.estimate`); the tracks are moved by it before they are matched.
        Afterwards `matched_ids` (N,) int64 holds, per row of `dets`, the id of the reported track it was
        matched to (-1: none, e.g. a tentative track's or clutter).
        """
        cfg = self.config
        self.frame_count += 1
        elapsed, self._updated_at = self.frame_count - self._updated_at, self.frame_count
        self._predict()
        if camera_motion is not None and len(self._mean):
            self._warp(camera_motion)
        xyxy = np.asarray(dets.xyxy, np.float64)
        xyah = kalman.xyxy_to_xyah(xyxy)
        score = np.asarray(dets.score, np.float64)
        class_id = np.asarray(dets.class_id, np.int32)
        high = (score >= cfg.high_threshold).nonzero()[0]
        low = ((score >= cfg.low_threshold) & (score < cfg.high_threshold)).nonzero()[0]
        # Every stage matches on a part of one matrix (each element is the same IoU whichever part it is in).
        iou = self._iou(self._mean[:, :4], xyxy, class_id)
        confirmed = (self._id >= 0).nonzero()[0]
        tentative = (self._id < 0).nonzero()[0]

        joint = self._joint(iou, confirmed, low)
        weight = drift_weight(self._drift, self._lost, cfg.drift_scale)
        if joint:
            high = (score >= cfg.low_threshold).nonzero()[0]
            low = low[:0]
            first, high, confirmed = self._associate(iou, confirmed, high, None, _JOINT_MATCH_IOU, weight)
        else:
            first, high, confirmed = self._associate(iou, confirmed, high, score, cfg.match_iou, weight)
        if cfg.follow_shared_motion and self._follow_shared_motion(first, xyah, elapsed):
            iou = self._iou(self._mean[:, :4], xyxy, class_id)
        second, _, confirmed = self._associate(iou, confirmed, low, None, cfg.low_match_iou)
        recovered = _NO_PAIRS
        if cfg.recovery:
            lost = confirmed[self._lost[confirmed] > 1]
            seen = self._iou(self._seen, xyxy, class_id)
            recovered, high, _ = self._associate(seen, lost, high, None, cfg.recovery_iou)
        third, high, tentative = self._associate(iou, tentative, high, score, _TENTATIVE_MATCH_IOU)
        matched = np.concatenate([first, second, recovered, third])
        self._correct(matched, xyah, class_id)
        if len(third):  # only the last stage holds tentative tracks
            hit = third[:, 0]
            self._confirm(hit[self._hits.take(hit) >= cfg.min_hits])
        new_track_threshold = cfg.new_track_threshold
        if joint:
            new_track_threshold = min(new_track_threshold, _JOINT_NEW_TRACK_THRESHOLD)
        births = high[score[high] >= new_track_threshold]
        rows, shown = self._shown(matched)
        boxes = kalman.xyah_to_xyxy(self._mean[shown, :4]).astype(np.float32)
        ids = self._id[shown]
        coasting_class = self._class[shown[len(rows):]]
        self._retire(tentative)
        self._start(births, xyah, class_id)
        if cfg.min_hits <= 1 and len(births):  # reported at once, with the detection's own box
            k = len(rows)
            rows = np.concatenate([rows, births])
            boxes = np.concatenate([boxes[:k], dets.xyxy[births], boxes[k:]])
            ids = np.concatenate([ids[:k], self._id[-len(births):], ids[k:]])
        self.matched_ids = np.empty(len(dets), np.int64)
        self.matched_ids.fill(-1)
        self.matched_ids[rows] = ids[:len(rows)]
        return self._output(dets, rows, boxes, ids, coasting_class)

    def _iou(self, xyah: np.ndarray, xyxy: np.ndarray, class_id: np.ndarray) -> np.ndarray:
        """(T, N) IoU of every track's box (`xyah`, (T, 4)) with every detection, 0 across classes when
        `class_aware`."""
        iou = iou_matrix(kalman.xyah_to_xyxy(xyah), xyxy)
        if self.config.class_aware:
            iou *= self._class[:, None] == class_id[None, :]
        return iou

    def _joint(self, iou, confirmed, low) -> bool:
        """Whether this frame's detections are matched in one stage on plain IoU (`low_scores`).

        adaptive: counts the low-score detections that lie on a confirmed track's prediction (IoU >= `low_match_iou`,
        same class). A detector whose low scores are objects it sees partly hidden (they lie on tracks) is
        matched as SORT does: a hidden person's low-score detection continues their track at IoU 0.3 and may start
        one. A detector whose low scores are mostly clutter (beside objects, in the background) keeps ByteTrack's
        second stage, where clutter can neither start a track nor take one at small overlap.
        """
        mode = self.config.low_scores
        if mode != "adaptive":
            return mode == "joint"
        if len(low):
            on_tracks = 0
            if len(confirmed):
                nearest = iou.take(confirmed, 0).take(low, 1).max(axis=0)
                on_tracks = np.count_nonzero(nearest >= self.config.low_match_iou)
            fade = (1.0 - 1.0 / _LOW_SCORE_MEMORY) ** len(low)
            self._low_count = self._low_count * fade + len(low)
            self._low_on_tracks = self._low_on_tracks * fade + on_tracks
        return self._low_count >= _LOW_SCORE_MIN_COUNT and self._low_on_tracks >= _JOINT_SHARE * self._low_count

    def _predict(self) -> None:
        vx, vy = self._shared_velocity
        carried = ((1.0 - _SHARED_VELOCITY_DECAY) * vx, (1.0 - _SHARED_VELOCITY_DECAY) * vy)
        self._shared_velocity = velocity = (vx - carried[0], vy - carried[1])
        if len(self._mean) == 0:
            return
        # A coasting track keeps moving but stops growing or shrinking.
        self._mean[self._lost > 0, 7] = 0.0
        # Every track moves by its own velocity plus the shared one; part of the shared one becomes its own.
        if carried != (0.0, 0.0):  # a still camera's is zero (adding it would change nothing)
            self._mean[:, 4:6] += carried
        self._mean, self._cov = kalman.predict(self._mean, self._cov)
        if velocity != (0.0, 0.0):
            self._mean[:, :2] += velocity
            self._seen[:, :2] += velocity
            self._drift += math.hypot(*velocity) / np.maximum(self._mean[:, 3], 1.0)
        self._lost += 1

    def _warp(self, affine: np.ndarray) -> None:
        self._mean, self._cov = kalman.warp(self._mean, self._cov, affine)
        seen = np.zeros((len(self._seen), 8))
        seen[:, :4] = self._seen
        self._seen = kalman.warp(seen, np.zeros((0, 8, 8)), affine)[0][:, :4]

    def _follow_shared_motion(self, pairs: np.ndarray, xyah: np.ndarray, elapsed: int) -> bool:
        """Move the tracks not matched in the first stage by the shift that the matched ones share, when it
        is significant, and every track (on this frame and the next ones) when it is clearly the camera's;
        returns whether anything moved. elapsed: frames since the last update (more than 1 after dropped frames).

        When the camera pans, every detection moves by the same amount the predictions did not expect; the
        median of the matched tracks' innovations measures it without the picture (`shared_shift`), and lost
        tracks (whose prediction no detection corrects) follow it instead of drifting off the scene. A still
        camera moves nothing.
        """
        if len(pairs) < MIN_PAIRS:
            return False
        t = pairs[:, 0]
        stack = np.empty((len(t), 5))
        np.subtract(xyah[pairs[:, 1], :2], self._mean[t, :2], out=stack[:, :2])  # innovations
        stack[:, 2] = self._cov[t, 0, 0]  # predicted position variances
        stack[:, 3] = self._cov[t, 1, 1]
        stack[:, 4] = self._mean[t, 3]
        found = shared_shift(stack)
        if found is None:
            return False
        shift, camera = found
        others = np.ones(len(self._mean), bool)
        others[t] = False
        self._mean[others, :2] += shift
        self._seen[others, :2] += shift
        self._drift[others] += math.hypot(*shift) / np.maximum(self._mean[others, 3], 1.0)
        # A clearer shift is the camera's: the matched tracks' predictions take it as well, so their own velocities
        # do not absorb it one by one, and every track goes on moving by it (a newborn track too: its own velocity
        # starts at zero). The shift measured is the change of the camera's speed the tracks missed, over the frames
        # since the last update: after dropped frames, a speed per frame is that shift shared out among them.
        if camera != (0.0, 0.0):
            self._mean[t, :2] += camera
            vx, vy = self._shared_velocity
            self._shared_velocity = (vx + camera[0] / elapsed, vy + camera[1] / elapsed)
        return True

    def _associate(self, iou, tracks, det_rows, score, min_similarity, weight=None):
        """Match track indices to detection rows on `iou` ((T, N), `_iou`; x score when given).

        weight: optional (T,) factor of each track's similarity above `min_similarity` (the gate stays).
        Returns ((K, 2) int64 track/row pairs, rows left, tracks left).
        """
        if len(tracks) == 0 or len(det_rows) == 0:
            return _NO_PAIRS, det_rows, tracks
        similarity = iou.take(tracks, 0).take(det_rows, 1)  # take: a third of fancy indexing's cost
        if score is not None:
            similarity *= score.take(det_rows)
        cost = 1.0 - similarity
        gate = 1.0 - min_similarity
        if weight is not None:
            cost = np.where(cost <= gate, gate - (gate - cost) * weight.take(tracks)[:, None], cost)
        local = linear_assignment(cost, gate)
        pairs = index_pairs(tracks.take(local[:, 0]), det_rows.take(local[:, 1]))
        taken_rows = np.zeros(len(det_rows), bool)
        taken_rows[local[:, 1]] = True
        taken_tracks = np.zeros(len(tracks), bool)
        taken_tracks[local[:, 0]] = True
        return pairs, det_rows[~taken_rows], tracks[~taken_tracks]

    def _correct(self, pairs: np.ndarray, xyah: np.ndarray, class_id: np.ndarray) -> None:
        """Kalman-update matched tracks, count the hit, and take the detection's class (without `class_aware`, the
        class a coasting track is reported with is the one it was last detected as)."""
        if len(pairs) == 0:
            return
        t, d = pairs[:, 0], pairs[:, 1]
        seen = xyah[d]
        self._mean[t], self._cov[t] = kalman.update(self._mean[t], self._cov[t], seen)
        if self.config.reanchor:
            self._reanchor(t, seen)
        self._seen[t] = seen
        self._class[t] = class_id[d]
        self._drift[t] = 0.0
        self._hits[t] += 1
        self._lost[t] = 0

    def _reanchor(self, tracks: np.ndarray, seen: np.ndarray) -> None:
        """Tracks back after a gap take their velocity from the observations either side of it."""
        gap = self._lost[tracks]
        back = gap > 1
        if not back.any():
            return
        t = tracks[back]
        velocity = (seen[back] - self._seen[t]) / gap[back, None]
        self._mean[t, 4:6] = velocity[:, :2]
        self._mean[t, 6] = 0.0
        self._mean[t, 7] = velocity[:, 3]

    def _confirm(self, tracks: np.ndarray) -> None:
        if len(tracks):
            self._id[tracks] = self._ids.take(len(tracks))

    def _retire(self, tentative_left: np.ndarray) -> None:
        dead = self._lost > self.config.max_lost_frames
        dead[tentative_left] = True
        if dead.any():
            keep = ~dead
            for name in _STATE:
                setattr(self, name, getattr(self, name)[keep])

    def _start(self, births: np.ndarray, xyah: np.ndarray, class_id: np.ndarray) -> None:
        if len(births) == 0:
            return
        seen = xyah[births]
        mean, cov = kalman.initiate(seen)
        n = len(births)
        first = len(self._mean)
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._id = np.concatenate([self._id, np.full(n, -1, np.int64)])
        self._hits = np.concatenate([self._hits, np.ones(n, np.int32)])
        self._lost = np.concatenate([self._lost, np.zeros(n, np.int32)])
        self._class = np.concatenate([self._class, class_id[births]])
        self._seen = np.concatenate([self._seen, seen])
        self._drift = np.concatenate([self._drift, np.zeros(n)])
        if self.config.min_hits <= 1:
            self._confirm(np.arange(first, first + n))

    def _shown(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tracks output on this frame: of the matched (track, row) pairs, those of confirmed tracks in input
        order, and then the confirmed tracks lost for 1..`coast_frames` frames that `_retire` will keep.
        Returns their rows (K,) and every shown track (K + C,)."""
        pairs = pairs[self._id[pairs[:, 0]] >= 0]
        pairs = pairs[pairs[:, 1].argsort(kind="stable")]
        coast = min(self.config.coast_frames, self.config.max_lost_frames)  # those `_retire` keeps: in step with it
        coasting = ((self._id >= 0) & (self._lost > 0) & (self._lost <= coast)).nonzero()[0]
        return pairs[:, 1], np.concatenate([pairs[:, 0], coasting])

    def _output(self, dets: Detections, rows: np.ndarray, boxes: np.ndarray, ids: np.ndarray,
                coasting_class: np.ndarray) -> Detections:
        """The rows `rows` of `dets` with `boxes` and `ids`, then the predicted boxes (score 0) of the coasting
        tracks (the rest of `boxes` and `ids`)."""
        k, n = len(rows), len(ids)
        score = np.zeros(n, np.float32)
        score[:k] = dets.score.take(rows)
        frame_idx = np.empty(n, np.int32)
        frame_idx.fill(int(dets.frame_idx[0]) if len(dets) else 0)
        frame_idx[:k] = dets.frame_idx.take(rows)
        return Detections(boxes, score, np.concatenate([dets.class_id.take(rows), coasting_class]), frame_idx, ids)
