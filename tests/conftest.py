"""Shared fixtures: a real database (SQLite file and PostgreSQL), the app, keys, HTTP servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from castframe.app import create_app
from castframe.config import Settings
from castframe.jobs import accounts
from castframe.services import Services
from castframe.store.db import Database
from castframe.store.migrate import upgrade
from castframe.store.tables import metadata
from tests.support.fake_ideogram import FakeIdeogram
from tests.support.http import LoopbackServer
from tests.support.images import astronaut_png
from tests.support.polling import wait_for_job

if TYPE_CHECKING:
    from castframe.faces.identity import FaceModel

PG_ADMIN_URL = os.environ.get(
    "CASTFRAME_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated, dropped at the end."""
    name = f"castframe_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate_all(url: str) -> None:
    db = Database(url)
    with db.write() as conn:
        names = ", ".join(table.name for table in reversed(metadata.sorted_tables))
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'castframe.db'}"
    url: str = request.getfixturevalue("postgres_url")
    truncate_all(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'castframe.db'}"


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "allow_private_urls": True,
        "poll_interval": 0.2,
        "lease_seconds": 5.0,
        "retry_base_seconds": 0.1,
        "webhook_retry_schedule": "0.3,0.3,0.3",
        "secret_key": "test-secret",
        "public_url": "http://testserver",
        "worker_concurrency": 2,
        "rate_limit_per_second": 1000.0,
        "rate_limit_burst": 1000,
        "upload_rate_per_second": 1000.0,
        "upload_rate_burst": 1000,
        "character_rate_per_second": 1000.0,
        "character_rate_burst": 1000,
        # Faces scored in the worker's process: a pool's processes cost each test's worker
        # ~0.8 s of start-up (tests/test_face_scoring_pool.py runs the pool).
        "face_processes": 0,
    }
    values.update(overrides)
    return Settings(**values)


class Api:
    """A TestClient plus key management and job helpers, over one Services instance."""

    def __init__(self, client: TestClient, services: Services) -> None:
        self.client = client
        self.services = services

    def key(self, account: str = "acme", mode: str = "live", credits: int = 100_000) -> str:
        with self.services.db.write() as conn:
            row, _ = accounts.ensure_account(conn, account, credits)
            raw, _ = accounts.create_key(conn, row["id"], mode)
        return raw

    def generate(self, key: str, body: dict[str, Any], **headers: str) -> Any:
        return self.client.post(
            "/v2/images/generate", json=body, headers={"X-API-Key": key, **headers}
        )

    def get_job(self, key: str, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v2/jobs/{job_id}", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait(self, key: str, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for_job(lambda i: self.get_job(key, i), job_id, timeout)

    def submit_and_wait(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.generate(key, body)
        assert response.status_code == 202, response.text
        return self.wait(key, response.json()["jobId"])

    def file(self, url: str) -> bytes:
        response = self.client.get(url)
        assert response.status_code == 200, response.text
        return response.content


def make_api(
    tmp_path: Path, database_url: str, run_worker: bool = True, **overrides: Any
) -> Iterator[Api]:
    settings = make_settings(tmp_path / "data", database_url, **overrides)
    services = Services.build(settings)
    app = create_app(settings, services=services, run_worker=run_worker)
    with TestClient(app) as client:
        yield Api(client, services)


open_api = contextmanager(make_api)
"""``with open_api(tmp_path, url, **settings) as api:`` for tests that need their own settings."""


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    """The app with its embedded worker, on SQLite and on PostgreSQL."""
    yield from make_api(tmp_path, database_url)


@pytest.fixture
def api_sqlite(tmp_path: Path, sqlite_url: str) -> Iterator[Api]:
    """The app on SQLite only, for behaviour that does not depend on the database."""
    yield from make_api(tmp_path, sqlite_url)


@pytest.fixture
def api_no_worker(tmp_path: Path, database_url: str) -> Iterator[Api]:
    """The API without a worker: jobs stay queued until the test runs one."""
    yield from make_api(tmp_path, database_url, run_worker=False)


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture
def ref(http_server: LoopbackServer) -> str:
    """The URL of scikit-image's astronaut, served as a PNG by ``http_server``."""
    return http_server.serve_bytes("/astronaut.png", astronaut_png())


def body_for(
    reference: str, prompt: str = "a woman in a city street at night", **params: Any
) -> dict[str, Any]:
    """A valid ideogram-character request; top-level keys pass through ``params['top']``."""
    top = params.pop("top", {})
    return {
        "prompt": prompt,
        "model": "ideogram-character",
        "ideogramParams": {
            "character_reference_image": reference,
            "rendering_speed": "turbo",
            **params,
        },
        **top,
    }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto in server mode) in its own process."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError("moto_server did not start")
    yield url
    process.terminate()
    process.wait(10)


S3_CREDENTIALS = {
    "s3_access_key_id": "test",
    "s3_secret_access_key": "test",
    "s3_region": "us-east-1",
}


def s3_storage(endpoint: str, bucket: str) -> dict[str, Any]:
    """Settings that keep Castframe's files under ``castframe/`` in ``bucket`` of the S3 server
    at ``endpoint``."""
    return {
        "storage_url": f"s3://{bucket}/castframe",
        "s3_endpoint_url": endpoint,
        **S3_CREDENTIALS,
    }


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"castframe-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def model() -> FaceModel:
    """The real face model (the faces extra is part of `make test`'s install)."""
    from castframe.faces import face_model

    loaded = face_model()
    assert loaded is not None, "the faces extra is part of `make test`'s install"
    return loaded


@pytest.fixture
def fake_ideogram() -> Iterator[FakeIdeogram]:
    """A faithful fake of Ideogram's API (tests/support/fake_ideogram.py) on loopback."""
    server = FakeIdeogram()
    yield server
    server.close()


@pytest.fixture
def ideogram_api(tmp_path: Path, sqlite_url: str, fake_ideogram: FakeIdeogram) -> Iterator[Api]:
    """The app on SQLite with its ideogram engine pointed at the fake (fast retries, a 3 s
    call deadline)."""
    yield from make_api(tmp_path, sqlite_url, **fake_ideogram.settings())
