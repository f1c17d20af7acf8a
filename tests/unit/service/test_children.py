"""What `run --gpus` starts, decided without processes or GPUs: which GPUs, each child's environment, name,
port, outbox and shard, when a dead child starts again, and the supervisor's exit code."""
from __future__ import annotations

import io
import os
import random
import signal
import sys
import threading
from pathlib import Path

import pytest

import pipeline.testing  # noqa: F401 - fake:// and the fake engine
from pipeline.backoff import Backoff
from pipeline.config.models import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.runtime.placement import Shard, parse_shard
from pipeline.service.children import (CHILD_MAIN, Child, RestartPolicy, discover_gpus, has_cluster, overall_exit,
                                       parse_gpus, plan_children)
from pipeline.service.supervisor import START_FAILED, Supervisor, prefixed

FOUR = lambda: ["0", "1", "2", "3"]  # noqa: E731 - a host with four GPUs


def site(**runtime) -> tuple[PipelineConfig, dict]:
    raw = {"plugins": ["pipeline.testing"], "detector": {"model": "fake", "engine": "fake"},
           "streams": [{"id": f"cam-{i}", "url": f"fake://cam-{i}"} for i in range(8)], "runtime": runtime}
    return PipelineConfig.model_validate(raw), raw


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize("text, expected", [
    ("all", ["0", "1", "2", "3"]), ("2", ["0", "1"]), ("4", ["0", "1", "2", "3"]), ("1,3", ["1", "3"]),
    ("3,", ["3"]), (" 0,1 ", ["0", "1"]),
])
def test_gpus_are_all_a_count_of_the_first_or_a_list_of_indices(text, expected):
    assert parse_gpus(text, FOUR) == expected


def test_a_list_of_gpus_is_taken_as_given_without_looking_for_gpus():
    def no_gpus():
        raise AssertionError("a list needs no discovery")

    assert parse_gpus("0,1", no_gpus) == ["0", "1"]


