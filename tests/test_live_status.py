"""Live status (jobs/watch.py): event streams and ``Prefer: wait`` fed by one shared reader.

Over a real HTTP server (uvicorn in a thread, as users would have one) on the real databases.
Job changes are driven by the job store's own functions from the test's thread, so what the
server reads is counted apart from what the test writes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from castframe.app import create_app
from castframe.jobs import accounts
from castframe.jobs import store as job_store
from castframe.jobs import watch as watch_module
from castframe.jobs.record import Job
from castframe.jobs.watch import JobWatcher
from castframe.services import Services
from castframe.store.db import Database
from castframe.store.migrate import upgrade
from castframe.store.notify import (
    ANY,
    JOB_CHANGES_CHANNEL,
    NOTIFY_PAYLOAD_LIMIT,
    Wakeups,
    payloads,
    publish_ids,
)
from tests.conftest import body_for, make_settings
from tests.support.images import astronaut_png, data_uri
from tests.support.polling import wait_until

WORKER = "w-test"
EVENT_DEADLINE = 25.0
"""How long a test waits for an event: far below the 60 s re-read the notice tests set."""
RESULT = {"images": [{"key": "outputs/2026-01-01/x-0-1.png", "width": 1024, "height": 1024}]}


class Server:
    """The app behind uvicorn on a loopback port, with its Services for the test to inspect."""

    def __init__(self, services: Services, base: str) -> None:
        self.services = services
        self.base = base

    def key(self, account: str = "acme") -> str:
        with self.services.db.write() as conn:
            row, _ = accounts.ensure_account(conn, account, 100_000)
            raw, _ = accounts.create_key(conn, row["id"], "live")
        return raw

    def submit(self, key: str, **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.base}/v2/images/generate",
            json=body_for(data_uri(astronaut_png())),
            headers={"X-API-Key": key, **headers},
            timeout=60,
        )


@contextmanager
def serve(tmp_path: Path, database_url: str, run_worker: bool, **settings: Any) -> Iterator[Server]:
    services = Services.build(make_settings(tmp_path / "data", database_url, **settings))
    app = create_app(services.settings, services=services, run_worker=run_worker)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30)
        yield Server(services, f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class Listener:
    """One open event stream, read from the test's thread; leaving ``stack`` hangs up (so
    does dropping the object: its line iterator's close closes the connection)."""

    def __init__(self, stack: ExitStack, client: httpx.Client, base: str, job_id: str, key: str):
        self.response = stack.enter_context(
            client.stream("GET", f"{base}/v2/jobs/{job_id}/events", headers={"X-API-Key": key})
        )
        self._lines = self.response.iter_lines()
        self.jobs: list[dict[str, Any]] = []
        self.ended = False

    def next_event(self) -> tuple[str, str]:
        """The next (event, data), or ("comment", line) for a keep-alive."""
        kind, data = "", ""
        for line in self._lines:
            if line.startswith(":"):
                return "comment", line
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and kind:
                if kind == "job":
                    self.jobs.append(json.loads(data))
                self.ended = self.ended or kind == "end"
                return kind, data
        raise AssertionError("the stream closed before an event")

    def until(self, status: str, progress: int | None = None) -> dict[str, Any]:
        """Read events until the job is in ``status`` (with ``progress``): within
        ``EVENT_DEADLINE`` seconds, checked at each event or keep-alive (every 15 s)."""
        deadline = time.monotonic() + EVENT_DEADLINE
        while True:
            seen = [(job["status"], job["progress"]) for job in self.jobs]
            assert time.monotonic() < deadline, f"no {status} {progress} event after {seen}"
            kind, data = self.next_event()
            if kind == "job":
                job: dict[str, Any] = json.loads(data)
                if job["status"] == status and progress in (None, job["progress"]):
                    return job


def open_client(stack: ExitStack, connections: int = 100) -> httpx.Client:
    return stack.enter_context(
        httpx.Client(
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=0),
        )
    )


def queued_job(server: Server, key: str) -> str:
    response = server.submit(key)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobId"]
    return job_id


def claim(db: Database) -> Job:
    with db.write() as conn:
        claimed = job_store.claim_many(conn, WORKER, 30.0, 1)
    assert len(claimed) == 1
    return claimed[0]


def progress(db: Database, job: Job, percent: int) -> None:
    with db.write() as conn:
        job_store.report_progress(conn, job, WORKER, percent)


def complete(db: Database, job: Job) -> None:
    with db.write() as conn:
        assert job_store.complete_many(conn, WORKER, [(job, RESULT, 1)])[0] is not None


