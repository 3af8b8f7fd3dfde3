"""Whole-process tests: real `castframe` processes (uvicorn) spoken to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """One `castframe ...` process with its own log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "castframe.cli", *self.args],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Castframe:
    """A deployment under test: shared env (database, data dir), servers and workers."""

    def __init__(self, tmp: Path, database_url: str, **settings: str) -> None:
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFRAME_")}
        self.env.update(
            {
                "CASTFRAME_DATA_DIR": str(tmp / "data"),
                "CASTFRAME_DATABASE_URL": database_url,
                "CASTFRAME_ALLOW_PRIVATE_URLS": "1",
                "CASTFRAME_SECRET_KEY": "e2e-secret",
                "CASTFRAME_POLL_INTERVAL": "0.2",
                "CASTFRAME_LEASE_SECONDS": "3",
                "CASTFRAME_RATE_LIMIT_BURST": "1000",
                "CASTFRAME_RATE_LIMIT_PER_SECOND": "1000",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update({f"CASTFRAME_{k.upper()}": v for k, v in settings.items()})
        self.processes: list[Process] = []

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "castframe.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def key(self, account: str = "acme", mode: str = "live", credits: int = 100_000) -> str:
        return (
            self.cli(
                "keys", "create", "--account", account, "--mode", mode, "--credits", str(credits)
            )
            .strip()
            .splitlines()[-1]
        )

    def server(self, *extra: str) -> tuple[Process, str]:
        port = free_port()
        log = self.tmp / f"server-{port}.log"
        process = Process(["serve", "--port", str(port), *extra], self.env, log).start()
        self.processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    return process, base
            except httpx.HTTPError:
                pass
            if process.proc and process.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{process.output()}")

    def worker(self, *extra: str) -> Process:
        log = self.tmp / f"worker-{len(self.processes)}.log"
        process = Process(["worker", *extra], self.env, log).start()
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.kill()


@pytest.fixture
def castframe_sqlite(tmp_path: Path) -> Iterator[Castframe]:
    deployment = Castframe(tmp_path, f"sqlite:///{tmp_path / 'e2e.db'}")
    yield deployment
    deployment.close()


@pytest.fixture(params=["sqlite", "postgres"])
def castframe_any(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Castframe]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'e2e.db'}"
    else:
        from tests.conftest import truncate_all

        url = request.getfixturevalue("postgres_url")
        truncate_all(url)
    deployment = Castframe(tmp_path, url)
    yield deployment
    deployment.close()
