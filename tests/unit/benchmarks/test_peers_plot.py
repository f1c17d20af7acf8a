"""Peers side by side: each system at its largest holding count (or its smallest, failing), ours' latency over
both lanes, the ratio column, and a PNG from the reports."""
import json
import math

from benchmarks.peers_plot import main, markdown, ours_row, peer_row

BOUNDS = [0.025, 0.05, 0.1, math.inf]


def ours_step(cameras: int, holds: bool, priority: list[float], default: list[float]) -> dict:
    """A bench step whose lanes saw these cumulative counts at BOUNDS."""
    return {"cameras": cameras, "holds": holds, "reasons": [] if holds else ["lane priority: p99 60 ms > 50 ms"],
            "fps": cameras * 30.0, "latency_cumulative": {"priority": list(zip(BOUNDS, priority)),
                                                          "default": list(zip(BOUNDS, default))}}


def peer_step(cameras: int, holds: bool, p99: float) -> dict:
    return {"cameras": cameras, "holds": holds, "reasons": [] if holds else [f"p99 {p99} ms > 150 ms"],
            "fps": cameras * 29.0, "frames": 0, "cameras_short": 0, "p50": p99 / 2, "p95": p99 * 0.9, "p99": p99}


def test_ours_is_shown_at_its_largest_holding_count_with_both_lanes_latency_added():
    report = {"cameras_in_real_time": 40, "ramp": [
        ours_step(30, True, [10, 10, 10, 10], [0, 50, 90, 90]),
        ours_step(40, True, [2, 10, 10, 10], [0, 0, 90, 90]),   # 100 frames: 2 by 25 ms, 10 by 50, all by 100
        ours_step(44, False, [0, 5, 10, 10], [0, 0, 0, 90]),
    ]}
    row = ours_row(report)
    assert (row["system"], row["cameras"], row["at"], row["holds"]) == ("streamweave", 40, 40, True)
    # p50 lies in the (50, 100] ms bucket: 10 frames below 50 ms, 90 in it -> 50 + 50 * (50 - 10) / 90
    assert row["p50"] == round(50 + 50 * 40 / 90, 1)
    assert row["p99"] == round(50 + 50 * 89 / 90, 1)


def test_a_peer_that_held_nothing_is_shown_failing_at_its_smallest_count():
    report = {"peer": "ultralytics_stream", "cameras_in_real_time": 0,
              "steps": [peer_step(2, False, 900.0), peer_step(1, False, 587.0)]}
    row = peer_row(report)
    assert (row["system"], row["cameras"], row["at"], row["holds"], row["p99"]) == (
        "Ultralytics' stream mode", 0, 1, False, 587.0)
    typical = peer_row({"peer": "typical", "cameras_in_real_time": 5,
                        "steps": [peer_step(4, True, 90.0), peer_step(6, False, 400.0), peer_step(5, True, 95.0)]})
    ours = {"system": "streamweave", "cameras": 67, "floor": False, "at": 67, "holds": True, "fps": 2016.0,
            "p50": 30.0, "p95": 60.0, "p99": 70.0, "why": []}
    lines = markdown([ours, typical, row])
    assert lines[2].endswith("| 1 |")
    assert "| the typical script | 5 | 5 |" in lines[3] and lines[3].endswith("| 13.4 |")
    assert "| 0 | 1 (fails: p99 587.0 ms > 150 ms) |" in lines[4] and lines[4].endswith("| 67 : 0 |")


def test_the_command_writes_the_plot_and_the_table(tmp_path, capsys):
    ours = tmp_path / "bench.json"
    ours.write_text(json.dumps({"cameras_in_real_time": 30, "only_a_floor": True, "ramp": [
        ours_step(30, True, [10, 10, 10, 10], [0, 50, 90, 90])]}))
    peer = tmp_path / "typical.json"
    peer.write_text(json.dumps({"peer": "typical", "cameras_in_real_time": 3, "steps": [peer_step(3, True, 80.0)]}))
    assert main(["--ours", str(ours), "--peers", str(peer), "--out", str(tmp_path / "peers.png")]) == 0
    assert (tmp_path / "peers.png").stat().st_size > 10_000
    assert "| the typical script | 3 | 3 |" in (tmp_path / "peers.md").read_text()
    assert "| streamweave | ≥ 30 |" in capsys.readouterr().out


def test_a_count_held_at_the_runs_limit_is_shown_as_a_floor_and_so_is_the_ratio():
    ours = ours_row({"cameras_in_real_time": 92, "only_a_floor": True, "ramp": [
        ours_step(92, True, [10, 10, 10, 10], [0, 50, 90, 90])]})
    typical = peer_row({"peer": "typical", "cameras_in_real_time": 2,
                        "steps": [peer_step(3, False, 93.0), peer_step(2, True, 84.0)]})
    capped = peer_row({"peer": "supervision_loop", "cameras_in_real_time": 4, "only_a_floor": True,
                       "steps": [peer_step(4, True, 90.0)]})
    lines = markdown([ours, typical, capped])
    assert lines[2].startswith("| streamweave | ≥ 92 | 92 |")
    assert lines[3].startswith("| the typical script | 2 | 2 |") and lines[3].endswith("| ≥ 46.0 |")
    assert lines[4].startswith("| supervision + ByteTrack loop | ≥ 4 |") and lines[4].endswith("| - |")
    exact = dict(ours, floor=False)
    assert markdown([exact, capped])[3].endswith("| ≤ 23.0 |")  # theirs may be higher: ours over theirs at most 23