@contextmanager
def count_job_reads(db: Database) -> Iterator[list[str]]:
    """SELECTs on ``jobs`` made by any thread but this one (the server's, not the test's)."""
    reads: list[str] = []
    here = threading.get_ident()

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        text = statement.lstrip().upper()
        if threading.get_ident() != here and text.startswith("SELECT") and "FROM JOBS" in text:
            reads.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield reads
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)


# -- one reader, however many listeners ---------------------------------------------------


def test_many_listeners_cost_one_read_per_change(tmp_path: Path, database_url: str) -> None:
    """20 streams on one job: each change is read once for all of them (the old streams read
    every 0.25 s each), and every stream sees every change, in order, then ``end``."""
    listeners = 20
    with serve(tmp_path, database_url, run_worker=False, live_reread_seconds=60) as server:
        key = server.key()
        job_id = queued_job(server, key)
        db = server.services.db
        with ExitStack() as stack:
            client = open_client(stack)
            streams = [Listener(stack, client, server.base, job_id, key) for _ in range(listeners)]
            for stream in streams:
                assert stream.until("QUEUED")["id"] == job_id
            watcher = server.services.watcher
            assert watcher.listeners == listeners
            wait_until(lambda: not watcher._dirty)  # the newcomers' first read is done
            with count_job_reads(db) as reads:
                job = claim(db)
                for stream in streams:
                    stream.until("PROCESSING", 1)
                for percent in (30, 60):
                    progress(db, job, percent)
                    for stream in streams:
                        stream.until("PROCESSING", percent)
                complete(db, job)
                for stream in streams:
                    assert stream.until("COMPLETED")["result"]["images"]
                    assert stream.next_event() == ("end", "{}")
            assert watcher.rereads == 0  # all of it came by notices
            changes = 4
            # One read per change (a second one at most, if a notice lands mid-read): never
            # one per listener.
            assert 1 <= len(reads) <= 2 * changes, reads
            for stream in streams:
                assert [(j["status"], j["progress"]) for j in stream.jobs] == [
                    ("QUEUED", 0),
                    ("PROCESSING", 1),
                    ("PROCESSING", 30),
                    ("PROCESSING", 60),
                    ("COMPLETED", 100),
                ]
        wait_until(lambda: server.services.watcher.listeners == 0)


def test_a_change_from_another_process_arrives_by_notify(tmp_path: Path, postgres_url: str) -> None:
    """A change committed through another connection pool (another process's Services, its
    own wake-ups) reaches the stream by NOTIFY with the job's id, not by the re-read."""
    from tests.conftest import truncate_all

    truncate_all(postgres_url)
    with serve(tmp_path, postgres_url, run_worker=False, live_reread_seconds=60) as server:
        heard: list[str] = []
        watcher = server.services.watcher
        original = watcher.notice_payload

        def recording(payload: str) -> None:
            heard.append(payload)
            original(payload)

        watcher.notice_payload = recording  # type: ignore[method-assign]
        key = server.key()
        job_id = queued_job(server, key)
        elsewhere = Services.build(make_settings(tmp_path / "other", postgres_url), migrate=False)
        try:
            with ExitStack() as stack:
                stream = Listener(stack, open_client(stack), server.base, job_id, key)
                stream.until("QUEUED")
                wait_until(lambda: not watcher._dirty)
                job = claim(elsewhere.db)
                stream.until("PROCESSING", 1)
                progress(elsewhere.db, job, 50)
                stream.until("PROCESSING", 50)
                complete(elsewhere.db, job)
                stream.until("COMPLETED")
                assert stream.next_event() == ("end", "{}")
        finally:
            elsewhere.stop(grace=1)
        assert any(job_id in payload.split(",") for payload in heard), heard
        assert watcher.rereads == 0


def test_the_slow_reread_catches_a_change_nobody_announced(
    tmp_path: Path, database_url: str
) -> None:
    """A write through a separate Database object announces nothing to the server (on SQLite
    nothing could): the re-read of all watched jobs still brings it to the stream."""
    with serve(tmp_path, database_url, run_worker=False, live_reread_seconds=0.2) as server:
        key = server.key()
        job_id = queued_job(server, key)
        silent = Database(database_url)
        try:
            with ExitStack() as stack:
                stream = Listener(stack, open_client(stack), server.base, job_id, key)
                stream.until("QUEUED")
                job = claim(silent)
                assert stream.until("PROCESSING", 1)["id"] == job_id
                complete(silent, job)
                stream.until("COMPLETED")
        finally:
            silent.dispose()


