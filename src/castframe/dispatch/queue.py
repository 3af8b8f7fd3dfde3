"""Queue operations on the ``jobs`` table. Each function is one short transaction's worth.

Claiming is one ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING``: atomic on SQLite
(one writer at a time) and on PostgreSQL (``FOR UPDATE SKIP LOCKED`` in the sub-select, so
concurrent workers never wait on each other's rows). The pick is fair across accounts: jobs of
the account with the fewest running jobs first, then oldest first, so one account's burst of a
thousand jobs cannot starve another account's single job.

Every finishing write is guarded by ``lease_owner``: a worker that lost its lease (it stalled
past the expiry and another worker took the job) cannot overwrite the job or charge again.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from castframe.dispatch.notify import JOBS_CHANNEL, publish
from castframe.jobs import ledger, states
from castframe.store.tables import jobs
from castframe.webhooks import outbox


def _claimable(table: Any, now: float, max_attempts: int) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(table.c.status == states.QUEUED, table.c.run_after <= now),
        sa.and_(
            table.c.status == states.PROCESSING,
            table.c.lease_expires_at < now,
            table.c.attempts < max_attempts,
        ),
    )


def claim(
    conn: sa.Connection,
    worker_id: str,
    lease_seconds: float,
    max_attempts: int,
    now: float | None = None,
) -> dict[str, Any] | None:
    """Take the next due job (fairly across accounts) with a lease, or None."""
    now = time.time() if now is None else now
    candidate = jobs.alias("candidate")
    running = jobs.alias("running")
    busy = (
        sa.select(sa.func.count())
        .where(
            running.c.account_id == candidate.c.account_id,
            running.c.status == states.PROCESSING,
            running.c.lease_expires_at >= now,
        )
        .scalar_subquery()
    )
    pick = (
        sa.select(candidate.c.id)
        .where(_claimable(candidate, now, max_attempts))
        .order_by(busy, candidate.c.created_at, candidate.c.id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True, of=candidate)
    statement = (
        jobs.update()
        .where(jobs.c.id == pick.scalar_subquery(), _claimable(jobs, now, max_attempts))
        .values(
            status=states.PROCESSING,
            lease_owner=worker_id,
            lease_expires_at=now + lease_seconds,
            attempts=jobs.c.attempts + 1,
            progress=1,
            started_at=sa.func.coalesce(jobs.c.started_at, now),
        )
        .returning(*jobs.c)
    )
    row = conn.execute(statement).mappings().first()
    return dict(row) if row else None


def extend_leases(
    conn: sa.Connection, worker_id: str, job_ids: list[str], lease_seconds: float
) -> None:
    if job_ids:
        conn.execute(
            jobs.update()
            .where(
                jobs.c.id.in_(job_ids),
                jobs.c.lease_owner == worker_id,
                jobs.c.status == states.PROCESSING,
            )
            .values(lease_expires_at=time.time() + lease_seconds)
        )


def report_progress(conn: sa.Connection, job: dict[str, Any], worker_id: str, percent: int) -> bool:
    """Store progress (and enqueue a throttled progress webhook); True if cancel was asked."""
    conn.execute(
        jobs.update()
        .where(jobs.c.id == job["id"], jobs.c.lease_owner == worker_id)
        .values(progress=percent)
    )
    outbox.enqueue(conn, job, "progress", {"progress": percent})
    return cancel_requested(conn, job["id"])


def cancel_requested(conn: sa.Connection, job_id: str) -> bool:
    value = conn.execute(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
    return bool(value)


def _finish(
    conn: sa.Connection, job: dict[str, Any], worker_id: str, values: dict[str, Any]
) -> bool:
    guard = sa.and_(
        jobs.c.id == job["id"], jobs.c.lease_owner == worker_id, jobs.c.status == states.PROCESSING
    )
    result = conn.execute(
        jobs.update().where(guard).values(lease_owner=None, lease_expires_at=None, **values)
    )
    if result.rowcount != 1:
        return False
    job.update(values)
    return True


def complete(
    conn: sa.Connection, job: dict[str, Any], worker_id: str, result: dict[str, Any], delivered: int
) -> bool:
    """COMPLETED + capture of the delivered images + the ``completed`` webhook, atomically."""
    now = time.time()
    if not _finish(
        conn,
        job,
        worker_id,
        {
            "status": states.COMPLETED,
            "progress": 100,
            "result": result,
            "completed_at": now,
            "error_message": None,
        },
    ):
        return False
    requested = int(job["params"]["num_images"])
    charged = ledger.settle(conn, job["account_id"], job["id"], job["price"], requested, delivered)
    conn.execute(
        jobs.update().where(jobs.c.id == job["id"]).values(charged=charged, delivered=delivered)
    )
    job.update(charged=charged, delivered=delivered)
    outbox.enqueue(conn, job, "completed")
    return True


def fail(
    conn: sa.Connection,
    job: dict[str, Any],
    worker_id: str | None,
    code: str,
    message: str,
    status: str = states.FAILED,
) -> bool:
    """FAILED (or CANCELED) + release of the hold + the ``failed`` webhook, atomically."""
    values = {
        "status": status,
        "error_code": code,
        "error_message": message,
        "completed_at": time.time(),
        "charged": 0,
    }
    if worker_id is None:
        guard = sa.and_(jobs.c.id == job["id"], jobs.c.status.in_(states.ACTIVE))
        if (
            conn.execute(
                jobs.update().where(guard).values(lease_owner=None, lease_expires_at=None, **values)
            ).rowcount
            != 1
        ):
            return False
        job.update(values)
    elif not _finish(conn, job, worker_id, values):
        return False
    ledger.settle(conn, job["account_id"], job["id"], job["price"], 1, 0)
    outbox.enqueue(conn, job, "failed")
    return True


def requeue(
    conn: sa.Connection, job: dict[str, Any], worker_id: str, delay: float, reason: str
) -> bool:
    """Back to QUEUED after a retryable failure, due again in ``delay`` seconds."""
    publish(conn, JOBS_CHANNEL)
    return _finish(
        conn,
        job,
        worker_id,
        {
            "status": states.QUEUED,
            "run_after": time.time() + delay,
            "progress": 0,
            "error_message": reason,
        },
    )


def reap_abandoned(conn: sa.Connection, max_attempts: int, now: float | None = None) -> int:
    """Fail jobs whose workers died ``max_attempts`` times (lease expired, no attempts left)."""
    now = time.time() if now is None else now
    rows = (
        conn.execute(
            sa.select(jobs).where(
                jobs.c.status == states.PROCESSING,
                jobs.c.lease_expires_at < now,
                jobs.c.attempts >= max_attempts,
            )
        )
        .mappings()
        .all()
    )
    reaped = 0
    for row in rows:
        job = dict(row)
        if fail(
            conn,
            job,
            None,
            "worker_lost",
            f"the job's worker stopped responding {job['attempts']} times",
        ):
            reaped += 1
    return reaped
