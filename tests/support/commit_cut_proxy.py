"""A TCP proxy in front of a PostgreSQL server that, once armed, lets the next COMMIT through and cuts that
connection before its answer comes back: the transaction is committed, but the client sees only a lost
connection (as when the network or the client's host fails at that moment).

    with CommitCutProxy(server_port) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}"
        ...
        proxy.arm()
        ...  # the next COMMIT on any connection through the proxy is committed, then the connection cut
        assert proxy.cut.wait(10)
"""
from __future__ import annotations

import socket
import threading


class CommitCutProxy:
    """Forwards 127.0.0.1:`port` to the server at 127.0.0.1:`server_port`. `arm()`: the next client message holding
    COMMIT is forwarded (unless told otherwise), the server's answer is swallowed and, once it came (the server committed; at most
    `answer_timeout_s`), both sides of that connection are closed; `cut` is set then. Cuts once per `arm()`."""

    def __init__(self, server_port: int, answer_timeout_s: float = 5.0):
        self.server_port = server_port
        self.answer_timeout_s = answer_timeout_s
        self.cut = threading.Event()
        self.committed = threading.Event()  # the server's answer to the cut COMMIT arrived (and was swallowed)
        self._lock = threading.Lock()
        self._armed = False
        self._forward = True
        self._muted: set[int] = set()  # ids of the connection pairs whose answers are swallowed
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = self._listener.getsockname()[1]
        self._closed = False

    def __enter__(self) -> "CommitCutProxy":
        threading.Thread(target=self._accept, name="commit-cut-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def arm(self, forward_commit: bool = True) -> None:
        """Cut the connection that sends the next COMMIT: after the server committed it, or, with
        `forward_commit` False, before it reaches the server (which then rolls the transaction back)."""
        with self._lock:
            self._armed = True
            self._forward = forward_commit
            self.cut.clear()
            self.committed.clear()

    def close(self) -> None:
        self._closed = True
        for s in [self._listener, *self._sockets]:
            _close(s)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self.server_port))
            except OSError:
                return
            self._sockets += [client, server]
            pair = (client, server)
            threading.Thread(target=self._to_server, args=pair, daemon=True).start()
            threading.Thread(target=self._to_client, args=pair, daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    cutting = self._armed and b"COMMIT" in data
                    forward = not cutting or self._forward
                    if cutting:  # swallow the answer from now on: muted before the COMMIT is sent
                        self._armed = False
                        self._muted.add(id(server))
                if forward:
                    server.sendall(data)
                if cutting:
                    if forward:
                        self.committed.wait(self.answer_timeout_s)
                    _close(client)
                    _close(server)
                    self.cut.set()
                    return
        except OSError:
            pass
        _close(server)

    def _to_client(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                if id(server) in self._muted:
                    if b"COMMIT\x00" in data:  # CommandComplete: the transaction is committed
                        self.committed.set()
                    continue
                client.sendall(data)
        except OSError:
            pass
        if id(server) not in self._muted:
            _close(client)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
