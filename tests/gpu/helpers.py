"""Shared by the GPU tests: where the clips and models are, and decoding a clip with either back-end.

On the GPU machine `../shared` does not travel, so `scripts/gpu_suite.sh` copies what the tests need
into `.device/shared/`; `gpu_file()` looks there (or in $STREAMWEAVE_SHARED) before `../shared`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from pipeline.config.models import StreamConfig
from pipeline.sources.pyav import PyAvReader, cpu_decoder

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def gpu_file(relative: str) -> Path:
    """A shared clip or model, from $STREAMWEAVE_SHARED, .device/shared or ../shared; else skip."""
    roots = [Path(p) for p in (os.environ.get("STREAMWEAVE_SHARED"),) if p]
    roots += [REPO / ".device" / "shared", SHARED]
    for root in roots:
        if (root / relative).exists():
            return root / relative
    pytest.skip(f"{relative} is absent from {[str(r) for r in roots]}")


def decode_clip(path: Path, backend: str, limit: int | None = None, skip: int = 0, low_latency: bool = False) -> list:
    """DecodedFrames of one pass over `path` with backend "cpu" or "nvdec" (`low_latency`: as a camera's stream
    is decoded): `limit` after the first `skip`."""
    from pipeline.sources.nvdec import NvdecDecoder  # noqa: PLC0415

    config = StreamConfig(id="clip", url=str(path), decode=backend)
    factory = cpu_decoder if backend == "cpu" else functools.partial(NvdecDecoder, low_latency=low_latency)
    reader = PyAvReader(config, make_decoder=factory)
    frames = []
    for index, frame in enumerate(reader.frames()):
        if index < skip:
            continue
        frames.append(frame)
        if limit is not None and len(frames) >= limit:
            break
    reader.close()
    return frames
