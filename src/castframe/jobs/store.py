"""Queue operations on the ``jobs`` table. Each function is one short transaction's worth.

Claiming is one ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING``: atomic on SQLite
(one writer at a time) and on PostgreSQL (``FOR UPDATE SKIP LOCKED`` in the sub-select, so
concurrent workers never wait on each other's rows). The pick is fair across accounts: the
lowest due ``queue_key``, which admission spaces out per account (jobs/admission.py), so one
account's burst of a thousand jobs cannot starve another account's single job.

Every finishing write is guarded by ``lease_owner``: a worker that lost its lease (it stalled
past the expiry, and ``requeue_expired`` gave the job back to the queue) cannot overwrite the
job or charge again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from castframe.dispatch.notify import JOBS_CHANNEL, publish
from castframe.jobs import ledger, states
from castframe.store.tables import jobs, status_is
from castframe.webhooks import outbox


def _build_claim(postgres: bool) -> sa.Update:
    """The claim statement, built once per dialect; every value is a parameter.

    The lowest due keys of the fair queue (jobs/admission.py) through ``ix_jobs_queued`` (a
    partial index of the queued jobs: see store/tables.py): a claim reads a handful of index
    entries however deep the backlog is and however many jobs ran before. On PostgreSQL the pick
    is a materialised CTE, run exactly once: as an ``IN (subquery)`` the planner may make it
    the inner side of a semi-join and rerun its ``LIMIT ... FOR UPDATE SKIP LOCKED`` per outer
    row, which picks wrong rows.
    """
    now = sa.bindparam("now", type_=sa.Float)
    candidate = jobs.alias("candidate")
    pick = (
        sa.select(candidate.c.id)
        .where(status_is(candidate.c.status, states.QUEUED), candidate.c.run_after <= now)
        .order_by(candidate.c.queue_key)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    if postgres:
        picked = pick.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        chosen = jobs.c.id == picked.c.id
    else:
        chosen = jobs.c.id.in_(pick.scalar_subquery())
    return (
        jobs.update()
        .where(chosen, jobs.c.status == states.QUEUED)
        .values(
            status=states.PROCESSING,
            lease_owner=sa.bindparam("worker_id", type_=sa.String),
            lease_expires_at=sa.bindparam("lease_until", type_=sa.Float),
            attempts=jobs.c.attempts + 1,
            progress=1,
            started_at=sa.func.coalesce(jobs.c.started_at, now),
        )
        .returning(*jobs.c)
    )


_CLAIM = {"postgresql": _build_claim(postgres=True), "sqlite": _build_claim(postgres=False)}


def claim(
    conn: sa.Connection,
    worker_id: str,
    lease_seconds: float,
    now: float | None = None,
) -> dict[str, Any] | None:
    """Take the next due job (fairly across accounts) with a lease, or None."""
    claimed = claim_many(conn, worker_id, lease_seconds, 1, now)
    return claimed[0] if claimed else None


def claim_many(
    conn: sa.Connection,
    worker_id: str,
    lease_seconds: float,
    limit: int,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Take up to ``limit`` due jobs, in fair-queue order, with a lease: one statement.

    Jobs whose worker died come back through ``requeue_expired``.
    """
    now = time.time() if now is None else now
    statement = _CLAIM["postgresql" if conn.dialect.name == "postgresql" else "sqlite"]
    rows = (
        conn.execute(
            statement,
            {
                "now": now,
                "worker_id": worker_id,
                "lease_until": now + lease_seconds,
                "limit": max(1, limit),
            },
        )
        .mappings()
        .all()
    )
    return sorted((dict(row) for row in rows), key=lambda job: float(job["queue_key"]))


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


_CANCEL_REQUESTED = sa.select(jobs.c.cancel_requested).where(jobs.c.id == sa.bindparam("job_id"))


def cancel_requested(conn: sa.Connection, job_id: str) -> bool:
    return bool(conn.execute(_CANCEL_REQUESTED, {"job_id": job_id}).scalar())


# The lease owner's finishing write; the SET clause comes from the parameters' keys, so the
# compiled form is cached per kind of finish (fail, requeue).
_FINISH = jobs.update().where(
    jobs.c.id == sa.bindparam("job_id"),
    jobs.c.lease_owner == sa.bindparam("owner"),
    jobs.c.status == states.PROCESSING,
)


def _finish(
    conn: sa.Connection,
    job: dict[str, Any],
    worker_id: str,
    values: dict[str, Any],
) -> bool:
    result = conn.execute(
        _FINISH,
        {"job_id": job["id"], "owner": worker_id, "lease_owner": None, "lease_expires_at": None}
        | values,
    )
    if result.rowcount != 1:
        return False
    job.update(values)
    return True


def complete(
    conn: sa.Connection, job: dict[str, Any], worker_id: str, result: dict[str, Any], delivered: int
) -> bool:
    """COMPLETED + capture of the delivered images + the ``completed`` webhook, atomically.

    False (and nothing written) if the lease was lost or a cancellation was asked for; the
    caller tells the two apart with ``cancel_requested``.
    """
    return complete_many(conn, worker_id, [(job, result, delivered)])[0]


