"""Reading and cancelling a caller's jobs: the job store scoped to the API key's account and
mode (a test key sees only test jobs)."""

from __future__ import annotations

import sqlalchemy as sa

from castframe.jobs import store as job_store
from castframe.jobs.accounts import Principal
from castframe.jobs.record import Job


def get_job(conn: sa.Connection, principal: Principal, job_id: str) -> Job:
    """The caller's job (404 for anyone else's, 400 for a non-UUID)."""
    return job_store.get_job(conn, principal.account_id, principal.mode, job_id)


def list_jobs(
    conn: sa.Connection,
    principal: Principal,
    *,
    status: str | None,
    model: str | None,
    limit: int,
    cursor: str | None,
    search: str | None = None,
) -> tuple[list[Job], str | None]:
    where = job_store.JobFilter(principal.account_id, principal.mode, status, model, search)
    return job_store.list_jobs(conn, where, limit, cursor)


def models_used(conn: sa.Connection, principal: Principal) -> list[str]:
    return job_store.models_used(conn, principal.account_id, principal.mode)


def cancel_job(conn: sa.Connection, principal: Principal, job_id: str) -> tuple[Job, bool]:
    """Cancel the caller's job: (the job as it now is, whether its worker must still stop)."""
    return job_store.cancel(conn, get_job(conn, principal, job_id))
