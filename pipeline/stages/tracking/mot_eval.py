"""Score MOTChallenge results with the `trackeval` package (HOTA, CLEAR MOTA, IDF1).

`trackeval` is a test/benchmark dependency (`pip install streamweave[test]`), imported only here.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from pipeline.errors import ConfigError


def evaluate_mot(gt_root: Path, results: dict[str, Path]) -> dict[str, float]:
    """Score tracker results against MOTChallenge ground truth, combined over the sequences.

    gt_root: folder holding `<seq>/gt/gt.txt` and `<seq>/seqinfo.ini`.
    results: sequence folder name -> result file (MOT text). Returns HOTA (and its parts DetA, AssA), MOTA, IDF1 (percent),
    IDSW, FP, FN and the number of sequences, as trackeval's MotChallenge2DBox computes them (pedestrians,
    with its distractor preprocessing).
    """
    try:
        import trackeval  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError("scoring needs the 'trackeval' package: pip install 'streamweave[test]'") from exc
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ours" / "data"
        data.mkdir(parents=True)
        for seq, path in results.items():
            (data / f"{seq}.txt").write_bytes(Path(path).read_bytes())
        dataset = trackeval.datasets.MotChallenge2DBox({
            "GT_FOLDER": str(gt_root), "TRACKERS_FOLDER": tmp, "OUTPUT_FOLDER": tmp,
            "TRACKERS_TO_EVAL": ["ours"], "SKIP_SPLIT_FOL": True, "SEQ_INFO": dict.fromkeys(results),
            "PRINT_CONFIG": False,
        })
        evaluator = trackeval.Evaluator({
            "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "DISPLAY_LESS_PROGRESS": True,
        })
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
            output, _ = evaluator.evaluate([dataset], metrics)
    combined = output["MotChallenge2DBox"]["ours"]["COMBINED_SEQ"]["pedestrian"]
    return {
        "HOTA": 100 * float(combined["HOTA"]["HOTA"].mean()),
        "DetA": 100 * float(combined["HOTA"]["DetA"].mean()),
        "AssA": 100 * float(combined["HOTA"]["AssA"].mean()),
        "MOTA": 100 * float(combined["CLEAR"]["MOTA"]),
        "IDF1": 100 * float(combined["Identity"]["IDF1"]),
        "IDSW": int(combined["CLEAR"]["IDSW"]),
        "FP": int(combined["CLEAR"]["CLR_FP"]),
        "FN": int(combined["CLEAR"]["CLR_FN"]),
        "sequences": len(results),
    }