def test_a_stream_of_a_finished_job_takes_no_slot(tmp_path: Path, sqlite_url: str) -> None:
    with serve(tmp_path, sqlite_url, run_worker=False, live_listeners_per_key=1) as server:
        key = server.key()
        job_id = queued_job(server, key)
        complete(server.services.db, claim(server.services.db))
        with ExitStack() as stack:
            client = open_client(stack)
            for _ in range(3):  # beyond the key's bound of 1: none of them holds a slot
                stream = Listener(stack, client, server.base, job_id, key)
                assert stream.response.status_code == 200
                stream.until("COMPLETED")
                assert stream.next_event() == ("end", "{}")
            assert server.services.watcher.listeners == 0


# -- Prefer: wait ---------------------------------------------------------------------------


def test_prefer_wait_returns_the_finished_job(tmp_path: Path, database_url: str) -> None:
    with serve(tmp_path, database_url, run_worker=True) as server:
        key = server.key()
        response = server.submit(key, Prefer="wait=30")
        assert response.status_code == 200, response.text
        assert response.headers["preference-applied"] == "wait=30"
        job = response.json()
        assert job["status"] == "COMPLETED" and job["result"]["images"]
        assert response.headers["location"] == f"/v2/jobs/{job['id']}"
        assert server.services.watcher.listeners == 0


def test_prefer_wait_times_out_with_the_job_as_it_is(tmp_path: Path, sqlite_url: str) -> None:
    with serve(tmp_path, sqlite_url, run_worker=False) as server:
        response = server.submit(server.key(), Prefer="wait=1")
        assert response.status_code == 202
        assert response.json()["status"] == "QUEUED"
        assert response.headers["preference-applied"] == "wait=1"
        assert server.services.watcher.listeners == 0


# -- bounds and disconnects -----------------------------------------------------------------


def test_bounds_answer_429_and_503_and_prefer_wait_falls_back_to_202(
    tmp_path: Path, sqlite_url: str
) -> None:
    with serve(
        tmp_path, sqlite_url, run_worker=False, live_listeners_per_key=2, live_listeners=3
    ) as server:
        first, second, third = server.key("a"), server.key("b"), server.key("c")
        job_a, job_b, job_c = (queued_job(server, key) for key in (first, second, third))
        with ExitStack() as stack:
            client = open_client(stack)
            held = [Listener(stack, client, server.base, job_a, first) for _ in range(2)]
            for stream in held:
                stream.until("QUEUED")
            over_key = client.get(
                f"{server.base}/v2/jobs/{job_a}/events", headers={"X-API-Key": first}
            )
            assert over_key.status_code == 429
            assert over_key.headers["retry-after"] == str(watch_module.RETRY_AFTER_SECONDS)
            body = over_key.json()
            assert body["code"] == "too_many_listeners" and body["details"] == {}
            assert "2 live-status listeners" in body["error"]

            # Prefer: wait past the key's bound: the job is queued and answered as without it.
            waited = server.submit(first, Prefer="wait=30")
            assert waited.status_code == 202, waited.text
            assert set(waited.json()) == {"jobId", "status"}
            assert "preference-applied" not in waited.headers

            held.append(Listener(stack, client, server.base, job_b, second))
            held[-1].until("QUEUED")
            over_process = client.get(
                f"{server.base}/v2/jobs/{job_c}/events", headers={"X-API-Key": third}
            )
            assert over_process.status_code == 503
            assert over_process.headers["retry-after"] == str(watch_module.RETRY_AFTER_SECONDS)
            assert over_process.json()["code"] == "listeners_exhausted"
            assert server.services.watcher.listeners == 3


def test_a_client_that_hangs_up_frees_its_slot(tmp_path: Path, database_url: str) -> None:
    with serve(tmp_path, database_url, run_worker=False, live_listeners_per_key=1) as server:
        key = server.key()
        job_id = queued_job(server, key)
        watcher = server.services.watcher
        for _ in range(3):  # the one slot, taken and given back three times
            with ExitStack() as stack:
                stream = Listener(stack, open_client(stack), server.base, job_id, key)
                assert stream.response.status_code == 200
                stream.until("QUEUED")
                assert watcher.listeners == 1
            wait_until(lambda: watcher.listeners == 0)
        assert not watcher._watches and not watcher._known


# -- the reader and the wake-ups, directly -----------------------------------------------------


