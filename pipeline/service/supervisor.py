"""`run CONFIG --gpus all|0,1|N`: one child `run` per GPU (`children.py` says what each is), supervised.

The supervisor starts every child in a session of its own (a terminal's Ctrl-C reaches the supervisor only, and
it decides what the children get): SIGINT and SIGTERM are passed on to every child (again: they abandon what
they buffered) and no child is started again; SIGHUP is passed on (each child reloads the file). A child starts
with SIGHUP blocked and takes it once its reload handler is in place, so a reload asked for while it starts is
applied then instead of killing it. On Linux a child gets SIGTERM when the supervisor ends, however it ends
(`children.tie_to_supervisor`): no child keeps its port and GPU after a SIGKILLed supervisor. A child
that dies is started again after a backoff (`children.RestartPolicy`). Every line a child writes comes out on
the supervisor's stream of the same kind, prefixed with the child's instance name (`edge-1-gpu0 | ...`), or,
when the line is a JSON object (`runtime.log_format: json`), with an `instance` field added; when nothing reads
that stream any more, the lines are dropped, and the children's pipes are still read to their end. The supervisor
exits once every child has ended, with `children.overall_exit` of their codes. A child that cannot even be
started (its program gone, no memory or file handles left) counts as one that died with `START_FAILED`, and
is tried again the same way: the children already running are never left without their supervisor.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, TextIO

import yaml

from pipeline import logs
from pipeline.backoff import Backoff
from pipeline.service.children import (SUPERVISOR_PID, Child, RestartPolicy, overall_exit, parse_gpus,
                                       plan_children)

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

START_FAILED = 127
"""The exit code a child that could not be started counts with (a shell's for a command it cannot run)."""


def prefixed(instance: str, line: str) -> str:
    """One child's output line as the supervisor writes it (a newline at the end)."""
    text = line.rstrip("\n")
    if text.startswith("{"):
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict):
            return json.dumps({**record, "instance": instance}) + "\n"
    return f"{instance} | {text}\n"


