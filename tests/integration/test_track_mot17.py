"""The tracker on real MOT17 ground truth turned into noisy detections, scored by trackeval."""
import subprocess
import sys

import pytest

from pipeline import mot
from pipeline.config.models import TrackerConfig
from pipeline.stages.tracking.cli import track_table
from tests.conftest import shared_file

pytest.importorskip("trackeval")
from pipeline.stages.tracking.mot_eval import evaluate_mot  # noqa: E402

SEQ = "MOT17-09"  # 525 frames, ~10 people at a time: the whole test takes about a second


def test_tracker_scores_well_on_a_mot17_sequence(tmp_path):
    gt_root = shared_file(f"data/mot17/{SEQ}/gt/gt.txt").parents[2]
    tool = shared_file("tools/make_mot_dets.py")
    subprocess.run([sys.executable, str(tool), str(gt_root), str(tmp_path), "--seqs", SEQ, "--seed", "0"],
                   check=True, capture_output=True)
    info = mot.read_seqinfo(tmp_path / SEQ / "seqinfo.ini")
    table = mot.read_mot(tmp_path / SEQ / "det" / "det.txt")
    result, _ = track_table(table, TrackerConfig(), info.length)
    out = tmp_path / "result.txt"
    mot.write_mot(out, mot.format_table(result))
    scores = evaluate_mot(gt_root, {SEQ: out})
    # The defaults reach MOTA 89.7, IDF1 79.5, HOTA 65.8 here (docs/TRACKING.md); the floors leave
    # room for harmless changes but not for a broken tracker: the raw detections with a fresh id per
    # row score MOTA -8.8, IDF1 0.5, HOTA 5.4.
    assert scores["MOTA"] > 82, scores
    assert scores["IDF1"] > 72, scores
    assert scores["HOTA"] > 58, scores
