"""Peers side by side: real-time cameras and latency of ours (a `run_pipeline.py bench` report) and of each peer
(`benchmarks/peers.py` reports), as one PNG and a Markdown table.

    python benchmarks/peers_plot.py --ours runs/ours/bench.json \
        --peers runs/peers/typical.json runs/peers/ultralytics_stream.json --out runs/peers/peers.png

Each system is shown at its largest count that held (its real-time count); one that held none is shown at the
smallest count it was run at, marked as failing, with why. Ours is measured per lane; its latency here is over
all of its cameras (both lanes' histograms added), as the peers' is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.bench.measure import quantile  # noqa: E402
from pipeline.bench.report import load_report  # noqa: E402

NAMES = {"typical": "the typical script", "ultralytics_stream": "Ultralytics' stream mode",
         "supervision_loop": "supervision + ByteTrack loop"}


def _shown(steps: list[dict]) -> dict:
    """The step a system is shown at: its largest count that held, else its smallest count."""
    held = [s for s in steps if s["holds"]]
    return max(held, key=lambda s: s["cameras"]) if held else min(steps, key=lambda s: s["cameras"])


def ours_row(report: dict) -> dict:
    """The row of a `run_pipeline.py bench` report; latency over every lane's frames."""
    step = _shown(report["ramp"])
    lanes = list(step["latency_cumulative"].values())
    merged = [(bound, sum(lane[i][1] for lane in lanes)) for i, (bound, _) in enumerate(lanes[0])] if lanes else []
    p50, p95, p99 = (None if (v := quantile(merged, q)) is None else round(v * 1000, 1) for q in (0.5, 0.95, 0.99))
    return {"system": "streamweave", "cameras": report["cameras_in_real_time"],
            "floor": report.get("only_a_floor", False), "at": step["cameras"],
            "holds": step["holds"], "fps": step["fps"], "p50": p50, "p95": p95, "p99": p99, "why": step["reasons"]}


def peer_row(report: dict) -> dict:
    """The row of a `benchmarks/peers.py` report."""
    step = _shown(report["steps"])
    return {"system": NAMES.get(report["peer"], report["peer"]), "cameras": report["cameras_in_real_time"],
            "floor": report.get("only_a_floor", False), "at": step["cameras"], "holds": step["holds"],
            "fps": step["fps"], "p50": step["p50"], "p95": step["p95"], "p99": step["p99"], "why": step["reasons"]}


def _count(row: dict) -> str:
    """A system's real-time count; "≥ N" where no larger count was run and failed (the run's limit)."""
    return f"≥ {row['cameras']}" if row["floor"] else str(row["cameras"])


def _ratio(ours: dict, row: dict) -> str:
    """Ours over theirs; a floor on our side makes the ratio one too, a floor on theirs a ceiling."""
    if ours["floor"] and row["floor"]:
        return "-"
    bound = "≥ " if ours["floor"] else ("≤ " if row["floor"] else "")
    return f"{bound}{ours['cameras'] / row['cameras']:.1f}" if row["cameras"] else f"{_count(ours)} : 0"


def markdown(rows: list[dict]) -> list[str]:
    lines = ["| system | real-time cameras | shown at | frames/s | latency p50/p95/p99 ms | ours ÷ theirs |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ratio = "1" if row is rows[0] else _ratio(rows[0], row)
        shown = f"{row['at']}" + ("" if row["holds"] else f" (fails: {'; '.join(row['why'])})")
        lines.append(f"| {row['system']} | {_count(row)} | {shown} | {row['fps']:,.0f} | "
                     f"{'/'.join('-' if row[q] is None else f'{row[q]:.0f}' for q in ('p50', 'p95', 'p99'))} | {ratio} |")
    return lines


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - bench extra
    import matplotlib.ticker  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [row["system"] for row in rows]
    bars = left.bar(names, [row["cameras"] for row in rows], color=["tab:blue"] + ["tab:grey"] * (len(rows) - 1))
    left.bar_label(bars, labels=[_count(row) for row in rows])
    left.set_ylabel("cameras in real time")
    left.set_title("cameras each system keeps up with")
    for i, row in enumerate(rows):
        values = [row[q] for q in ("p50", "p95", "p99")]
        if None not in values:
            right.plot([50, 95, 99], values, "o-" if row["holds"] else "x--",
                       label=f"{row['system']} at {row['at']}" + ("" if row["holds"] else " (fails)"))
    right.set_xticks([50, 95, 99], ["p50", "p95", "p99"])
    right.set_yscale("log")
    right.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    right.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    right.set_ylabel("capture to detections, ms")
    right.set_title("latency at the count shown")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", type=Path, required=True, help="bench.json of `run_pipeline.py bench`")
    parser.add_argument("--peers", type=Path, nargs="+", required=True, help="reports of benchmarks/peers.py")
    parser.add_argument("--out", type=Path, required=True, help="the PNG; the table goes beside it (.md)")
    args = parser.parse_args(argv)
    rows = [ours_row(load_report(args.ours))] + [peer_row(json.loads(p.read_text())) for p in args.peers]
    plot(rows, args.out)
    table = "\n".join(markdown(rows)) + "\n"
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