class Supervisor:
    """Runs `children` until each has ended for good. make_policy: a RestartPolicy per child. out, err: where
    the children's stdout and stderr lines go. `restarts` counts the restarts per child index."""

    def __init__(self, children: list[Child], make_policy: Callable[[], RestartPolicy] | None = None,
                 out: TextIO | None = None, err: TextIO | None = None):
        self.children = {child.index: child for child in children}
        make_policy = make_policy or (lambda: RestartPolicy(Backoff(1.0, 30.0)))
        self._policies = {index: make_policy() for index in self.children}
        self._streams = {"stdout": out or sys.stdout, "stderr": err or sys.stderr}
        self._write_lock = threading.Lock()
        self._procs: dict[int, subprocess.Popen] = {}
        self._started: dict[int, float] = {}
        self._ended: queue.SimpleQueue = queue.SimpleQueue()
        self._codes: dict[int, int] = {}
        self._stopping = threading.Event()
        self.restarts: Counter = Counter()

    def pids(self) -> dict[int, int]:
        """Process ids of the children running now, by index."""
        return {index: proc.pid for index, proc in list(self._procs.items())}

    def signal(self, signum: int) -> None:
        """Pass `signum` on to every child; SIGINT and SIGTERM also mean: start none again."""
        if signum in (signal.SIGINT, signal.SIGTERM):
            if not self._stopping.is_set():
                log.warning("%s received: stopping %d instance(s)", signal.Signals(signum).name, len(self._procs))
            self._stopping.set()
        for proc in list(self._procs.values()):
            if proc.poll() is None:
                proc.send_signal(signum)

    def run(self) -> int:
        """Start every child, restart those that die, return once all have ended (see `overall_exit`)."""
        due: dict[int, float] = {}  # index -> when it starts again (monotonic)
        for index in self.children:
            if self._stopping.is_set():  # stopped while starting: the rest are not started
                break
            if self._launch(index, due) and self._stopping.is_set():  # the stop came while it was being started
                self._procs[index].send_signal(signal.SIGTERM)
        while self._procs or due:
            if self._stopping.is_set():
                due.clear()
            now = time.monotonic()
            for index in [i for i, at in due.items() if at <= now]:
                del due[index]
                self.restarts[index] += 1
                if self._launch(index, due) and self._stopping.is_set():  # the stop came while it was being started
                    self._procs[index].send_signal(signal.SIGTERM)
            wait = min(due.values()) - now if due else 1.0  # a bounded wait: signals are handled in between
            try:
                index, code = self._ended.get(timeout=max(0.01, min(wait, 1.0)))
            except queue.Empty:
                continue
            del self._procs[index]
            self._after(index, code, due)
        return overall_exit(list(self._codes.values()))

    def _launch(self, index: int, due: dict[int, float]) -> bool:
        """Start child `index`; False when it could not be (then it is handled as a child that died)."""
        child = self.children[index]
        try:
            self._start(child)
        except OSError as exc:
            log.error("instance %s (GPU %s) could not be started: %s", child.instance, child.gpu, exc)
            self._started[index] = time.monotonic()
            self._after(index, START_FAILED, due)
            return False
        return True

    def _after(self, index: int, code: int, due: dict[int, float]) -> None:
        """Child `index` ended with `code`: keep the code and, as its policy says, start it again later."""
        self._codes[index] = code
        delay = self._policies[index].delay(code, time.monotonic() - self._started[index], self._stopping.is_set())
        child = self.children[index]
        if delay is None:
            log.info("instance %s (GPU %s) ended with exit code %d", child.instance, child.gpu, code)
            return
        log.warning("instance %s (GPU %s) died with exit code %d; starting it again in %.1f s", child.instance,
                    child.gpu, code, delay)
        due[index] = time.monotonic() + delay

    def _start(self, child: Child) -> None:
        """Start `child`. Its death signal (`children.tie_to_supervisor`) comes when the thread that started it
        ends: every child is started from the thread of `run`, which ends with the supervisor."""
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # the child inherits the blocked signal
        try:
            proc = subprocess.Popen(child.argv, env={**child.env, SUPERVISOR_PID: str(os.getpid())},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                    bufsize=1, start_new_session=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self._procs[child.index], self._started[child.index] = proc, time.monotonic()
        log.info("instance %s: GPU %s, port %d, outbox %s, pid %d", child.instance, child.gpu, child.port,
                 child.outbox, proc.pid)
        pumps = [threading.Thread(target=self._pump, args=(child.instance, pipe, name), daemon=True,
                                  name=f"supervise:{child.instance}:{name}")
                 for pipe, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
        for pump in pumps:
            pump.start()
        threading.Thread(target=self._wait, args=(child.index, proc, pumps), daemon=True,
                         name=f"supervise:{child.instance}").start()

    def _pump(self, instance: str, pipe: TextIO, name: str) -> None:
        stream = self._streams[name]
        for line in pipe:  # to its end, whatever happens to `stream`: a child whose pipe fills up blocks
            with self._write_lock:
                try:
                    stream.write(prefixed(instance, line))
                    stream.flush()
                except OSError:  # its reader went away (a closed terminal, a killed `| tee`): the line is dropped
                    continue

    def _wait(self, index: int, proc: subprocess.Popen, pumps: list[threading.Thread]) -> None:
        code = proc.wait()
        for pump in pumps:  # every line it wrote is out before its end is reported
            pump.join()
        self._ended.put((index, code))


def supervise_command(args) -> int:
    """`run CONFIG --gpus ...` (the other `run` options apply to every child); ConfigError before any child
    starts for a bad config, --gpus or --shard."""
    from pipeline.config import load_config  # noqa: PLC0415 - loaded only when supervising
    from pipeline.config.loader import config_text  # noqa: PLC0415
    from pipeline.runtime.placement import Placement, parse_shard  # noqa: PLC0415

    config = Placement(instance=args.instance).apply(load_config(args.config))
    logs.configure(config.runtime.log_level, config.runtime.log_format)  # its own lines as its children's
    raw = yaml.safe_load(config_text(args.config))
    gpus = parse_gpus(args.gpus)
    passthrough = [*(["--quiet"] if args.quiet else []), *([f"--duration={args.duration}"] if args.duration else [])]
    children = plan_children(args.config, config, raw, gpus, port=args.port,
                             outbox=None if args.outbox is None else Path(args.outbox),
                             shard=None if args.shard is None else parse_shard(args.shard), passthrough=passthrough)
    supervisor = Supervisor(children)
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, _frame: supervisor.signal(signum))
    log.info("supervising %d instance(s) of %s, one per GPU (%s)", len(children), args.config, ", ".join(gpus))
    return supervisor.run()
