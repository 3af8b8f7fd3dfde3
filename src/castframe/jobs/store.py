"""The job store: every statement that reads or writes ``jobs``, and the outbox rows written
with them. Routes, the submitter, the worker and the webhook sender call these named functions;
each is one short transaction's worth, run on the caller's connection.

Jobs come back as frozen ``Job`` records (jobs/record.py). A finishing function returns the job
as it now is, or None when its guard refused, and never changes what it was given.

Why the hot statements look as they do, in one place:
- Statements that run for every job are module-level constructs with bound parameters, so
  SQLAlchemy compiles each once (building an expression per call cost more than running it).
- The queue's indexes are partial (store/tables.py): queries name the status as SQL text
  (``status_is``), so a prepared statement's generic plan can still use them.
- Completing a batch moves all its job rows in one UPDATE (per-job values by ``CASE id``),
  then the accounts' rows (``ledger.settle_many``: one UPDATE per account, in id order, held
  only until the commit), so a batch costs the same few round trips whatever its size and
  concurrent batches cannot deadlock.

Claiming reads a window of the lowest due keys (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
so concurrent workers never wait on each other's rows; under SQLite's one writer at a time),
picks from it by the worker's fair share per account (jobs/fair_share.py) and leases the
picked jobs in one ``UPDATE ... RETURNING``. The keys are fair across accounts already:
admission spaces out each account's jobs (jobs/admission.py), so one account's burst of a
thousand jobs cannot starve another account's single job; the share keeps a slow account's
jobs from filling the worker's lanes ahead of another's. A worker that serves only some
models (``castframe worker --models``) names them, and its window reads
``ix_jobs_queued_model`` instead.

Every finishing write is guarded by ``lease_owner``: a worker that lost its lease (it stalled
past the expiry, and ``requeue_expired`` gave the job back to the queue) cannot overwrite the
job or charge again.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from castframe.errors import ApiError, field_error
from castframe.jobs import ledger
from castframe.jobs.fair_share import Candidate, fair_pick, window_size
from castframe.jobs.record import Job
from castframe.store import states
from castframe.store.db import insert_rows
from castframe.store.notify import (
    ANY,
    JOB_CHANGES_CHANNEL,
    JOBS_CHANNEL,
    WEBHOOKS_CHANNEL,
    publish,
    publish_ids,
)
from castframe.store.tables import (
    guard,
    job_upstream,
    jobs,
    status_is,
    webhook_attempts,
    webhook_deliveries,
)


def _build_window(postgres: bool, models: int = 0) -> sa.Select[Any]:
    """The claim's window, built once per dialect (and per number of models named); every
    value is a parameter.

    The lowest due keys of the fair queue (jobs/admission.py) through ``ix_jobs_queued`` (a
    partial index of the queued jobs: see store/tables.py): a claim reads a handful of index
    entries however deep the backlog is and however many jobs ran before. On PostgreSQL the
    window is locked ``FOR UPDATE SKIP LOCKED``, so concurrent workers never wait on each
    other's rows and never read the same window; the rows it does not take are free again
    at the commit (``_claim_rows`` wakes the others then).

    With ``models`` (a worker that serves only some models, or a lane's preference for the
    models it has loaded) the window is limited to ``model_0`` .. ``model_<n-1>``, read
    through ``ix_jobs_queued_model`` (model, queue_key): one model's head is an index range,
    several models' heads are merged by key. A worker that serves every model never names any
    and runs the statement without the condition.
    """
    conditions = [
        status_is(jobs.c.status, states.QUEUED),
        jobs.c.run_after <= sa.bindparam("now", type_=sa.Float),
    ]
    names = [sa.bindparam(f"model_{index}", type_=sa.String) for index in range(models)]
    if models == 1:
        conditions.append(jobs.c.model == names[0])
    elif models > 1:
        conditions.append(jobs.c.model.in_(names))
    window = (
        sa.select(jobs.c.id, jobs.c.account_id, jobs.c.queue_key)
        .where(*conditions)
        .order_by(jobs.c.queue_key)
        .limit(sa.bindparam("window", type_=sa.Integer))
    )
    return window.with_for_update(skip_locked=True) if postgres else window


@functools.cache
def _window_of(dialect: str, models: int) -> sa.Select[Any]:
    """The window limited to ``models`` named models (0: every model), once per dialect and
    count."""
    return _build_window(postgres=dialect == "postgresql", models=models)


_TAKE = (
    jobs.update()
    .where(
        jobs.c.id.in_(sa.bindparam("ids", expanding=True)),
        guard(jobs.c.status, states.CLAIM),
    )
    .values(
        status=states.CLAIM.target,
        lease_owner=sa.bindparam("worker_id", type_=sa.String),
        lease_expires_at=sa.bindparam("lease_until", type_=sa.Float),
        attempts=jobs.c.attempts + 1,
        progress=1,
        started_at=sa.func.coalesce(jobs.c.started_at, sa.bindparam("now", type_=sa.Float)),
    )
    .returning(*jobs.c)
)
"""Lease the jobs the fair share picked from the window (still queued: the guard)."""


def claim(
    conn: sa.Connection,
    worker_id: str,
    lease_seconds: float,
    now: float | None = None,
    models: Sequence[str] | None = None,
) -> Job | None:
    """Take the next due job (fairly across accounts) with a lease, or None."""
    claimed = claim_many(conn, worker_id, lease_seconds, 1, now, models)
    return claimed[0] if claimed else None


def claim_many(
    conn: sa.Connection,
    worker_id: str,
    lease_seconds: float,
    limit: int,
    now: float | None = None,
    models: Sequence[str] | None = None,
    prefer: Sequence[str] = (),
    held: Mapping[str, int] | None = None,
) -> list[Job]:
    """Take up to ``limit`` due jobs with a lease, in the order they should run.

    Which jobs, and their order, is the fair share (jobs/fair_share.py): the lowest due keys,
    with turns per account counted from ``held``, the jobs the worker already holds per
    account (none: plain fair-queue order).
    ``models``: only jobs of these models (None: every model).
    ``prefer``: first the due jobs of these models (those a lane has loaded: see
    dispatch/affinity.py), then, if that left room, the rest: two claims in the caller's
    transaction (the second cannot take the first's jobs: they are no longer queued, and
    its turns count them). Jobs whose worker died come back through ``requeue_expired``.
    """
    now = time.time() if now is None else now
    limit = max(1, limit)
    holding = Counter(held or {})
    claimed: list[Job] = []
    if models is not None:
        prefer = [model for model in prefer if model in models]
    if prefer:
        claimed = _claim_rows(
            conn, worker_id, lease_seconds, limit, now, sorted(set(prefer)), holding
        )
        holding.update(job.account_id for job in claimed)
    if len(claimed) < limit:
        served = None if models is None else sorted(set(models))
        claimed += _claim_rows(
            conn, worker_id, lease_seconds, limit - len(claimed), now, served, holding
        )
    changed(conn, *(job.id for job in claimed))
    return claimed


def _claim_rows(
    conn: sa.Connection,
    worker_id: str,
    lease_seconds: float,
    limit: int,
    now: float,
    models: Sequence[str] | None,
    held: Mapping[str, int],
) -> list[Job]:
    """One claim: read the window (every model when ``models`` is None, else only the named
    ones), pick from it by the fair share and lease the picked jobs, in the picked order."""
    if models is not None and not models:
        return []
    dialect = "postgresql" if conn.dialect.name == "postgresql" else "sqlite"
    named = len(models) if models is not None else 0
    parameters: dict[str, Any] = {"now": now, "window": window_size(limit)}
    parameters.update({f"model_{index}": model for index, model in enumerate(models or ())})
    window = [
        Candidate(row.id, row.account_id, row.queue_key)
        for row in conn.execute(_window_of(dialect, named), parameters)
    ]
    if not window:
        return []
    picked = fair_pick(window, held, limit)
    if dialect == "postgresql" and len(picked) < len(window) < parameters["window"]:
        # The whole due queue was in this window, locked until the commit: a concurrent
        # claim skipped it and found nothing. Wake the workers to look again after it.
        publish(conn, JOBS_CHANNEL)
    taken = {
        row["id"]: Job.from_row(row)
        for row in conn.execute(
            _TAKE,
            {
                "ids": picked,
                "now": now,
                "worker_id": worker_id,
                "lease_until": now + lease_seconds,
            },
        ).mappings()
    }
    return [taken[job_id] for job_id in picked if job_id in taken]


def changed(conn: sa.Connection, *job_ids: str) -> None:
    """Tell live status (jobs/watch.py) at commit that these jobs' status or progress moved:
    ids collected by the transaction, no statement (store/notify.py: publish_ids)."""
    if job_ids:
        publish_ids(conn, JOB_CHANGES_CHANNEL, job_ids)


def extend_leases(
    conn: sa.Connection, worker_id: str, job_ids: list[str], lease_seconds: float
) -> None:
    if job_ids:
        conn.execute(
            jobs.update()
            .where(
                jobs.c.id.in_(job_ids),
                jobs.c.lease_owner == worker_id,
                status_is(jobs.c.status, states.PROCESSING),
            )
            .values(lease_expires_at=time.time() + lease_seconds)
        )


def report_progress(conn: sa.Connection, job: Job, worker_id: str, percent: int) -> bool:
    """Store progress (and enqueue a throttled progress webhook); True if cancel was asked."""
    conn.execute(
        jobs.update()
        .where(jobs.c.id == job.id, jobs.c.lease_owner == worker_id)
        .values(progress=percent)
    )
    changed(conn, job.id)
    enqueue_delivery(conn, job, "progress", {"progress": percent})
    return cancel_requested(conn, job.id)


_CANCEL_REQUESTED = sa.select(jobs.c.cancel_requested).where(jobs.c.id == sa.bindparam("job_id"))


def cancel_requested(conn: sa.Connection, job_id: str) -> bool:
    return bool(conn.execute(_CANCEL_REQUESTED, {"job_id": job_id}).scalar())


_RELEASED = {"lease_owner": None, "lease_expires_at": None}


@functools.cache
def _finish_statement(transition: states.Transition) -> sa.Update:
    """The lease owner's finishing write for ``transition``; the SET clause comes from the
    parameters' keys, so its compiled form is cached per kind of finish too."""
    return jobs.update().where(
        jobs.c.id == sa.bindparam("job_id"),
        jobs.c.lease_owner == sa.bindparam("owner"),
        guard(jobs.c.status, transition),
    )