def test_a_failing_read_is_retried_and_the_listener_kept(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing under the reader: listeners wait (their streams send keep-alives)
    and get the change once a read succeeds."""
    with serve(tmp_path, database_url, run_worker=False, live_reread_seconds=60) as server:
        key = server.key()
        job_id = queued_job(server, key)
        real = job_store.find_jobs
        failures = {"left": 3}

        def flaky(conn: sa.Connection, job_ids: list[str]) -> list[Job]:
            if failures["left"]:
                failures["left"] -= 1
                raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))
            return real(conn, job_ids)

        with ExitStack() as stack:
            stream = Listener(stack, open_client(stack), server.base, job_id, key)
            stream.until("QUEUED")
            wait_until(lambda: not server.services.watcher._dirty)
            monkeypatch.setattr(watch_module.job_store, "find_jobs", flaky)
            claim(server.services.db)
            assert stream.until("PROCESSING", 1)["id"] == job_id
            assert failures["left"] == 0


def test_a_job_deleted_while_watched_ends_its_listeners(tmp_path: Path, sqlite_url: str) -> None:
    with serve(tmp_path, sqlite_url, run_worker=False, live_reread_seconds=60) as server:
        key = server.key()
        job_id = queued_job(server, key)
        with ExitStack() as stack:
            stream = Listener(stack, open_client(stack), server.base, job_id, key)
            stream.until("QUEUED")
            with server.services.db.write() as conn:
                conn.execute(sa.text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})
            server.services.watcher.notice([job_id])
            assert stream.next_event() == ("end", "{}")
        wait_until(lambda: server.services.watcher.listeners == 0)


def test_notice_payloads_fit_notify_and_hostile_ones_read_only_watched_jobs(
    sqlite_url: str,
) -> None:
    ids = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(1000)]
    sent = list(payloads(ids))
    assert all(len(payload.encode()) <= NOTIFY_PAYLOAD_LIMIT for payload in sent)
    assert sorted(i for payload in sent for i in payload.split(",")) == sorted(ids)
    assert list(payloads([*ids, ANY])) == [ANY]
    assert list(payloads(["x" * (NOTIFY_PAYLOAD_LIMIT + 1)])) == []

    db = Database(sqlite_url)
    upgrade(db.engine)
    try:
        watcher = JobWatcher(db, lambda job: {"id": job.id}, per_key=5, total=5, reread_seconds=60)
        watcher.notice_payload("junk," * 10_000)  # nobody watches: nothing at all
        assert not watcher._dirty and watcher.reads == 0

        async def watched() -> None:
            watch = watcher.watch("00000000-0000-4000-8000-000000000001", "k")
            watcher.notice_payload("\x00,'; DROP TABLE jobs;--," + "y" * 100_000)
            watcher.notice_payload("a," * (watch_module.MAX_PAYLOAD_IDS + 1))  # too many: ANY
            # The watched job does not exist: its listener hears that it is gone.
            assert await watch.next(30) is None and watch.gone
            watch.close()

        asyncio.run(watched())
        assert watcher.listeners == 0 and watcher.reads >= 1
    finally:
        watcher.stop()
        db.dispose()


def test_ids_are_announced_only_after_a_commit(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    heard: list[frozenset[str]] = []
    db.wakeups.subscribe_ids(JOB_CHANGES_CHANNEL, heard.append)
    woken: list[str] = []
    db.wakeups.subscribe(JOB_CHANGES_CHANNEL, lambda: woken.append("plain"))
    try:
        with pytest.raises(RuntimeError), db.write() as conn:
            publish_ids(conn, JOB_CHANGES_CHANNEL, ["a"])
            raise RuntimeError("rolled back")
        assert heard == [] and woken == []
        with db.write() as conn:
            publish_ids(conn, JOB_CHANGES_CHANNEL, ["b", "c"])
            publish_ids(conn, JOB_CHANGES_CHANNEL, ["c"])
        assert heard == [frozenset({"b", "c"})] and woken == ["plain"]
    finally:
        db.dispose()


def test_a_failing_id_subscriber_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    wakeups = Wakeups()
    heard: list[frozenset[str]] = []

    def broken(_ids: frozenset[str]) -> None:
        raise ValueError("subscriber bug")

    wakeups.subscribe_ids(JOB_CHANGES_CHANNEL, broken)
    wakeups.subscribe_ids(JOB_CHANGES_CHANNEL, heard.append)
    wakeups.fire(set(), {JOB_CHANGES_CHANNEL: {"x"}})
    assert heard == [frozenset({"x"})]
    assert "subscriber of castframe_job_changes failed" in caplog.text
