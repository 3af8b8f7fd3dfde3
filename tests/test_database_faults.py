"""The database failing under a running worker and API: nothing lost, nothing charged twice.

Faults are real where PostgreSQL lets us make them (its backends terminated while jobs run, as a
restart or failover does) and injected at the connection boundary on both databases.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from castframe.dispatch.worker import failure_of
from castframe.jobs import ledger
from castframe.store.db import Database, is_transient
from castframe.store.tables import jobs
from tests.conftest import PG_ADMIN_URL, Api, body_for, open_api
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut_png
from tests.support.polling import wait_for_job, wait_until

ENGINE = "tests.support.engines:SteppingEngine"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


@contextmanager
def scratch_database() -> Iterator[str]:
    """A database of its own, so terminating its backends touches nothing else."""
    name = f"castframe_faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def terminate_backends(admin: psycopg.Connection[Any], url: str) -> int:
    """End every session on the database of ``url``, as ``pg_terminate_backend`` on a restart."""
    name = url.rsplit("/", 1)[1]
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    ).fetchall()
    return len(rows)


def with_retries(call: Callable[[], Any], timeout: float = 60.0) -> Any:
    """What a client does with a 503 not_ready: wait for Retry-After (shortened here) and retry."""
    deadline = time.monotonic() + timeout
    while True:
        response = call()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        assert response.json()["code"] == "not_ready", response.text
        time.sleep(0.05)


def upload_reference(api: Api, key: str) -> str:
    response = api.client.post(
        "/v2/uploads",
        headers={"X-API-Key": key},
        files={"file": ("astronaut.png", astronaut_png(), "image/png")},
    )
    assert response.status_code == 201, response.text
    url: str = response.json()["url"]
    return url


def charges(api: Api, job_ids: list[str]) -> dict[str, dict[str, int]]:
    with api.services.db.read() as conn:
        return {job_id: ledger.job_entries(conn, job_id) for job_id in job_ids}


def test_backends_terminated_every_second_while_100_jobs_run(tmp_path: Path) -> None:
    """Every second every session of the database is terminated (the worker's, the API's, the
    listener's), while 100 jobs are submitted and run. Each ends COMPLETED, in one attempt,
    charged once; a client retrying 503s with its Idempotency-Key never creates a job twice."""
    with (
        scratch_database() as url,
        open_api(
            tmp_path,
            url,
            routes="ideogram-character=" + ENGINE,
            faces_enabled=False,
            max_active_jobs=200,
        ) as api,
        psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin,
    ):
        key = api.key(credits=100_000)
        reference = upload_reference(api, key)
        start = api.client.get("/v2/me", headers={"X-API-Key": key}).json()["team"]["credits"]
        stop = threading.Event()
        terminated: list[int] = []

        def killer() -> None:
            while not stop.wait(1.0):
                terminated.append(terminate_backends(admin, url))

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            job_ids = []
            for index in range(100):
                body = body_for(reference, seed=index)
                response = with_retries(
                    lambda body=body, index=index: api.generate(
                        key, body, **{"Idempotency-Key": f"fault-{index}"}
                    )
                )
                assert response.status_code == 202, response.text
                job_ids.append(response.json()["jobId"])
            deadline = time.monotonic() + 120
            final: dict[str, dict[str, Any]] = {}
            while len(final) < len(job_ids) and time.monotonic() < deadline:
                for job_id in job_ids:
                    if job_id in final:
                        continue
                    response = with_retries(
                        lambda job_id=job_id: api.client.get(
                            f"/v2/jobs/{job_id}", headers={"X-API-Key": key}
                        )
                    )
                    assert response.status_code == 200, response.text
                    if response.json()["status"] in TERMINAL:
                        final[job_id] = response.json()
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(5)
        assert sum(terminated) >= 10, terminated  # the faults really happened, repeatedly
        assert len(set(job_ids)) == 100
        statuses = {job["status"] for job in final.values()}
        assert len(final) == 100 and statuses == {"COMPLETED"}, [
            (job["status"], job["error"]) for job in final.values() if job["status"] != "COMPLETED"
        ]
        with api.services.db.read() as conn:
            stored = conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar()
            attempts = dict(conn.execute(sa.select(jobs.c.id, jobs.c.attempts)).all())
        assert stored == 100  # retried submissions were answered from their idempotency record
        assert set(attempts.values()) == {1}, attempts  # no attempt was lost to the outage
        entries = charges(api, job_ids)
        for job_id, entry in entries.items():  # held once, captured once, nothing released
            assert set(entry) == {"hold", "capture"}, (job_id, entry)
            assert entry["capture"] == entry["hold"] > 0, (job_id, entry)
        charged = sum(entry["capture"] for entry in entries.values())
        after = api.client.get("/v2/me", headers={"X-API-Key": key}).json()["team"]["credits"]
        assert start - after == charged


def test_first_request_after_backends_are_terminated_succeeds(
    tmp_path: Path,
) -> None:
    """A pooled connection whose backend was terminated is noticed at checkout and replaced:
    the next request answers 200, not a 503 for the dead connection."""
    with (
        scratch_database() as url,
        open_api(tmp_path, url, run_worker=False) as api,
        psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin,
    ):
        key = api.key()
        job_id = api.generate(key, body_for("https://example.com/a.png")).json()["jobId"]
        assert api.client.get(f"/v2/jobs/{job_id}", headers={"X-API-Key": key}).status_code == 200
        for _ in range(3):
            assert terminate_backends(admin, url) >= 1
            time.sleep(0.1)  # the FATAL message reaches the pooled sockets
            api.services.key_cache.clear()
            response = api.client.get(f"/v2/jobs/{job_id}", headers={"X-API-Key": key})
            assert response.status_code == 200, response.text


WORKER_THREADS = ("castframe-worker", "castframe-heartbeat")


class FlakyWrites:
    """``Database.write`` failing as a dropped connection does, on every other call made by the
    given threads (the worker's by default), until ``budget`` failures have been injected."""

    def __init__(
        self, db: Database, budget: int, threads: tuple[str, ...] = WORKER_THREADS
    ) -> None:
        self.real = db.write
        self.budget = budget
        self.threads = threads
        self.calls = 0
        self.injected = 0
        self.lock = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        worker_thread = threading.current_thread().name.startswith(self.threads)
        with self.lock:
            self.calls += worker_thread
            fail = worker_thread and self.calls % 2 == 1 and self.injected < self.budget
            self.injected += fail
        if fail:
            raise sa.exc.OperationalError(
                "UPDATE jobs SET status=%(status)s WHERE lease_owner = 'w-123'",
                {},
                Exception("server closed the connection unexpectedly"),
            )
        with self.real() as conn:
            yield conn


def test_worker_writes_survive_a_blinking_database(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims, progress, leases and completions that fail as a dropped connection does are
    retried (or skipped, for progress): every job completes in its first attempt, charged
    once, and no job's message shows SQL or a lease id."""
    with open_api(
        tmp_path, database_url, routes="ideogram-character=" + ENGINE, faces_enabled=False
    ) as api:
        flaky = FlakyWrites(api.services.db, budget=12)
        monkeypatch.setattr(api.services.db, "write", flaky.write)
        key = api.key()
        reference = upload_reference(api, key)
        ids = [
            api.generate(key, body_for(reference, seed=index)).json()["jobId"] for index in range(8)
        ]
        finished = [api.wait(key, job_id) for job_id in ids]
        assert flaky.injected == 12
        assert [job["status"] for job in finished] == ["COMPLETED"] * 8, [
            job["error"] for job in finished
        ]
        with api.services.db.read() as conn:
            attempts = {
                row.id: row.attempts for row in conn.execute(sa.select(jobs.c.id, jobs.c.attempts))
            }
        assert set(attempts.values()) == {1}
        for entry in charges(api, ids).values():
            assert set(entry) == {"hold", "capture"} and entry["capture"] == entry["hold"] > 0


def test_job_error_messages_carry_no_sql_or_lease_ids() -> None:
    statement_error = sa.exc.IntegrityError(
        "UPDATE jobs SET result=%(result)s WHERE jobs.lease_owner = %(owner)s",
        {"owner": "w-0123456789ab"},
        Exception('duplicate key value violates unique constraint "uq_ledger_job_kind"'),
    )
    failure = failure_of(statement_error)
    assert failure.code == "internal_error"
    for leaked in ("UPDATE", "lease_owner", "w-0123456789ab", "uq_ledger"):
        assert leaked not in failure.message
    engine_error = failure_of(RuntimeError("CUDA error: out of bounds\nTraceback (most recent)"))
    assert engine_error.code == "engine_error"
    assert engine_error.message == "RuntimeError: CUDA error: out of bounds"
    assert len(failure_of(ValueError("x" * 10_000)).message) <= 300


def test_an_engine_raising_a_database_error_fails_the_job_without_sql(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The whole path: a job whose run raises a (non-transient) SQLAlchemy error ends FAILED
    internal_error, uncharged, its message free of SQL."""
    with open_api(
        tmp_path, sqlite_url, routes="ideogram-character=tests.support.engines:BrokenEngine"
    ) as api:
        key = api.key()
        job = api.submit_and_wait(key, body_for(upload_reference(api, key)))
        entries = charges(api, [job["id"]])[job["id"]]
    assert set(entries) == {"hold", "release"}
    assert (job["status"], job["errorCode"]) == ("FAILED", "internal_error")
    assert "SELECT" not in job["error"] and "w-" not in job["error"]


def test_webhook_attempts_are_recorded_across_a_blinking_database(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, http_server: LoopbackServer
) -> None:
    """The sender's writes failing as a dropped connection does: the delivery is recorded once
    the database answers again, so the receiver gets the completed event once, not again after
    the delivery's lease runs out."""
    with open_api(
        tmp_path, database_url, routes="ideogram-character=" + ENGINE, faces_enabled=False
    ) as api:
        http_server.routes["/hook"] = lambda _request: Reply(200, b"ok")
        key = api.key()
        reference = upload_reference(api, key)
        flaky = FlakyWrites(api.services.db, budget=2, threads=("castframe-webhook_",))
        monkeypatch.setattr(api.services.db, "write", flaky.write)
        body = body_for(reference, top={"webhookUrl": http_server.url("/hook")})
        job = api.submit_and_wait(key, body)
        assert job["status"] == "COMPLETED"
        wait_until(lambda: api.get_job(key, job["id"])["webhookStatus"] == "delivered", timeout=15)
        time.sleep(1.0)  # long enough for a second, duplicate attempt to show up
        completed = [
            hit for hit in http_server.received("/hook") if hit.json()["event"] == "completed"
        ]
        assert flaky.injected > 0
        assert len(completed) == 1


def test_an_outage_longer_than_the_lease_does_not_requeue_live_jobs(tmp_path: Path) -> None:
    """The database refuses connections for longer than a lease while a job runs: when it is
    back, the job's lease looks expired, but its worker is alive. The job must finish in its
    first attempt rather than be requeued (its work thrown away, an attempt used up)."""
    with (
        scratch_database() as url,
        open_api(
            tmp_path,
            url,
            routes="ideogram-character=tests.support.engines:SlowSteppingEngine",
            faces_enabled=False,
            lease_seconds=1.5,
            worker_concurrency=2,  # an idle slot polls, and reaps leases, as soon as it can
        ) as api,
        psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin,
    ):
        key = api.key()
        job_id = api.generate(key, body_for(upload_reference(api, key))).json()["jobId"]
        wait_until(lambda: api.get_job(key, job_id)["status"] == "PROCESSING")
        name = url.rsplit("/", 1)[1]
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            terminate_backends(admin, url)
            time.sleep(3.0)  # two leases
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        job = wait_for_job(
            lambda i: with_retries(
                lambda: api.client.get(f"/v2/jobs/{i}", headers={"X-API-Key": key})
            ).json(),
            job_id,
        )
        assert job["status"] == "COMPLETED", job["error"]
        with api.services.db.read() as conn:
            attempts = conn.execute(sa.select(jobs.c.attempts)).scalar_one()
        assert attempts == 1
        assert set(charges(api, [job_id])[job_id]) == {"hold", "capture"}


@pytest.mark.parametrize(
    "statement",
    ["SELECT * FROM no_such_table", "SELECT no_such_column FROM jobs", "SELEC 1"],
)
def test_statement_errors_are_not_transient(database_url: str, statement: str) -> None:
    """Both drivers raise OperationalError for some statement bugs (SQLite for all three):
    they are not outages, so the worker does not retry them forever and the API does not
    answer 503 for them."""
    db = Database(database_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as raised, db.read() as conn:
            conn.execute(sa.text(statement))
        assert not is_transient(raised.value)
    finally:
        db.dispose()


def test_a_terminated_backend_and_a_refused_connection_are_transient() -> None:
    with scratch_database() as url, psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        db = Database(url)
        name = url.rsplit("/", 1)[1]
        try:
            with pytest.raises(sa.exc.DBAPIError) as terminated, db.read() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
            assert is_transient(terminated.value)
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            db.dispose()
            with pytest.raises(sa.exc.DBAPIError) as refused, db.read() as conn:
                conn.execute(sa.text("SELECT 1"))
            assert is_transient(refused.value)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            db.dispose()
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    assert is_transient(sa.exc.OperationalError("UPDATE jobs", {}, locked))
