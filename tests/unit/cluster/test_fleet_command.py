"""`fleet`: a DSN libpq cannot read is refused naming it, before anything connects."""
from __future__ import annotations

import pytest

from pipeline.cluster.cli import fleet_command

pytest.importorskip("psycopg")


@pytest.mark.parametrize("action", [["list"], ["import", "site.yaml"]])
def test_a_dsn_that_is_not_one_is_refused_naming_it_without_its_password(action, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site.yaml").write_text("streams: [{id: gate, url: 'rtsp://cam/live'}]\n")
    assert fleet_command([*action, "--dsn", "fleet:s3cret@db.example/fleet"]) == 2  # the scheme left out
    err = capsys.readouterr().err
    assert err.startswith(f"fleet {action[0]}: the fleet's PostgreSQL DSN: not a DSN libpq can read")
    assert "postgresql://user@host/db" in err and "s3cret" not in err  # libpq's own message repeats the DSN
