"""``castframe migrate --wait``: a container started beside its database retries, then fails."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from castframe.cli import app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_migrate_retries_an_unreachable_database_then_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"postgresql+psycopg://castframe@127.0.0.1:{_closed_port()}/castframe"
    monkeypatch.setenv("CASTFRAME_DATABASE_URL", url)
    result = CliRunner().invoke(app, ["migrate", "--wait", "1.5"])
    assert result.exit_code != 0
    assert "the database does not answer yet; retrying" in result.output


def test_migrate_without_wait_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql+psycopg://castframe@127.0.0.1:{_closed_port()}/castframe"
    monkeypatch.setenv("CASTFRAME_DATABASE_URL", url)
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code != 0
    assert "retrying" not in result.output


def test_migrate_with_wait_on_a_live_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTFRAME_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["migrate", "--wait", "5"])
    assert result.exit_code == 0, result.output
    assert "database ready" in result.output
    assert (tmp_path / "castframe.db").exists()
