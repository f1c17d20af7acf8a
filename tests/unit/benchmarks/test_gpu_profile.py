"""The profile summary: busy fraction, idle gaps and per-kernel time from a trace's GPU events."""
from benchmarks.gpu_profile import summarize


def kernel(name: str, ts: float, dur: float, stream: int = 7) -> dict:
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "tid": stream}


def test_overlapping_work_counts_once_and_gaps_are_binned_by_length():
    events = [
        kernel("conv", 0, 1000),
        kernel("conv", 500, 1000, stream=9),          # overlaps the first: 0..1500 busy
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH", "ts": 1600, "dur": 400, "tid": 7},  # gap 0.1 ms
        kernel("nms", 4000, 1000),                    # gap 2 ms
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize", "ts": 2000, "dur": 1900},
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 0, "dur": 9000},
    ]
    summary = summarize(events)
    assert summary["span_ms"] == 5.0
    assert summary["busy"] == 0.58  # (1.5 + 0.4 + 1.0) / 5
    assert summary["idle_ms_by_gap_length"] == {"<0.05ms": 0, "<0.2ms": 0.1, "<1ms": 0, "<5ms": 2.0, "<infms": 0}
    assert summary["kernels"][0] == {"name": "conv", "count": 2, "ms": 2.0}
    assert {"name": "gpu_memcpy", "count": 1, "ms": 0.4} in summary["kernels"]
    assert summary["gpu_ms_by_stream"] == {"7": 2.4, "9": 1.0}
    assert summary["host_cuda_calls"] == [{"name": "cudaStreamSynchronize", "count": 1, "ms": 1.9}]


def test_a_trace_without_gpu_work_says_so():
    assert summarize([{"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 0, "dur": 5}]) == {"error": "no GPU events"}
