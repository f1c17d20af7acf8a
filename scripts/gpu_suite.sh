#!/usr/bin/env bash
# GPU suite: the gpu-marked pytest suite and benchmarks/gpu_bench.py, results into OUT_DIR.
#
# Usage, from the repository root on a machine with an NVIDIA GPU:
#   bash scripts/gpu_suite.sh OUT_DIR [--tests-only | --bench-only] [extra gpu_bench.py args...]
# Writes OUT_DIR/junit.xml, OUT_DIR/pytest.log, OUT_DIR/report.jsonl (numbers the tests measured),
# OUT_DIR/gpu_bench.json, OUT_DIR/gpu_bench.md and OUT_DIR/bench.log. `--only SECTION...` runs some of
# gpu_bench.py's sections, e.g. `--only add_streams --e2e-streams 64 --add 16` (cameras added to a
# running pipeline, benchmarks/live_change.py); the terminal shows neither INFO lines nor its cameras'
# expected reconnects at the end of the clip (bench.log keeps both). `--only heavy_models [ARGS...]` runs
# benchmarks/heavy_models.py instead (YOLO11s/m from `scripts/export_gpu_models.py bench`, unpacked into
# .device/exports/): engine images/s per batch, FP16 CUDA graphs, channels-last,
# and end to end; it writes OUT_DIR/heavy_models.{json,md}.
#
# Needs on PYTHONPATH: torch, cupy, PyNvVideoCodec, PyAV, onnx2torch, onnxruntime, pydantic (the
# project's GPU extra). Shared clips/models are read from $STREAMWEAVE_SHARED, .device/shared or
# ../shared (tests/gpu/helpers.py). A GPU machine without a package index: docs/GPU.md.
set -uo pipefail
out=${1:?usage: scripts/gpu_suite.sh OUT_DIR [--tests-only|--bench-only] [gpu_bench args]}
shift
mode=all
case "${1:-}" in --tests-only|--bench-only) mode=$1; shift ;; esac
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 GPU_REPORT="$out/report.jsonl"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
status=0
if [ "$mode" != --bench-only ]; then
  "$python" -m pytest tests/gpu -q -p no:cacheprovider -o addopts="" --junitxml="$out/junit.xml" \
    --durations=10 2>&1 | grep -v '^x265 \[info\]' | tee "$out/pytest.log"
  status=${PIPESTATUS[0]}
fi
if [ "$mode" != --tests-only ]; then
  bench_script=benchmarks/gpu_bench.py
  if [ "${1:-}" = --only ] && [ "${2:-}" = heavy_models ]; then bench_script=benchmarks/heavy_models.py; shift 2; fi
  "$python" "$bench_script" --out "$out" "$@" 2>&1 | tee "$out/bench.log" | grep -v -e ' INFO ' -e ': stream ended; retrying in'
  bench=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] && status=$bench
fi
exit "$status"