def _finish(
    conn: sa.Connection,
    job: Job,
    worker_id: str,
    transition: states.Transition,
    values: dict[str, Any],
) -> Job | None:
    values = {"status": transition.target, **_RELEASED, **values}
    result = conn.execute(
        _finish_statement(transition), {"job_id": job.id, "owner": worker_id, **values}
    )
    if result.rowcount != 1:
        return None
    changed(conn, job.id)
    return job.replace(**values)


_PER_JOB = {"result": jobs.c.result, "charged": jobs.c.charged, "delivered": jobs.c.delivered}
_COMPLETED = {
    "status": states.COMPLETE.target,
    "progress": 100,
    "error_message": None,
    **_RELEASED,
}
"""What completing sets on every job, besides its completion time and ``_PER_JOB`` values."""


@functools.cache
def _complete_statement(size: int) -> sa.Update:
    """Complete ``size`` jobs in one UPDATE: their own values chosen by ``CASE id``.

    Built once per batch size with named parameters (``id_0``, ``result_0``, ...), like the
    other statements here.
    """
    ids = [sa.bindparam(f"id_{index}", type_=jobs.c.id.type) for index in range(size)]
    return (
        jobs.update()
        .where(
            jobs.c.id.in_(ids),
            jobs.c.lease_owner == sa.bindparam("owner", type_=jobs.c.lease_owner.type),
            guard(jobs.c.status, states.COMPLETE),
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


def complete(
    conn: sa.Connection, job: Job, worker_id: str, result: dict[str, Any], delivered: int
) -> Job | None:
    """COMPLETED + capture of the delivered images + the ``completed`` webhook, atomically.

    None (and nothing written) if the lease was lost or a cancellation was asked for; the
    caller tells the two apart with ``cancel_requested``.
    """
    return complete_many(conn, worker_id, [(job, result, delivered)])[0]


def complete_many(
    conn: sa.Connection,
    worker_id: str,
    finished: Sequence[tuple[Job, dict[str, Any], int]],
) -> list[Job | None]:
    """``complete`` for several (job, result, delivered) in one transaction: each job as
    completed, or None where the guard refused (see the module's notes on the statements)."""
    if not finished:
        return []
    now = time.time()
    values: dict[str, dict[str, Any]] = {}
    for job, result, delivered in finished:
        charged = ledger.split_charge(job.price, job.requested, delivered)[0]
        values[job.id] = {"result": result, "charged": charged, "delivered": delivered}
    ids = sorted(values)
    parameters: dict[str, Any] = {"owner": worker_id, "now": now}
    for index, job_id in enumerate(ids):
        parameters[f"id_{index}"] = job_id
        for name in _PER_JOB:
            parameters[f"{name}_{index}"] = values[job_id][name]
    moved = {str(row[0]) for row in conn.execute(_complete_statement(len(ids)), parameters)}
    changed(conn, *moved)
    outcomes: list[Job | None] = []
    closings: list[ledger.Closing] = []
    for job, _result, delivered in finished:
        if job.id not in moved:
            outcomes.append(None)
            continue
        done = job.replace(**_COMPLETED, completed_at=now, **values[job.id])
        outcomes.append(done)
        enqueue_delivery(conn, done, "completed")
        closings.append(ledger.Closing(job.account_id, job.id, job.price, job.requested, delivered))
    ledger.settle_many(conn, closings)
    return outcomes


_UNLEASED = (states.GIVE_UP, states.CANCEL_QUEUED)
"""The failing transitions made without a lease: by whoever holds the job."""


def fail(
    conn: sa.Connection,
    job: Job,
    worker_id: str | None,
    code: str,
    message: str,
    transition: states.Transition = states.FAIL,
) -> Job | None:
    """FAILED (or CANCELLED) + release of the hold + the ``failed`` webhook, atomically.

    With a ``worker_id`` only that worker's lease may finish the job (``FAIL``,
    ``STOP_CANCELLED``); without one, whoever holds it (``GIVE_UP``, ``CANCEL_QUEUED``).
    None if the guard refused.
    """
    assert (worker_id is None) == (transition in _UNLEASED), transition
    assert transition.target in (states.FAILED, states.CANCELLED), transition
    values = {
        "error_code": code,
        "error_message": message,
        "completed_at": time.time(),
        "charged": 0,
    }
    finished: Job | None
    if worker_id is None:
        values |= {"status": transition.target, **_RELEASED}
        allowed = sa.and_(jobs.c.id == job.id, guard(jobs.c.status, transition))
        moved = conn.execute(jobs.update().where(allowed).values(**values)).rowcount
        finished = job.replace(**values) if moved == 1 else None
        if finished is not None:
            changed(conn, job.id)
    else:
        finished = _finish(conn, job, worker_id, transition, values)
    if finished is None:
        return None
    enqueue_delivery(conn, finished, "failed")
    ledger.settle(conn, job.account_id, job.id, job.price, 1, 0)
    return finished


def requeue(conn: sa.Connection, job: Job, worker_id: str, delay: float, reason: str) -> Job | None:
    """Back to QUEUED after a retryable failure, due again in ``delay`` seconds."""
    publish(conn, JOBS_CHANNEL)
    return _finish(
        conn,
        job,
        worker_id,
        states.REQUEUE,
        {
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
            guard(jobs.c.status, states.REQUEUE),
            jobs.c.lease_expires_at < now,
            jobs.c.attempts < max_attempts,
        )
        .values(
            status=states.REQUEUE.target,
            **_RELEASED,
            run_after=now,
            progress=0,
            error_message="its worker stopped responding; retrying",
        )
    ).rowcount
    if requeued:
        publish(conn, JOBS_CHANNEL)
        changed(conn, ANY)  # which jobs the UPDATE moved is not returned: every watched one
    return int(requeued or 0)


def reap_abandoned(conn: sa.Connection, max_attempts: int, now: float | None = None) -> int:
    """Fail jobs whose workers died ``max_attempts`` times (lease expired, no attempts left)."""
    now = time.time() if now is None else now
    rows = conn.execute(
        sa.select(jobs).where(
            status_is(jobs.c.status, states.PROCESSING),
            jobs.c.lease_expires_at < now,
            jobs.c.attempts >= max_attempts,
        )
    ).mappings()
    reaped = 0
    for job in [Job.from_row(row) for row in rows]:
        message = f"the job's worker stopped responding {job.attempts} times"
        if fail(conn, job, None, "worker_lost", message, states.GIVE_UP):
            reaped += 1
    return reaped


# -- submissions and reads ------------------------------------------------------------------


def announce_jobs(conn: sa.Connection) -> None:
    """Tell workers, at this transaction's commit, that it queues jobs. Submissions call it
    before admission locks the account row: on PostgreSQL it is a statement (the NOTIFY),
    and a lock held for one round trip less is held as briefly as it can be."""
    publish(conn, JOBS_CHANNEL)


def insert_jobs(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> list[Job]:
    """Write admitted jobs' rows (one statement), announced to the workers at commit."""
    if not rows:
        return []
    insert_rows(conn, jobs, rows)
    announce_jobs(conn)  # already done by a submission: then free
    return [Job.from_row(row) for row in rows]


def check_job_id(job_id: str, name: str = "id") -> str:
    """Job ids are UUIDs: anything else is a 400 (as Apiframe answers), not a lookup."""
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != job_id.lower():
        raise field_error("invalid_request", name, f"{job_id!r} is not a job id (a UUID)")
    return job_id.lower()


def get_job(conn: sa.Connection, account_id: str, mode: str, job_id: str) -> Job:
    """The account's job in this mode; another account's or mode's is a plain 404, a
    non-UUID a 400."""
    job_id = check_job_id(job_id)
    row = (
        conn.execute(
            sa.select(jobs).where(
                jobs.c.id == job_id, jobs.c.account_id == account_id, jobs.c.mode == mode
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise ApiError("not_found", f"no job {job_id!r}")
    return Job.from_row(row)


def find_job(conn: sa.Connection, job_id: str) -> Job | None:
    """A job by id, whoever owns it (the webhook sender renders deliveries with it)."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return Job.from_row(row) if row else None


FIND_JOBS_CHUNK = 500
"""Ids per ``IN`` list of ``find_jobs`` (SQLite allows 32,766 bound parameters, older builds 999)."""


def find_jobs(conn: sa.Connection, job_ids: Sequence[str]) -> list[Job]:
    """The jobs with these ids that exist, whoever owns them, in as few statements as the
    chunking allows (live status reads every watched job at once: jobs/watch.py)."""
    unique = sorted(set(job_ids))
    found: list[Job] = []
    for begin in range(0, len(unique), FIND_JOBS_CHUNK):
        chunk = unique[begin : begin + FIND_JOBS_CHUNK]
        rows = conn.execute(sa.select(jobs).where(jobs.c.id.in_(chunk))).mappings()
        found.extend(Job.from_row(row) for row in rows)
    return found


def encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at!r}|{job.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(created_at, job id) of a cursor from ``encode_cursor``; anything else, a NUL or a
    non-finite time included (PostgreSQL would refuse or misorder them), is a 400."""
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        when = float(created)
        if not math.isfinite(when) or str(uuid.UUID(job_id)) != job_id:
            raise ValueError(cursor)
        return when, job_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise field_error("invalid_request", "cursor", "cursor is malformed") from exc


@dataclass(frozen=True)
class JobFilter:
    """Which of an account's jobs a listing shows (``GET /v2/jobs``'s parameters)."""

    account_id: str
    mode: str
    status: str | None = None
    model: str | None = None
    search: str | None = None
    """A job id: that job only."""


def list_jobs(
    conn: sa.Connection, where: JobFilter, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on (created_at, id); returns (page, next cursor)."""
    query = sa.select(jobs).where(jobs.c.account_id == where.account_id, jobs.c.mode == where.mode)
    if where.search:
        query = query.where(jobs.c.id == check_job_id(where.search, "search"))
    if where.status:
        query = query.where(jobs.c.status == where.status)
    if where.model:
        query = query.where(jobs.c.model == where.model)
    if cursor:
        created, job_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                jobs.c.created_at < created,
                sa.and_(jobs.c.created_at == created, jobs.c.id < job_id),
            )
        )
    ordered = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
    rows = [Job.from_row(row) for row in conn.execute(ordered).mappings()]
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def models_used(conn: sa.Connection, account_id: str, mode: str) -> list[str]:
    """The model ids the account has jobs of in this mode (``include_models=true``)."""
    query = (
        sa.select(jobs.c.model)
        .where(jobs.c.account_id == account_id, jobs.c.mode == mode)
        .distinct()
        .order_by(jobs.c.model)
    )
    return [str(model) for model in conn.execute(query).scalars()]


def cancel(conn: sa.Connection, job: Job) -> tuple[Job, bool]:
    """Cancel: a queued job at once (CANCELLED, hold released, ``failed`` webhook); a running
    one when its engine next checks. Returns (the job as it now is, whether it still runs)."""
    if job.is_terminal:
        raise ApiError("job_not_cancelable", f"the job is already {job.status}")
    if job.status == states.QUEUED:
        cancelled = fail(
            conn, job, None, "cancelled", "cancelled by the owner", states.CANCEL_QUEUED
        )
        if cancelled is not None:
            return cancelled, False
        job = find_job(conn, job.id) or job  # a worker claimed it a moment ago
    # Running: the worker sees the flag between engine steps.
    conn.execute(jobs.update().where(jobs.c.id == job.id).values(cancel_requested=True))
    return job.replace(cancel_requested=True), True


def completed_jobs(
    conn: sa.Connection,
    account_id: str,
    mode: str,
    start: float | None,
    end: float | None,
) -> list[tuple[float, str, int, int]]:
    """(completed_at, model, delivered, charged) of the account's completed jobs in a window."""
    query = sa.select(jobs.c.completed_at, jobs.c.model, jobs.c.delivered, jobs.c.charged).where(
        jobs.c.account_id == account_id, jobs.c.mode == mode, jobs.c.status == states.COMPLETED
    )
    if start is not None:
        query = query.where(jobs.c.completed_at >= start)
    if end is not None:
        query = query.where(jobs.c.completed_at < end)
    return [
        (float(at), str(model), int(delivered or 0), int(charged or 0))
        for at, model, delivered, charged in conn.execute(query)
    ]


# Each read through its partial index, counting the index's own column (never NULL in it: a
# queued job has its key, a running one its lease) rather than ``*``, for which SQLite would
# pick the smallest whole-table index instead.
_QUEUE_DEPTH = {
    states.QUEUED: sa.select(sa.func.count(jobs.c.queue_key)).where(
        status_is(jobs.c.status, states.QUEUED)
    ),
    states.PROCESSING: sa.select(sa.func.count(jobs.c.lease_expires_at)).where(
        status_is(jobs.c.status, states.PROCESSING)
    ),
}
_OLDEST_QUEUED = sa.select(sa.func.min(jobs.c.created_at)).where(
    status_is(jobs.c.status, states.QUEUED)
)


def queue_depths(conn: sa.Connection) -> tuple[dict[str, int], float | None]:
    """Jobs queued and running (through the partial indexes), and the oldest queued job's
    creation time: what ``/metrics`` reports of the queue."""
    depths = {
        status: int(conn.execute(query).scalar() or 0) for status, query in _QUEUE_DEPTH.items()
    }
    oldest = conn.execute(_OLDEST_QUEUED).scalar()
    return depths, None if oldest is None else float(oldest)


# -- the outbox: webhook deliveries written with the job changes they announce ---------------

FINAL_EVENTS = ("completed", "failed")
DEFAULT_EVENTS = FINAL_EVENTS
"""What a job that names no ``webhookEvents`` is sent."""
PROGRESS_MIN_INTERVAL = 0.5
RETRYABLE_DELIVERIES = ("pending", "failing")
JOB_WEBHOOK_STATUS = {"delivered": "delivered", "failing": "pending", "failed": "failed"}
"""A final delivery's state -> the job's ``webhookStatus`` (Apiframe's pending, delivered,
failed: a delivery still being retried is pending)."""


def wants(job: Job, event: str) -> bool:
    return bool(job.webhook_url) and event in (job.webhook_events or DEFAULT_EVENTS)


def enqueue_delivery(
    conn: sa.Connection,
    job: Job,
    event: str,
    data: dict[str, Any] | None = None,
    now: float | None = None,
    force: bool = False,
) -> str | None:
    """Insert a delivery of ``event`` if the job asked for it (``force``: whatever events it
    asked for); returns its message id. Final events set the job's ``webhookStatus`` to
    pending; progress events are throttled to one per ``PROGRESS_MIN_INTERVAL``."""
    if not job.webhook_url or not (force or wants(job, event)):
        return None
    now = time.time() if now is None else now
    final = event in FINAL_EVENTS
    if not final:
        last = conn.execute(
            sa.select(sa.func.max(webhook_deliveries.c.created_at)).where(
                webhook_deliveries.c.job_id == job.id, webhook_deliveries.c.event == event
            )
        ).scalar()
        if last is not None and now - float(last) < PROGRESS_MIN_INTERVAL:
            return None
    message_id = "msg_" + secrets.token_hex(12)
    conn.execute(
        webhook_deliveries.insert().values(
            id=message_id,
            job_id=job.id,
            account_id=job.account_id,
            event=event,
            url=job.webhook_url,
            payload=json.dumps(data or {}),
            final=final,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    publish(conn, WEBHOOKS_CHANNEL)
    if final:
        conn.execute(jobs.update().where(jobs.c.id == job.id).values(webhook_status="pending"))
    return message_id


def redeliver(conn: sa.Connection, job: Job) -> tuple[str, str]:
    """A new delivery of the finished job's final event; (message id, event)."""
    if not job.webhook_url:
        raise ApiError("webhook_not_configured")
    if not job.is_terminal:
        raise ApiError("job_not_finished")
    if not _hold_row(conn, job.id):  # deleted by retention since it was read
        raise ApiError("not_found", f"no job {job.id!r}")
    event = "completed" if job.status == states.COMPLETED else "failed"
    message_id = enqueue_delivery(conn, job, event, force=True)
    assert message_id is not None
    return message_id, event


def list_deliveries(
    conn: sa.Connection, job_id: str
) -> list[tuple[sa.RowMapping, list[sa.RowMapping]]]:
    """The job's deliveries, oldest first, each with its attempts (two queries)."""
    deliveries = (
        conn.execute(
            sa.select(webhook_deliveries)
            .where(webhook_deliveries.c.job_id == job_id)
            .order_by(webhook_deliveries.c.created_at)
        )
        .mappings()
        .all()
    )
    attempts = (
        conn.execute(
            sa.select(webhook_attempts)
            .where(webhook_attempts.c.delivery_id.in_([d["id"] for d in deliveries]))
            .order_by(webhook_attempts.c.id)
        )
        .mappings()
        .all()
    )
    by_delivery: dict[str, list[sa.RowMapping]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt["delivery_id"], []).append(attempt)
    return [(delivery, by_delivery.get(delivery["id"], [])) for delivery in deliveries]


DELIVERY_LEASE = 120.0
"""A claim's lease: long enough to render the delivery; the sender renews it to cover the
attempt's whole deadline (``renew_delivery_lease``) before it connects."""
DELIVERY_LEASE_MARGIN = 60.0
"""What a renewed lease outlives the attempt's hard deadline by: time to record the attempt
(across a database blink) and the resolver's own timeouts, which the deadline does not cover."""


def claim_due_delivery(
    conn: sa.Connection, now: float, account_cap: int | None = None
) -> dict[str, Any] | None:
    """The next due delivery, leased to the caller for ``DELIVERY_LEASE`` seconds.

    ``account_cap``: skip the deliveries of accounts that already have that many in flight
    (leased by any sender), so one account's backlog (500 redeliveries) or slow receiver
    takes at most that many of the senders' slots and another account's webhook is claimed
    next. Oldest due first otherwise. Concurrent claimers on PostgreSQL can each see the same
    count, so an account can briefly hold a slot or two more than the cap.
    """
    due = (
        webhook_deliveries.c.status.in_(RETRYABLE_DELIVERIES),
        webhook_deliveries.c.next_attempt_at <= now,
    )
    pick = (
        sa.select(webhook_deliveries.c.id)
        .where(
            *due,
            sa.or_(
                webhook_deliveries.c.lease_expires_at.is_(None),
                webhook_deliveries.c.lease_expires_at < now,
            ),
        )
        .order_by(webhook_deliveries.c.next_attempt_at)
        .limit(1)
    )
    if account_cap is not None:
        # In flight: leased and unexpired. Such a row was due when it was claimed and keeps
        # its next_attempt_at until recorded, so ix_webhook_due finds it among the due rows.
        busy = (
            sa.select(webhook_deliveries.c.account_id)
            .where(*due, webhook_deliveries.c.lease_expires_at >= now)
            .group_by(webhook_deliveries.c.account_id)
            .having(sa.func.count() >= account_cap)
        )
        pick = pick.where(webhook_deliveries.c.account_id.not_in(busy))
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    row = (
        conn.execute(
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == pick.scalar_subquery())
            .values(lease_expires_at=now + DELIVERY_LEASE)
            .returning(*webhook_deliveries.c)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def renew_delivery_lease(
    conn: sa.Connection, delivery: Mapping[str, Any], until: float
) -> dict[str, Any] | None:
    """Extend the caller's lease to ``until`` (the attempt's hard deadline plus a margin),
    so no other sender claims the delivery while this attempt may still be in flight: the
    delivery as now leased, or None if the lease has moved on (another sender took it over,
    or it was recorded). A sender sends only under a renewed lease."""
    moved = conn.execute(
        webhook_deliveries.update()
        .where(
            webhook_deliveries.c.id == delivery["id"],
            webhook_deliveries.c.attempts == int(delivery["attempts"]),
            webhook_deliveries.c.lease_expires_at == delivery["lease_expires_at"],
            webhook_deliveries.c.status.in_(RETRYABLE_DELIVERIES),
        )
        .values(lease_expires_at=until)
    ).rowcount
    return {**delivery, "lease_expires_at": until} if moved == 1 else None


def record_attempt(
    conn: sa.Connection,
    delivery: Mapping[str, Any],
    attempt: Mapping[str, Any],
    status: str,
    next_attempt_at: float,
) -> bool:
    """The attempt (``status_code``, ``error``, ``latency_ms``, ``attempted_at``) in the log,
    the delivery's new state, and (final events) the job's ``webhookStatus``.

    The delivery's state moves only under the caller's lease (the delivery as
    ``claim_due_delivery`` or ``renew_delivery_lease`` returned it): False, and the state left
    alone, if it was recorded already (a retry after a lost acknowledgement) or the lease ran
    out and another sender took the delivery over, whose record then stands. The attempt
    itself is logged either way, once (an attempt is known by its delivery and
    ``attempted_at``): every request a receiver got is in the log.
    """
    moved = conn.execute(
        webhook_deliveries.update()
        .where(
            webhook_deliveries.c.id == delivery["id"],
            webhook_deliveries.c.attempts == int(delivery["attempts"]),
            webhook_deliveries.c.lease_expires_at == delivery["lease_expires_at"],
        )
        .values(
            status=status,
            attempts=int(delivery["attempts"]) + 1,
            next_attempt_at=next_attempt_at,
            lease_expires_at=None,
        )
    ).rowcount
    if moved == 1 or _attempt_unlogged(conn, delivery["id"], attempt["attempted_at"]):
        conn.execute(webhook_attempts.insert().values(delivery_id=delivery["id"], **attempt))
    if moved != 1:
        return False
    if delivery["final"]:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == delivery["job_id"])
            .values(webhook_status=JOB_WEBHOOK_STATUS[status])
        )
    return True


def _attempt_unlogged(conn: sa.Connection, delivery_id: str, attempted_at: float) -> bool:
    """Whether the delivery still exists and has no attempt logged at ``attempted_at``."""
    exists = conn.execute(
        sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.id == delivery_id)
    ).first()
    logged = conn.execute(
        sa.select(webhook_attempts.c.id).where(
            webhook_attempts.c.delivery_id == delivery_id,
            webhook_attempts.c.attempted_at == attempted_at,
        )
    ).first()
    return exists is not None and logged is None


def _hold_row(conn: sa.Connection, job_id: str) -> bool:
    """Whether the job's row still exists, holding it until the commit (``FOR KEY SHARE`` on
    PostgreSQL): the retention sweeper skips a held row, and a row it is deleting is waited
    for and then found gone, so a new outbox row never points at a deleted job."""
    query = sa.select(jobs.c.id).where(jobs.c.id == job_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True, key_share=True)
    return conn.execute(query).first() is not None


# -- retention: what the sweeper (jobs/retention.py) reads and deletes ----------------------
#
# Each query takes the oldest rows from the head of an index (``ix_jobs_finished`` for jobs,
# ``ix_webhook_due`` for deliveries), at most ``limit``, and locks them until the caller's
# commit with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: two sweepers at once take different
# rows and never wait for each other. SQLite's write transaction serialises them.

FINISHED_DELIVERIES = ("delivered", "failed")


def _skip_locked(query: sa.Select[Any], conn: sa.Connection) -> sa.Select[Any]:
    return query.with_for_update(skip_locked=True) if conn.dialect.name == "postgresql" else query


def _finished_before(before: float, expired: bool) -> list[sa.ColumnElement[bool]]:
    """Finished jobs (the predicate of ``ix_jobs_finished``) that finished before ``before``.

    ``completed_at`` is set by the finishing writes only (``complete_many``, ``fail``), so it
    alone says "finished"; a status condition too would tempt PostgreSQL into the
    status-led ``ix_jobs_account_status``, which holds every finished job.
    """
    return [
        jobs.c.completed_at.is_not(None),
        jobs.c.expired == (sa.true() if expired else sa.false()),
        jobs.c.completed_at < before,
    ]


def outputs_due_for_expiry(conn: sa.Connection, before: float, limit: int) -> list[Job]:
    """Finished, unexpired jobs that finished before ``before``, oldest first, locked."""
    query = (
        sa.select(jobs)
        .where(*_finished_before(before, expired=False))
        .order_by(jobs.c.expired, jobs.c.completed_at)
        .limit(limit)
    )
    return [Job.from_row(row) for row in conn.execute(_skip_locked(query, conn)).mappings()]


def mark_expired(conn: sa.Connection, job_ids: Sequence[str]) -> int:
    """Set ``expired`` on these finished jobs: their files are (being) deleted."""
    if not job_ids:
        return 0
    moved = conn.execute(
        jobs.update()
        .where(
            jobs.c.id.in_(sorted(job_ids)),
            jobs.c.expired == sa.false(),
            jobs.c.completed_at.is_not(None),
        )
        .values(expired=True)
    ).rowcount
    return int(moved or 0)


def unfinished_params(conn: sa.Connection) -> list[dict[str, Any]]:
    """The params of every queued or running job (through the queue's partial indexes): the
    image sources that jobs still to run will read."""
    query = sa.select(jobs.c.params).where(
        sa.or_(status_is(jobs.c.status, states.QUEUED), status_is(jobs.c.status, states.PROCESSING))
    )
    return [dict(params or {}) for params in conn.execute(query).scalars()]


def jobs_due_for_deletion(conn: sa.Connection, before: float, limit: int) -> list[str]:
    """Expired jobs that finished before ``before`` and have no delivery still being
    retried, oldest first, locked."""
    retrying = (
        sa.select(webhook_deliveries.c.id)
        .where(
            webhook_deliveries.c.job_id == jobs.c.id,
            webhook_deliveries.c.status.in_(RETRYABLE_DELIVERIES),
        )
        .exists()
    )
    query = (
        sa.select(jobs.c.id)
        .where(*_finished_before(before, expired=True), ~retrying)
        .order_by(jobs.c.expired, jobs.c.completed_at)
        .limit(limit)
    )
    return [str(job_id) for job_id in conn.execute(_skip_locked(query, conn)).scalars()]


def delete_jobs(conn: sa.Connection, job_ids: Sequence[str]) -> int:
    """Delete these expired jobs' rows with their webhook deliveries and attempts (the rows
    that reference them). Their ledger entries stay: the ledger is the account's history."""
    if not job_ids:
        return 0
    ids = sorted(job_ids)
    deliveries = sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.job_id.in_(ids))
    conn.execute(webhook_attempts.delete().where(webhook_attempts.c.delivery_id.in_(deliveries)))
    conn.execute(webhook_deliveries.delete().where(webhook_deliveries.c.job_id.in_(ids)))
    deleted = conn.execute(
        jobs.delete().where(jobs.c.id.in_(ids), jobs.c.expired == sa.true())
    ).rowcount
    return int(deleted or 0)


def deliveries_due_for_deletion(conn: sa.Connection, before: float, limit: int) -> list[str]:
    """Finished deliveries (delivered, or given up) whose last attempt was before ``before``,
    oldest first, locked."""
    query = (
        sa.select(webhook_deliveries.c.id)
        .where(
            webhook_deliveries.c.status.in_(FINISHED_DELIVERIES),
            webhook_deliveries.c.next_attempt_at < before,
        )
        .order_by(webhook_deliveries.c.next_attempt_at)
        .limit(limit)
    )
    return [str(delivery) for delivery in conn.execute(_skip_locked(query, conn)).scalars()]


def delete_deliveries(conn: sa.Connection, delivery_ids: Sequence[str]) -> int:
    """Delete these finished deliveries and their attempt logs."""
    if not delivery_ids:
        return 0
    ids = sorted(delivery_ids)
    conn.execute(webhook_attempts.delete().where(webhook_attempts.c.delivery_id.in_(ids)))
    deleted = conn.execute(
        webhook_deliveries.delete().where(
            webhook_deliveries.c.id.in_(ids),
            webhook_deliveries.c.status.in_(FINISHED_DELIVERIES),
        )
    ).rowcount
    return int(deleted or 0)


# -- upstream task records (engines that run jobs at a provider: engines/bfl.py) ----------------


def upstream_state(conn: sa.Connection, job_id: str) -> dict[str, Any] | None:
    """What an upstream engine recorded for the job's provider task (any attempt), or None."""
    row = conn.execute(
        sa.select(job_upstream.c.state).where(job_upstream.c.job_id == job_id)
    ).first()
    return dict(row.state) if row is not None and isinstance(row.state, dict) else None


def record_upstream(
    conn: sa.Connection, job: Job, worker_id: str, engine: str, state: Mapping[str, Any]
) -> bool:
    """Record the job's provider task for its later attempts; False (nothing written) when
    this worker no longer holds the job's lease."""
    held = conn.execute(
        sa.select(jobs.c.id).where(
            jobs.c.id == job.id,
            jobs.c.lease_owner == worker_id,
            status_is(jobs.c.status, states.PROCESSING),
        )
    ).first()
    if held is None:
        return False
    values = {"engine": engine, "state": dict(state), "updated_at": time.time()}
    updated = conn.execute(
        job_upstream.update().where(job_upstream.c.job_id == job.id).values(**values)
    )
    if not updated.rowcount:
        conn.execute(job_upstream.insert().values(job_id=job.id, **values))
    return True
