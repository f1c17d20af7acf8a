"""`run_pipeline.py bench`: how many cameras this machine runs in real time, at what latency, beside its
ceilings (decode alone, the engine alone), measured in one run (docs/BENCHMARKS.md)."""
