"""The outbox: webhook deliveries are rows written in the transaction that changes the job.

So a crash between "job finished" and "webhook sent" loses nothing: the sender finds the row
when it (or another process) next runs. Final events (``completed``/``failed``) are retried on
a schedule; ``progress`` events are best-effort, throttled and never retried.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import sqlalchemy as sa

from castframe.dispatch.notify import WEBHOOKS_CHANNEL, publish
from castframe.store.tables import jobs, webhook_deliveries

FINAL_EVENTS = ("completed", "failed")
DEFAULT_EVENTS = ["completed", "failed"]
PROGRESS_MIN_INTERVAL = 0.5


def wants(job: dict[str, Any], event: str) -> bool:
    if not job.get("webhook_url"):
        return False
    return event in (job.get("webhook_events") or DEFAULT_EVENTS)


def enqueue(
    conn: sa.Connection,
    job: dict[str, Any],
    event: str,
    data: dict[str, Any] | None = None,
    now: float | None = None,
) -> str | None:
    """Insert a delivery for ``event`` if the job asked for it; returns its message id."""
    if not wants(job, event):
        return None
    now = time.time() if now is None else now
    final = event in FINAL_EVENTS
    if not final:
        last = conn.execute(
            sa.select(sa.func.max(webhook_deliveries.c.created_at)).where(
                webhook_deliveries.c.job_id == job["id"], webhook_deliveries.c.event == event
            )
        ).scalar()
        if last is not None and now - float(last) < PROGRESS_MIN_INTERVAL:
            return None
    message_id = "msg_" + secrets.token_hex(12)
    conn.execute(
        webhook_deliveries.insert().values(
            id=message_id,
            job_id=job["id"],
            account_id=job["account_id"],
            event=event,
            url=job["webhook_url"],
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
        conn.execute(jobs.update().where(jobs.c.id == job["id"]).values(webhook_status="pending"))
    return message_id