_PER_JOB = {"result": jobs.c.result, "charged": jobs.c.charged, "delivered": jobs.c.delivered}
_COMPLETED = {
    "status": states.COMPLETED,
    "progress": 100,
    "error_message": None,
    "lease_owner": None,
    "lease_expires_at": None,
}
"""What completing sets on every job, besides its completion time and ``_PER_JOB`` values."""


@functools.cache
def _complete_statement(size: int) -> sa.Update:
    """Complete ``size`` jobs in one UPDATE: their own values chosen by ``CASE id``.

    Built once per batch size with named parameters (``id_0``, ``result_0``, ...), like the
    other statements here: building the expression for every batch cost more than running it.
    """
    ids = [sa.bindparam(f"id_{index}", type_=jobs.c.id.type) for index in range(size)]
    return (
        jobs.update()
        .where(
            jobs.c.id.in_(ids),
            jobs.c.lease_owner == sa.bindparam("owner", type_=jobs.c.lease_owner.type),
            jobs.c.status == states.PROCESSING,
            jobs.c.cancel_requested == sa.false(),
        )
        .values(
            **_COMPLETED,
            completed_at=sa.bindparam("now", type_=jobs.c.completed_at.type),
            **{
                name: sa.case(
                    *(
                        (
                            jobs.c.id == ids[index],
                            sa.bindparam(f"{name}_{index}", type_=column.type),
                        )
                        for index in range(size)
                    )
                )
                for name, column in _PER_JOB.items()
            },
        )
        .returning(jobs.c.id)
    )


def _requested(job: dict[str, Any]) -> int:
    return int(job["params"]["num_images"])


def complete_many(
    conn: sa.Connection,
    worker_id: str,
    finished: Sequence[tuple[dict[str, Any], dict[str, Any], int]],
) -> list[bool]:
    """``complete`` for several (job, result, delivered) in one transaction; one bool each.

    The job rows move in one statement (per-job values by ``CASE id``, the lease and
    cancellation guards as in ``_finish``, ``RETURNING`` the ids that moved), so a batch costs
    the same few round trips whatever its size. The accounts' rows come last
    (``ledger.settle_many``: one UPDATE per account, in id order), so the account locks, which
    submissions also need, are held only until the commit that follows, and concurrent
    batches cannot deadlock (PostgreSQL locks the job rows in the order it finds them, but
    each is a different worker's own leased job).
    """
    if not finished:
        return []
    now = time.time()
    values: dict[str, dict[str, Any]] = {}
    for job, result, delivered in finished:
        charged = ledger.split_charge(int(job["price"]), _requested(job), delivered)[0]
        values[str(job["id"])] = {"result": result, "charged": charged, "delivered": delivered}
    ids = sorted(values)
    parameters: dict[str, Any] = {"owner": worker_id, "now": now}
    for index, job_id in enumerate(ids):
        parameters[f"id_{index}"] = job_id
        for name in _PER_JOB:
            parameters[f"{name}_{index}"] = values[job_id][name]
    moved = {str(row[0]) for row in conn.execute(_complete_statement(len(ids)), parameters)}
    outcomes = []
    closings: list[ledger.Closing] = []
    for job, _result, delivered in finished:
        done = str(job["id"]) in moved
        outcomes.append(done)
        if not done:
            continue
        job.update(_COMPLETED, completed_at=now, **values[str(job["id"])])
        outbox.enqueue(conn, job, "completed")
        closings.append(
            ledger.Closing(
                job["account_id"], job["id"], int(job["price"]), _requested(job), delivered
            )
        )
    ledger.settle_many(conn, closings)
    return outcomes


def fail(
    conn: sa.Connection,
    job: dict[str, Any],
    worker_id: str | None,
    code: str,
    message: str,
    status: str = states.FAILED,
) -> bool:
    """FAILED (or CANCELLED) + release of the hold + the ``failed`` webhook, atomically."""
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
    outbox.enqueue(conn, job, "failed")
    ledger.settle(conn, job["account_id"], job["id"], int(job["price"]), 1, 0)
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


def requeue_expired(conn: sa.Connection, max_attempts: int, now: float | None = None) -> int:
    """Put jobs whose lease expired (their worker died or stalled) back in the queue.

    They keep their queue key, so they are claimed before younger work. Jobs out of attempts
    are left to ``reap_abandoned``. The stalled worker, if it wakes up, no longer owns the
    lease and cannot finish or charge.
    """
    now = time.time() if now is None else now
    requeued = conn.execute(
        jobs.update()
        .where(
            status_is(jobs.c.status, states.PROCESSING),
            jobs.c.lease_expires_at < now,
            jobs.c.attempts < max_attempts,
        )
        .values(
            status=states.QUEUED,
            lease_owner=None,
            lease_expires_at=None,
            run_after=now,
            progress=0,
            error_message="its worker stopped responding; retrying",
        )
    ).rowcount
    if requeued:
        publish(conn, JOBS_CHANNEL)
    return int(requeued or 0)


def reap_abandoned(conn: sa.Connection, max_attempts: int, now: float | None = None) -> int:
    """Fail jobs whose workers died ``max_attempts`` times (lease expired, no attempts left)."""
    now = time.time() if now is None else now
    rows = (
        conn.execute(
            sa.select(jobs).where(
                status_is(jobs.c.status, states.PROCESSING),
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
