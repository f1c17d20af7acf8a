"""A real, throw-away PostgreSQL server for tests.

`postgres_server` (session) runs `initdb` into a temp dir and starts the server on a free port
(TCP 127.0.0.1, unix socket inside the temp dir, fsync off: data safety is not under test).
`postgres_dsn` (per test) creates a fresh database on it and drops it afterwards.
As root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
Both skip with the reason when the PostgreSQL binaries (Debian: `postgresql`) are absent.

Use from a conftest: `from tests.support.postgres import postgres_server, postgres_dsn  # noqa: F401`.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin")


def find_bin_dir() -> Path | None:
    """The newest directory holding `initdb` and `pg_ctl`, from PG_BIN, Debian's layout or PATH."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    for pattern in _BIN_GLOBS:
        candidates += sorted(glob.glob(pattern), key=_version_key, reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for d in candidates:
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _version_key(path: str) -> int:
    digits = "".join(ch for ch in Path(path).parent.name if ch.isdigit())
    return int(digits or 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster in a temp dir; `stop()` and `start()` may be called again (restart tests)."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="streamweave-pg-"))
        self.data, self.sock, self.log = self.root / "data", self.root / "sock", self.root / "server.log"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
            self._as_user = ["runuser", "-u", "postgres", "--"]
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self._run("mkdir", "-p", str(self.sock), tool=False)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `fast` disconnects clients like a restart does, `immediate` like a crash."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        import psycopg  # noqa: PLC0415

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        import psycopg  # noqa: PLC0415

        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str, tool: bool = True) -> None:
        exe = str(self.bin_dir / program) if tool else program
        proc = subprocess.run([*self._as_user, exe, *args], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}\n{log}")


@pytest.fixture(scope="session")
def postgres_server():
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's 'postgresql' or set PG_BIN")
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'streamweave[test]')")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_dsn(postgres_server):
    """A fresh database on the running test server (restarted first if a test left it stopped)."""
    if not postgres_server.running:
        postgres_server.start()
    dsn = postgres_server.create_database()
    yield dsn
    if not postgres_server.running:
        postgres_server.start()
    postgres_server.drop_database(dsn)
