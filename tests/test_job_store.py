"""The middle of the house: frozen job records, the state table behind the SQL guards,
wake-ups sent by the transaction itself, and submissions that leave nothing when refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from castframe.jobs import store as job_store
from castframe.jobs.record import Job
from castframe.store import states
from castframe.store.db import Database
from castframe.store.notify import JOBS_CHANNEL, WEBHOOKS_CHANNEL, publish
from castframe.store.tables import guard, jobs, uploads, webhook_attempts, webhook_deliveries
from tests.conftest import Api, body_for
from tests.support.images import astronaut_png, data_uri


def test_the_state_table() -> None:
    assert {
        "QUEUED": {"PROCESSING", "CANCELLED", "FAILED"},
        "PROCESSING": {"COMPLETED", "FAILED", "CANCELLED", "QUEUED"},
        "COMPLETED": set(),
        "FAILED": set(),
        "CANCELLED": set(),
    } == states.ALLOWED
    assert all(not states.ALLOWED[status] for status in states.TERMINAL)


@pytest.mark.parametrize("transition", states.TRANSITIONS, ids=lambda t: t.name)
def test_guards_are_generated_from_the_table(transition: states.Transition) -> None:
    sql = str(guard(jobs.c.status, transition).compile(compile_kwargs={"literal_binds": True}))
    assert {status for status in states.ALL if f"'{status}'" in sql} == transition.sources


def test_the_stores_writes_carry_their_transitions_guard() -> None:
    claim = str(job_store._TAKE)
    assert "jobs.status = 'QUEUED'" in claim
    for transition in (states.FAIL, states.STOP_CANCELLED, states.REQUEUE):
        assert "jobs.status = 'PROCESSING'" in str(job_store._finish_statement(transition))
    assert "jobs.status = 'PROCESSING'" in str(job_store._complete_statement(2))


def test_finishing_returns_the_new_job_and_leaves_the_old_one_alone(api_no_worker: Api) -> None:
    key = api_no_worker.key(credits=100)
    job_id = api_no_worker.generate(key, body_for("https://example.com/a.png")).json()["jobId"]
    db = api_no_worker.services.db
    with db.write() as conn:
        claimed = job_store.claim(conn, "w", lease_seconds=30)
    assert claimed is not None and claimed.id == job_id
    with db.write() as conn:
        done = job_store.complete(conn, claimed, "w", {"images": []}, 1)
    assert claimed.status == "PROCESSING" and claimed.lease_owner == "w"
    assert done is not None and (done.status, done.lease_owner, done.charged) == (
        "COMPLETED",
        None,
        10,
    )
    with db.read() as conn:
        stored = job_store.find_job(conn, job_id)
    assert stored is not None and stored.status == done.status and stored.charged == 10
    with pytest.raises(AttributeError):
        stored.status = "QUEUED"  # type: ignore[misc]


class Subscriber:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def test_wakeups_fire_once_per_channel_after_commit_and_never_on_rollback(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    jobs_woken, hooks_woken = Subscriber(), Subscriber()
    db.wakeups.subscribe(JOBS_CHANNEL, jobs_woken)
    db.wakeups.subscribe(WEBHOOKS_CHANNEL, hooks_woken)
    with db.write() as conn:
        publish(conn, JOBS_CHANNEL)
        publish(conn, JOBS_CHANNEL)
        assert jobs_woken.calls == 0  # nothing before the commit
    assert (jobs_woken.calls, hooks_woken.calls) == (1, 0)
    with pytest.raises(RuntimeError), db.write() as conn:
        publish(conn, WEBHOOKS_CHANNEL)
        raise RuntimeError("rolled back")
    assert hooks_woken.calls == 0
    with db.write() as conn:  # the pooled connection forgot the rolled-back channel
        conn.execute(sa.text("SELECT 1"))
    assert (jobs_woken.calls, hooks_woken.calls) == (1, 0)
    db.dispose()


def stored_uploads(api: Api) -> tuple[list[Path], int]:
    root = api.services.settings.data_dir / "files" / "uploads"
    with api.services.db.read() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(uploads)).scalar_one()
    return (sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []), rows


@pytest.mark.parametrize("refusal", ["insufficient_credits", "too_many_active_jobs"])
def test_a_refused_submission_stores_no_inline_image(api_no_worker: Api, refusal: str) -> None:
    credits = 0 if refusal == "insufficient_credits" else 100
    key = api_no_worker.key(credits=credits)
    api_no_worker.services.settings.max_active_jobs = 0 if credits else 50
    response = api_no_worker.generate(key, body_for(data_uri(astronaut_png())))
    assert response.json()["code"] == refusal
    assert stored_uploads(api_no_worker) == ([], 0)


def test_a_failed_transaction_takes_its_inline_images_with_it(
    api_no_worker: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = api_no_worker.key()

    def broken(conn: sa.Connection, rows: Any) -> list[Job]:
        raise sa.exc.OperationalError("INSERT", {}, Exception("the disk is full"))

    monkeypatch.setattr(job_store, "insert_jobs", broken)
    response = api_no_worker.generate(key, body_for(data_uri(astronaut_png())))
    assert response.status_code == 503
    assert stored_uploads(api_no_worker) == ([], 0)
    monkeypatch.undo()
    accepted = api_no_worker.generate(key, body_for(data_uri(astronaut_png())))
    assert accepted.status_code == 202
    files, rows = stored_uploads(api_no_worker)
    assert (len(files), rows) == (1, 1)


def test_an_attempt_moves_the_delivery_only_under_the_lease_that_made_it(
    api_no_worker: Api,
) -> None:
    """A sender whose lease ran out (another took the delivery over) logs its attempt but
    leaves the delivery's state and the other sender's lease alone; a record that already
    committed (a retry after a lost acknowledgement) writes nothing: one attempt row per
    attempt made."""
    api = api_no_worker
    if api.services.sender is not None:  # this test plays both senders itself
        api.services.sender.stop()
    key = api.key()
    body = body_for("https://example.com/a.png", top={"webhookUrl": "https://example.com/h"})
    job_id = api.generate(key, body).json()["jobId"]
    attempt = {"attempted_at": 1.0, "status_code": 500, "latency_ms": 1.0, "error": None}
    with api.services.db.write() as conn:
        job = job_store.find_job(conn, job_id)
        assert job is not None
        assert job_store.enqueue_delivery(conn, job, "completed", now=0.0, force=True)
    with api.services.db.write() as conn:
        stalled = job_store.claim_due_delivery(conn, now=time.time())
    with api.services.db.write() as conn:
        taken_over = job_store.claim_due_delivery(
            conn, now=time.time() + job_store.DELIVERY_LEASE + 1
        )
    assert stalled is not None and taken_over is not None
    late = {**attempt, "attempted_at": 2.0}
    with api.services.db.write() as conn:
        assert not job_store.record_attempt(conn, stalled, attempt, "failing", 5.0)
        assert job_store.record_attempt(conn, taken_over, late, "failing", 5.0)
    with api.services.db.write() as conn:  # the same records again: already there
        assert not job_store.record_attempt(conn, taken_over, late, "failing", 5.0)
        assert not job_store.record_attempt(conn, stalled, attempt, "failing", 5.0)
        rows = conn.execute(sa.select(sa.func.count()).select_from(webhook_attempts)).scalar_one()
        attempts = conn.execute(sa.select(webhook_deliveries.c.attempts)).scalar_one()
    assert (rows, attempts) == (2, 1)


def test_upstream_records_are_kept_for_later_attempts_by_the_lease_holder(
    api_no_worker: Api,
) -> None:
    key = api_no_worker.key(credits=100)
    job_id = api_no_worker.generate(key, body_for("https://example.com/a.png")).json()["jobId"]
    db = api_no_worker.services.db
    with db.write() as conn:
        claimed = job_store.claim(conn, "w", lease_seconds=30)
    assert claimed is not None and claimed.id == job_id
    with db.read() as conn:
        assert job_store.upstream_state(conn, job_id) is None
    with db.write() as conn:
        assert job_store.record_upstream(conn, claimed, "w", "bfl", {"phase": "submitting"})
        assert job_store.record_upstream(
            conn, claimed, "w", "bfl", {"phase": "submitted", "id": "t1"}
        )
        assert not job_store.record_upstream(conn, claimed, "other", "bfl", {"id": "t2"})
    with db.read() as conn:
        assert job_store.upstream_state(conn, job_id) == {"phase": "submitted", "id": "t1"}
