"""A port another process takes: the service says which one and what to do, and leaves nothing open."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from pipeline.config.models import HttpConfig
from pipeline.errors import ConfigError
from pipeline.runtime.runner import PipelineRunner
from pipeline.service import Service
from tests.support.service import config


def test_a_port_taken_by_another_process_before_the_server_starts_is_named_and_nothing_is_left_open(tmp_path):
    """Two instances started at once on one port can both bind it (SO_REUSEADDR shares a port until a socket
    listens on it): the one that listens second must fail as clearly as a bind would, and close what it opened."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.bind(("127.0.0.1", 0))
    port = other.getsockname()[1]
    try:
        threads, sockets = set(threading.enumerate()), _sockets()
        runner = PipelineRunner(config(tmp_path, [{"id": "a", "url": "fake://a?fps=20"}]))
        service = Service(runner, HttpConfig(port=port), None)
        other.listen()
        with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{port} \(Address already in use\); "
                                              r"choose a free port \(runtime\.http\.port\) or stop what uses it"):
            service.run()
        assert not runner.running.is_set() and service.console.closed
        assert set(threading.enumerate()) <= threads  # no server thread goes on
        assert _sockets() <= sockets  # its socket is closed (other tests' may close meanwhile)
    finally:
        other.close()


def _sockets() -> set[str]:
    """The sockets this process has open ('socket:[inode]'), bound or not (a socket bound but not listening is in
    no table of connections)."""
    links = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed since it was listed
            continue
    return {link for link in links if link.startswith("socket:")}