@pytest.mark.parametrize("text, message", [
    ("5", r"--gpus 5: 4 GPU\(s\) found \(0, 1, 2, 3\); ask for 1 to 4, or name them: --gpus 0,1"),
    ("0", r"ask for 1 to 4"), ("first", r"give all, a list of GPU indices like 0,1 \(one GPU: 3,\), or a count N"),
    ("1,1", r"a GPU is named twice"), ("-1", r"give all, a list"),
])
def test_bad_gpus_are_refused_saying_what_to_write(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_gpus(text, FOUR)


def test_without_any_gpu_all_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setitem(sys.modules, "pynvml", None)  # and no NVML: this machine's case, made certain
    with pytest.raises(ConfigError, match=r"--gpus: no GPU found \(nvidia-ml-py is not installed; no nvidia-smi\); "
                                          r"run without --gpus .* or name them: --gpus 0,1"):
        discover_gpus()


def test_gpus_given_to_the_container_are_the_ones_all_means(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert parse_gpus("all") == ["2", "3"]


@pytest.mark.parametrize("visible", ["-1", ",", "", " ", "-1,0", "none"])
def test_cuda_visible_devices_that_hides_every_gpu_is_a_clear_error_naming_it(monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(ConfigError, match=rf"--gpus: CUDA_VISIBLE_DEVICES={visible!r} hides every GPU .*unset it"):
        parse_gpus("all")


@pytest.mark.parametrize("visible, expected", [
    ("0,-1,1", ["0"]), ("1, 2,", ["1", "2"]), ("GPU-5f3a9c1e-0000-1111-2222-333344445555,3",
                                              ["GPU-5f3a9c1e-0000-1111-2222-333344445555", "3"]),
])
def test_the_gpus_all_means_are_those_cuda_sees_through_cuda_visible_devices(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert parse_gpus("all") == expected


def test_each_child_sees_only_its_gpu_with_its_own_name_port_outbox_and_shard():
    config, raw = site(instance="edge-1", http={"port": 9200}, outbox_path="runs/site/outbox.db")
    children = plan_children("site.yaml", config, raw, ["0", "3"], passthrough=["--quiet"], environ={"KEEP": "x"})
    assert [(c.index, c.gpu, c.instance, c.port, c.outbox) for c in children] == [
        (0, "0", "edge-1-gpu0", 9200, Path("runs/site/outbox-gpu0.db")),
        (1, "3", "edge-1-gpu1", 9201, Path("runs/site/outbox-gpu1.db"))]
    for child in children:
        assert child.env == {"KEEP": "x", "CUDA_VISIBLE_DEVICES": child.gpu, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                             "STREAMWEAVE_INSTANCE": child.instance}
        argv = child.argv
        assert argv[:5] == [sys.executable, "-c", CHILD_MAIN, "run", "site.yaml"] and "--quiet" in argv
        assert (option(argv, "--instance"), option(argv, "--port"), option(argv, "--outbox")) == (
            child.instance, str(child.port), str(child.outbox))
        assert option(argv, "--shard") == f"{child.index}/2"
    shards = [parse_shard(option(c.argv, "--shard")) for c in children]
    cams = [s.id for s in config.streams]
    assert sorted(sum(([c for c in cams if shard.owns(c)] for shard in shards), [])) == sorted(cams)


def test_the_supervisors_options_set_the_base_port_outbox_and_its_hosts_share():
    config, raw = site(instance="edge-1")
    children = plan_children("site.yaml", config, raw, ["0", "1"], port=0, outbox=Path("/var/ob.db"),
                             shard=Shard(1, 3), environ={})
    assert [c.port for c in children] == [0, 0]  # any free port, each
    assert [str(c.outbox) for c in children] == ["/var/ob-gpu0.db", "/var/ob-gpu1.db"]
    assert [option(c.argv, "--shard") for c in children] == ["2/6", "3/6"]  # host 1 of 3, two GPUs each
    defaults = plan_children("site.yaml", *site(instance="edge-1"), ["0", "1"], environ={})
    assert [c.port for c in defaults] == [9108, 9109]


def test_with_a_cluster_in_the_file_the_children_get_no_shard_and_join_it():
    config, raw = site(instance="edge-1")
    raw["runtime"]["cluster"] = {"dsn": "postgresql://db/fleet"}  # read from the YAML, not the models
    assert has_cluster(raw) and not has_cluster({"runtime": {"instance": "x"}}) and not has_cluster(None)
    children = plan_children("site.yaml", config, raw, ["0", "1"], environ={})
    assert all("--shard" not in c.argv for c in children)


def test_ports_beyond_65535_are_refused():
    config, raw = site(http={"port": 65535})
    with pytest.raises(ConfigError, match=r"ports 65535 to 65536 do not all exist"):
        plan_children("site.yaml", config, raw, ["0", "1"], environ={})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_child_that_died_starts_again_after_a_delay_growing_with_the_outage_and_resetting_once_stable():
    clock = Clock()
    policy = RestartPolicy(Backoff(1.0, 30.0, rng=random.Random(0), clock=clock), stable_s=60.0)
    delays = []
    for _ in range(8):  # a crash loop: each start dies at once
        delays.append(policy.delay(-9, ran_s=0.5, stopping=False))
        clock.now += delays[-1] + 0.5
    assert delays[0] == 1.0 and all(1.0 <= d <= 30.0 for d in delays) and max(delays) > 4 * delays[0]
    assert policy.delay(1, ran_s=3600.0, stopping=False) == 1.0  # a crash after an hour: a fresh outage


@pytest.mark.parametrize("code", [0, 2])
def test_a_child_that_ended_by_itself_or_with_a_config_error_is_not_started_again(code):
    assert RestartPolicy(Backoff(1.0, 30.0)).delay(code, ran_s=1.0, stopping=False) is None


def test_after_a_stop_was_asked_for_no_child_starts_again():
    assert RestartPolicy(Backoff(1.0, 30.0)).delay(-15, ran_s=1.0, stopping=True) is None


@pytest.mark.parametrize("codes, expected", [([0, 0], 0), ([0, 3], 3), ([4, 2, 0], 2), ([-9, 0], 1), ([], 0)])
def test_the_supervisor_exits_with_the_worst_of_its_childrens_codes(codes, expected):
    assert overall_exit(codes) == expected


def test_child_lines_are_prefixed_with_the_instance_and_json_lines_get_a_field():
    assert prefixed("edge-1-gpu0", "INFO started\n") == "edge-1-gpu0 | INFO started\n"
    assert prefixed("edge-1-gpu1", '{"level": "info", "message": "up"}\n') == (
        '{"level": "info", "message": "up", "instance": "edge-1-gpu1"}\n')
    assert prefixed("g", "{not json\n") == "g | {not json\n"



def test_a_detector_device_other_than_0_is_refused_because_each_child_sees_its_gpu_as_device_0():
    config, raw = site()
    config = config.model_copy(update={"detector": config.detector.model_copy(update={"device": 1})})
    with pytest.raises(ConfigError, match=r"--gpus: detector.device is 1, but each child sees only its own GPU, as "
                                          r"device 0; take detector.device out of the file"):
        plan_children("site.yaml", config, raw, ["0", "1"], environ={})


class _Repaired(RestartPolicy):
    """Restarts at once; the program of a child that could not be started is put in place when that is seen."""

    def __init__(self, program: Path):
        super().__init__(Backoff(0.01, 0.01))
        self.program, self.codes = program, []

    def delay(self, returncode, ran_s, stopping):
        self.codes.append(returncode)
        if returncode == START_FAILED:
            self.program.write_text("#!/bin/sh\necho repaired\n")
            self.program.chmod(0o755)
        return super().delay(returncode, ran_s, stopping)


def test_a_child_that_cannot_be_started_is_tried_again_and_the_others_keep_their_supervisor(tmp_path):
    program = tmp_path / "instance"  # absent at first: the start fails as a vanished interpreter would
    children = [Child(0, "0", "edge-gpu0", 9000, tmp_path / "a", [sys.executable, "-c", "print('up')"], dict(os.environ)),
                Child(1, "1", "edge-gpu1", 9001, tmp_path / "b", [str(program)], dict(os.environ))]
    policies = []
    out = io.StringIO()
    supervisor = Supervisor(children, lambda: policies.append(_Repaired(program)) or policies[-1], out=out)
    assert supervisor.run() == 0  # the repaired child ran and ended well, as did the other
    assert supervisor.restarts == {1: 1} and policies[1].codes == [START_FAILED, 0] and policies[0].codes == [0]
    assert sorted(out.getvalue().splitlines()) == ["edge-gpu0 | up", "edge-gpu1 | repaired"]


def test_a_stop_that_comes_while_the_children_are_started_stops_those_already_started_and_starts_no_more(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    children = [Child(k, str(k), f"edge-gpu{k}", 9000 + k, tmp_path / str(k), sleeper, dict(os.environ)) for k in range(3)]
    supervisor = Supervisor(children, out=io.StringIO())
    start = supervisor._start

    def start_then_stop(child) -> None:  # systemd's stop arrives as the first child is being started
        start(child)
        if child.index == 0:
            supervisor.signal(signal.SIGTERM)

    supervisor._start = start_then_stop
    ended: list = []
    run = threading.Thread(target=lambda: ended.append(supervisor.run()))
    run.start()
    run.join(30)  # the first child ends on its SIGTERM at once; one started after the stop would sleep 60 s
    stuck = supervisor.pids()
    for pid in stuck.values():
        os.kill(pid, signal.SIGKILL)
    assert not stuck and ended and sorted(supervisor._codes) == [0]


def test_a_child_whose_lines_nobody_reads_any_more_is_still_drained_and_ends(tmp_path):
    read, write = os.pipe()
    os.close(read)  # whatever read the supervisor's output went away (a closed terminal, a killed `| tee`)
    gone = io.TextIOWrapper(io.FileIO(write, "w"), write_through=True)  # unbuffered: each line fails as it is written
    talker = [sys.executable, "-c", "import sys\nfor i in range(20000): print(i, 'x' * 60, file=sys.stderr)"]
    children = [Child(0, "0", "edge-gpu0", 9000, tmp_path / "a", talker, dict(os.environ))]  # 1.4 MB: 20 pipes full
    supervisor = Supervisor(children, out=gone, err=gone)
    ended: list = []
    run = threading.Thread(target=lambda: ended.append(supervisor.run()))
    run.start()
    run.join(60)
    stuck = supervisor.pids()
    for pid in stuck.values():
        os.kill(pid, signal.SIGKILL)
    run.join(30)
    gone.close()
    assert not stuck and ended == [0]
