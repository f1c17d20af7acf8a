"""The benchmark's report for people: bench.md (tables) and bench.png (throughput against cameras with both
ceilings drawn; latency CDF per lane at 90% of the real-time count). The plot needs matplotlib (the bench
extra); without it only the tables are written. bench.json is strict JSON (`to_json`, `load_report`)."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from pipeline.bench.ramp import count_text

log = logging.getLogger(__name__)


UNBOUNDED = "+Inf"
"""How bench.json writes an unbounded value: the latency histogram's last bucket bound (Prometheus' `le="+Inf"`)
and a percentile above its last finite bound. JSON has no infinity, and jq, JSON.parse and Go refuse `Infinity`."""


def to_json(report: dict) -> str:
    """The report as strict JSON: infinities as UNBOUNDED, NaN as null."""
    return json.dumps(_finite(report), indent=1, default=str, allow_nan=False)


def load_report(path: Path) -> dict:
    """A bench.json, with UNBOUNDED read back as float infinity (what `markdown` and the plot take)."""
    return _infinite(json.loads(Path(path).read_text()))


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (UNBOUNDED if value > 0 else "-Inf")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


_INFINITIES = {UNBOUNDED: math.inf, "-Inf": -math.inf}


def _infinite(value):
    if isinstance(value, str):
        return _INFINITIES.get(value, value)
    if isinstance(value, dict):
        return {key: _infinite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_infinite(item) for item in value]
    return value


def write_report(report: dict, out: Path) -> None:
    (out / "bench.md").write_text("\n".join(markdown(report)) + "\n")
    try:
        import matplotlib  # noqa: PLC0415 - optional (bench extra)
    except ImportError:
        log.warning("no plot: matplotlib is not installed (pip install 'streamweave[bench]')")
        return
    matplotlib.use("Agg")
    _plot(report, out / "bench.png")


def markdown(report: dict) -> list[str]:
    camera = report["camera"]
    count = count_text(report["cameras_in_real_time"], report.get("only_a_floor", False))
    lines = [f"# Real-time cameras: {count}", "",
             f"- command: `{report['command']}`", f"- date: {report['date']}; machine: {report['machine']}",
             f"- engine: {report['engine']}",
             f"- camera: `{camera.get('url')}` ({'paced, looped' if camera.get('pace') else 'live, read as it is'})",
             f"- latency bounds (p99): {', '.join(f'{k} {v:g} ms' for k, v in report['bounds_ms'].items())}", ""]
    decode = report.get("decode_alone")
    engine = report.get("engine_alone", [])
    if decode:
        left_out = decode.get("asked", decode["streams"]) - decode["streams"]
        lines.append(f"Decode alone, {decode['streams']} streams: **{decode['fps']:,.0f} frames/s**"
                     + (f" ({left_out} more could not start: {'; '.join(decode['not_running'].values())})"
                        if left_out else ""))
    if engine:
        best = max(engine, key=lambda row: row["images_per_s"])
        lines.append(f"Engine alone: **{best['images_per_s']:,.0f} images/s** at batch {best['batch']} "
                     "(" + ", ".join(f"{r['batch']}: {r['images_per_s']:,.0f}" for r in engine) + ")")
    lines += ["", "| cameras | holds | frames/s | lost | cameras losing | " + " | ".join(
        f"{lane} p50/p95/p99 ms" for lane in _lanes(report)) + " | CPU cores/camera | GPU | NVDEC |",
              "|" + " --- |" * (8 + len(_lanes(report)))]
    steps = list(report.get("ramp", []))
    if "at_90_percent" in report:
        steps.append({**report["at_90_percent"], "label": "90%"})
    for step in steps:
        lat = [step["latency_ms"].get(lane, {}) for lane in _lanes(report)]
        gpu = step.get("gpu") or {}
        lines.append(
            f"| {step['cameras']}{' (90%)' if step.get('label') else ''} | {'yes' if step['holds'] else 'no: ' + '; '.join(step['reasons'])} "
            f"| {step['fps']:,.0f} | {sum(step['lost'].values())} | {step['cameras_losing']} | "
            + " | ".join("/".join(_fmt(p.get(k)) for k in ("p50", "p95", "p99")) for p in lat)
            + f" | {step['cpu_cores_per_camera']:.3f} | {_share(gpu.get('gpu_utilisation'))} | "
            f"{_share(gpu.get('nvdec_utilisation'))} |")
    return lines


def _lanes(report: dict) -> list[str]:
    names = []
    for step in report.get("ramp", []):
        names += [lane for lane in step["latency_ms"] if lane not in names]
    return names


def _fmt(ms) -> str:
    return "-" if ms is None else ("inf" if math.isinf(ms) else f"{ms:.0f}")


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def _plot(report: dict, path: Path) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = sorted(report.get("ramp", []), key=lambda s: s["cameras"])
    for holds, marker, label in ((True, "o", "holds"), (False, "x", "fails")):
        chosen = [s for s in steps if s["holds"] == holds]
        left.scatter([s["cameras"] for s in chosen], [s["fps"] for s in chosen], marker=marker, label=label)
    if steps:
        fps = float(report.get("camera_fps") or 0)
        xs = [0, max(s["cameras"] for s in steps)]
        if fps:
            left.plot(xs, [x * fps for x in xs], ":", color="grey", label="every frame of every camera")
    if report.get("decode_alone"):
        left.axhline(report["decode_alone"]["fps"], color="tab:red", linestyle="--", label="decode alone")
    if report.get("engine_alone"):
        best = max(row["images_per_s"] for row in report["engine_alone"])
        left.axhline(best, color="tab:green", linestyle="--", label="engine alone (best batch)")
    left.set(xlabel="cameras", ylabel="frames detected per second", title="throughput against cameras")
    left.legend()
    detail = report.get("at_90_percent")
    for lane, cumulative in (_latency_cdf(detail) if detail else {}).items():
        right.step([b * 1000 for b, _ in cumulative], [share for _, share in cumulative], where="post", label=lane)
    for lane, bound in report["bounds_ms"].items():
        right.axvline(bound, linestyle=":", color="grey")
    right.set(xscale="log", xlabel="capture to detections, ms", ylabel="share of frames",
              title=f"latency at {detail['cameras'] if detail else '-'} cameras (90% of the real-time count)")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _latency_cdf(step: dict) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for lane, cumulative in step.get("latency_cumulative", {}).items():
        total = cumulative[-1][1] if cumulative else 0
        if total:
            out[lane] = [(bound, count / total) for bound, count in cumulative if not math.isinf(bound)]
    return out
