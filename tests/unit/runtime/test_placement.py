"""Static shards and an instance's placement in a fleet: the hash is stable across processes and balanced, every
camera is in exactly one shard, bad --shard values are refused saying why, and a placement changes only what
it names."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import pipeline.testing  # noqa: F401 - fake:// and the fake engine
from pipeline.config.models import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.runtime.placement import OtherShard, Placement, Shard, parse_shard, shard_of
from tests.conftest import REPO

IDS = [f"cam-{i}" for i in range(1000)]


def test_a_camera_is_in_the_same_shard_in_every_process_whatever_the_string_hash_seed():
    script = ("import json, sys; from pipeline.runtime.placement import shard_of; "
              "print(json.dumps([shard_of(i, 7) for i in json.loads(sys.stdin.read())]))")
    answers = []
    for seed in ("1", "2", "random"):
        done = subprocess.run([sys.executable, "-c", script], input=json.dumps(IDS[:200]), capture_output=True,
                              text=True, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        answers.append(json.loads(done.stdout))
    assert answers[0] == answers[1] == answers[2] == [shard_of(i, 7) for i in IDS[:200]]
    assert len(set(answers[0])) == 7


@pytest.mark.parametrize("count", [2, 3, 4, 7, 16])
def test_a_thousand_cameras_spread_over_the_shards_as_evenly_as_a_fair_die_would(count):
    per_shard = Counter(shard_of(i, count) for i in IDS)
    even, p = len(IDS) / count, 1 / count
    spread = math.sqrt(len(IDS) * p * (1 - p))  # the standard deviation of a shard's count, uniform assignment
    assert sorted(per_shard) == list(range(count))
    assert all(abs(n - even) <= 4 * spread for n in per_shard.values()), per_shard
    assert sum((n - even) ** 2 / even for n in per_shard.values()) < 2 * (count - 1) + 10  # chi-square, not skewed


def test_every_camera_belongs_to_exactly_one_shard():
    shards = [Shard(i, 5) for i in range(5)]
    assert all(sum(shard.owns(i) for shard in shards) == 1 for i in IDS)


@pytest.mark.parametrize("text, hostname, expected", [
    ("0/1", None, Shard(0, 1)), ("3/4", None, Shard(3, 4)), (" 1/2 ", None, Shard(1, 2)),
    ("auto/3", "streamweave-2", Shard(2, 3)), ("auto/12", "sw-east-11", Shard(11, 12)),
])
def test_a_shard_is_written_index_slash_count_or_auto_from_the_pod_name(text, hostname, expected):
    assert parse_shard(text, hostname) == expected


@pytest.mark.parametrize("text, hostname, message", [
    ("4/4", None, r"--shard 4/4: the index must be 0 to 3 \(shards are numbered from 0\)"),
    ("0/0", None, r"--shard 0/0: the count must be at least 1"),
    ("-1/4", None, r"--shard '-1/4': expected INDEX/COUNT like 0/4, or auto/COUNT"),
    ("1of4", None, r"expected INDEX/COUNT"),
    ("auto/3", "streamweave", r"the host name 'streamweave' does not end in -<number>.*--shard 0/3"),
    ("auto/3", "streamweave-3", r"--shard 3/3: the index must be 0 to 2"),
])
def test_a_bad_shard_is_refused_saying_what_to_write(text, hostname, message):
    with pytest.raises(ConfigError, match=message):
        parse_shard(text, hostname)


def test_auto_reads_the_hostname_variable_a_pod_has(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "streamweave-1")
    assert parse_shard("auto/2") == Shard(1, 2)


def test_a_camera_of_another_shard_is_refused_naming_the_shard_that_runs_it():
    other = next(i for i in IDS if shard_of(i, 3) == 2)
    with pytest.raises(OtherShard, match=rf"stream '{other}' belongs to shard 2/3; this instance runs shard 0/3"):
        Shard(0, 3).check(other)


def site(streams: int = 12, **runtime) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "plugins": ["pipeline.testing"], "detector": {"model": "fake", "engine": "fake"},
        "streams": [{"id": f"cam-{i}", "url": f"fake://cam-{i}?fps=10&live=1"} for i in range(streams)],
        "runtime": runtime})


def test_the_shards_of_a_config_split_its_streams_without_overlap_and_keep_the_rest():
    config = site(outbox_path="runs/site-outbox.db")
    parts = [Shard(i, 3).select(config) for i in range(3)]
    ids = [[s.id for s in part.streams] for part in parts]
    assert sorted(sum(ids, [])) == sorted(s.id for s in config.streams) and all(ids)
    assert all(part.model_dump(exclude={"streams"}) == config.model_dump(exclude={"streams"}) for part in parts)


def test_a_placement_sets_port_and_outbox_and_applying_it_twice_changes_nothing_more():
    config = site(outbox_path="runs/site-outbox.db")
    placement = Placement(Shard(1, 2), http_port=9109, outbox_path=Path("runs/outbox-gpu1.db"))
    placed = placement.apply(config)
    assert placed.runtime.http.port == 9109 and placed.runtime.http.host == "127.0.0.1"
    assert placed.runtime.outbox_path == Path("runs/outbox-gpu1.db")
    assert placement.apply(placed) == placed
    assert Placement().apply(config) == config


def test_a_shard_of_a_fleet_config_is_refused_because_its_coordinator_hands_out_the_cameras():
    # A shard would filter the cameras the coordinator leased to it: some would stay leased and renewed, never run.
    config = site(0, cluster={"dsn": "postgresql://db/fleet", "capacity": 8})
    with pytest.raises(ConfigError, match=r"--shard 0/2: the config has runtime.cluster.*run without --shard"):
        Placement(Shard(0, 2)).apply(config)
    assert Placement(http_port=9109).apply(config).runtime.cluster == config.runtime.cluster
