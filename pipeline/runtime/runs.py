"""Runs: every start of a pipeline is one, with an id that no other start (here or on another host) has.

The id sorts by start time and reads as one (`20250314T091502.123Z-5f3a9c1e`: UTC start, then 32 random
bits); the config hash says which config it ran (a SHA-256 of the validated config, 16 hex digits).
"""
from __future__ import annotations

import hashlib
import secrets
import time
from importlib.metadata import PackageNotFoundError, version

from pipeline.config.models import PipelineConfig
from pipeline.types import Run


def new_run(config: PipelineConfig) -> Run:
    """A new run of `config` by its `runtime.instance`, starting now."""
    started_ns = time.time_ns()
    seconds, ns = divmod(started_ns, 10**9)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{ns // 10**6:03d}Z"
    # The instance is left out: every instance of a fleet running one file runs the same config.
    dumped = config.model_dump_json(exclude={"runtime": {"instance"}})
    config_hash = hashlib.sha256(dumped.encode()).hexdigest()[:16]
    return Run(f"{stamp}-{secrets.token_hex(4)}", config_hash, package_version(), started_ns,
               config.runtime.instance)


def package_version() -> str:
    """The installed streamweave version ("unknown" in a source tree that was never installed)."""
    try:
        return version("streamweave")
    except PackageNotFoundError:
        return "unknown"
