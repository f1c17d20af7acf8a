"""The Kubernetes example (deploy/kubernetes/streamweave.yaml) agrees with the command line and the config it
ships: the StatefulSet's arguments parse, `--shard auto/N` gives each of its pods its own shard and N equals
the replicas, ports, probes, secrets and volumes match what the config uses, and the config validates."""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.runtime.placement import Shard, parse_shard
from tests.conftest import REPO

MANIFEST = REPO / "deploy" / "kubernetes" / "streamweave.yaml"
DOCS = {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}
SET, SERVICE, CONFIG_MAP = DOCS["StatefulSet"], DOCS["Service"], DOCS["ConfigMap"]
POD = SET["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]


@pytest.fixture
def shipped_config(tmp_path, monkeypatch):
    """The ConfigMap's config, loaded with the environment its pods get from the Secret."""
    monkeypatch.setenv("STREAMWEAVE_TOKEN", "a-token-of-sixteen-chars")
    monkeypatch.setenv("STREAMWEAVE_PG_DSN", "postgresql://streamweave@db.example/fleet")
    monkeypatch.setenv("CAMERA_PASSWORD", "secret")
    (key, text), = CONFIG_MAP["data"].items()
    path = tmp_path / key
    path.write_text(text)
    return load_config(path)


def run_args():
    assert CONTAINER["command"] == ["streamweave"]
    return build_parser().parse_args(CONTAINER["args"])


def test_the_manifest_is_a_config_map_a_headless_service_and_a_stateful_set_that_select_the_same_pods():
    assert sorted(DOCS) == ["ConfigMap", "Service", "StatefulSet"]
    labels = SET["spec"]["template"]["metadata"]["labels"]
    assert SET["spec"]["selector"]["matchLabels"] == SERVICE["spec"]["selector"] == labels
    assert SERVICE["spec"]["clusterIP"] == "None" and SET["spec"]["serviceName"] == SERVICE["metadata"]["name"]


def test_every_pod_runs_its_own_shard_and_the_shards_are_as_many_as_the_replicas():
    args = run_args()
    replicas, name = SET["spec"]["replicas"], SET["metadata"]["name"]
    assert args.command == "run" and args.gpus is None
    assert [parse_shard(args.shard, hostname=f"{name}-{i}") for i in range(replicas)] == [
        Shard(i, replicas) for i in range(replicas)]
    with pytest.raises(ConfigError, match=f"the index must be 0 to {replicas - 1}"):
        parse_shard(args.shard, hostname=f"{name}-{replicas}")  # a pod too many is refused, not doubled up


def test_the_config_is_the_config_maps_and_validates_with_its_secrets(shipped_config):
    args = run_args()
    (mount,) = [m for m in CONTAINER["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in POD["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == CONFIG_MAP["metadata"]["name"] and mount["readOnly"] is True
    assert PurePosixPath(args.config) == PurePosixPath(mount["mountPath"]) / next(iter(CONFIG_MAP["data"]))
    assert shipped_config.streams and shipped_config.runtime.http.token == "a-token-of-sixteen-chars"
    used = set(re.findall(r"\$\{(\w+)", next(iter(CONFIG_MAP["data"].values()))))
    given = {env["name"] for env in CONTAINER["env"]}
    assert used <= given, f"the config reads {sorted(used - given)}, which the pod's environment lacks"


def test_ports_probes_gpu_and_state_agree_with_the_config(shipped_config):
    http = shipped_config.runtime.http
    (port,) = CONTAINER["ports"]
    (service_port,) = SERVICE["spec"]["ports"]
    assert port["containerPort"] == http.port == service_port["port"] and service_port["targetPort"] == port["name"]
    assert http.host == "0.0.0.0"  # the kubelet's probes come from outside the pod
    probes = {kind: CONTAINER[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert all(probe["port"] == port["name"] for probe in probes.values())
    assert CONTAINER["resources"]["limits"]["nvidia.com/gpu"] == 1
    (state,) = [m for m in CONTAINER["volumeMounts"] if m["name"] == "state"]
    assert [t["metadata"]["name"] for t in SET["spec"]["volumeClaimTemplates"]] == ["state"]
    for kept in (shipped_config.runtime.outbox_path, shipped_config.detector.engine_cache_dir):
        assert Path(state["mountPath"]) in Path(kept).parents, f"{kept} is not on the pod's own volume"


def test_the_image_it_asks_for_installs_the_extras_its_config_needs(shipped_config):
    """A pod whose image lacks psycopg cannot open the config's postgres sink: the image's `pip install` names
    every extra the shipped config uses."""
    (extras,) = re.findall(r"pip install streamweave\[([\w,]+)\]", MANIFEST.read_text())
    needed = {"gpu"} | {"postgres" for sink in shipped_config.sinks if sink.type == "postgres"}
    assert needed <= set(extras.split(","))
