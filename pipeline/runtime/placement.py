"""Where one instance sits in a fleet that shares one config file: its shard, its HTTP port and outbox.

Static shards: N instances share one config file, each running the cameras whose id hashes to its index.

For orchestrators that restart instances themselves (a Kubernetes StatefulSet, systemd on N hosts) and need
no coordinator: `run CONFIG --shard i/N`. The hash is SHA-1 of the stream id, so every process, host and
Python version puts a camera in the same shard (Python's `hash()` of a string changes with every process).
`--shard auto/N` takes i from the host name's trailing `-<n>`, the ordinal a StatefulSet gives its pods
(`streamweave-2` runs shard 2/N). Adding or removing an instance (a new N) moves most cameras: a shard count
is a deployment's constant, changed with a restart of all of them.

A `Placement` is applied to the file's config when it starts and again at every reload or API change, so a
reload never sees the instance's own port or outbox as a change of `runtime:` (which needs a restart).
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import references
from pipeline.config.fields import KeyPathError
from pipeline.config.models import HttpConfig, PipelineConfig
from pipeline.errors import ConfigError, PipelineError

_SPEC = re.compile(r"^(\d+|auto)/(\d+)$")
_ORDINAL = re.compile(r"-(\d+)$")


class OtherShard(PipelineError):
    """A change names a stream that another shard runs."""


def shard_of(stream_id: str, count: int) -> int:
    """The shard (0 .. count-1) that runs `stream_id`: the first 8 bytes of its SHA-1, big-endian, mod count."""
    digest = hashlib.sha1(stream_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`; `owns(stream_id)` says whether this one runs a camera."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--shard {self}: the count must be at least 1")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"--shard {self}: the index must be 0 to {self.count - 1} (shards are numbered from 0)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, stream_id: str) -> bool:
        return shard_of(stream_id, self.count) == self.index

    def select(self, config: PipelineConfig) -> PipelineConfig:
        """`config` with only the streams of this shard."""
        return config.model_copy(update={"streams": [s for s in config.streams if self.owns(s.id)]})

    def check(self, stream_id: str) -> None:
        """OtherShard, naming the shard that runs it, unless this shard runs `stream_id`."""
        if not self.owns(stream_id):
            raise OtherShard(f"stream '{stream_id}' belongs to shard {shard_of(stream_id, self.count)}/"
                             f"{self.count}; this instance runs shard {self}: change it through that instance")


def parse_shard(text: str, hostname: str | None = None) -> Shard:
    """`i/N`, or `auto/N` with i the trailing `-<n>` of `hostname` (default: $HOSTNAME, else this host's name;
    in Kubernetes both are the pod's name). ConfigError naming the text and the fix for anything else."""
    match = _SPEC.match(text.strip())
    if match is None:
        raise ConfigError(f"--shard {text!r}: expected INDEX/COUNT like 0/4, or auto/COUNT in a StatefulSet")
    index, count = match.group(1), int(match.group(2))
    if index == "auto":
        hostname = hostname if hostname is not None else os.environ.get("HOSTNAME") or socket.gethostname()
        ordinal = _ORDINAL.search(hostname)
        if ordinal is None:
            raise ConfigError(f"--shard {text}: the host name {hostname!r} does not end in -<number> (a "
                              "StatefulSet's pods do: streamweave-0, streamweave-1, ...); give the index itself, "
                              f"--shard 0/{count}")
        index = ordinal.group(1)
    return Shard(int(index), count)


@dataclass(frozen=True)
class Placement:
    """What one instance of a fleet changes in the shared config: shard (only its streams; None: all),
    http_port (`runtime.http.port`, from `run --port`), outbox_path (`runtime.outbox_path`, `run --outbox`) and
    instance (`runtime.instance`, `run --instance`); None leaves the file's value."""

    shard: Shard | None = None
    http_port: int | None = None
    outbox_path: Path | None = None
    instance: str | None = None

    def apply(self, config: PipelineConfig) -> PipelineConfig:
        """`config` as this instance runs it. ConfigError for a shard of a fleet's config (`runtime.cluster`):
        its coordinator hands out the cameras, and a shard would not run some of those it leased."""
        if self.shard is not None:
            if config.runtime.cluster is not None:
                raise ConfigError(f"--shard {self.shard}: the config has runtime.cluster, so the fleet's coordinator "
                                  "assigns the cameras; run without --shard, or take runtime.cluster out of the "
                                  "file for static shards")
            config = self.shard.select(config)
        runtime: dict = {}
        if self.instance is not None:
            runtime["instance"] = self.instance
        if self.outbox_path is not None:
            runtime["outbox_path"] = self.outbox_path
        if self.http_port is not None:
            http = config.runtime.http or HttpConfig()
            runtime["http"] = http.model_copy(update={"port": self.http_port})
        if runtime:
            config = config.model_copy(update={"runtime": config.runtime.model_copy(update=runtime)})
        if self.outbox_path is not None:  # a copy is not validated again: the outbox's place is checked here
            try:
                references.outputs(config)
            except KeyPathError as exc:
                raise ConfigError(f"--outbox {self.outbox_path}: {exc.message}") from None
        return config
