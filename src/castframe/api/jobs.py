"""Job endpoints: get, list, cancel, webhook attempts and redelivery."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from castframe.api.deps import authenticate, get_services
from castframe.api.generate import read_job_view
from castframe.api.ratelimit import RateLimiter
from castframe.errors import ApiError
from castframe.jobs import queries
from castframe.jobs import store as job_store
from castframe.jobs.accounts import Principal
from castframe.jobs.views import iso
from castframe.jobs.watch import Watch
from castframe.store import states

router = APIRouter(tags=["jobs"])
_LIMITER_LOCK = threading.Lock()

Status = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]


@router.get("/v2/jobs/{job_id}", summary="Get a job")
def get_job(
    job_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    services = get_services(request)
    with services.db.read() as conn:
        job = queries.get_job(conn, principal, job_id)
    return services.view(job)


SSE_HEARTBEAT_SECONDS = 15.0
"""A ``: keep-alive`` comment after this long without an event (proxies close idle streams)."""


def job_event(job: dict[str, Any]) -> bytes:
    return (
        f"event: job\nid: {job['status']}-{job['progress']}\ndata: {json.dumps(job)}\n\n".encode()
    )


END_EVENT = b"event: end\ndata: {}\n\n"
KEEP_ALIVE = b": keep-alive\n\n"


async def job_event_stream(first: dict[str, Any], watch: Watch | None) -> AsyncIterator[bytes]:
    """``job`` events for each new (status, progress) of the job, from ``first`` on, then
    ``end``; the views come from the process's shared reader (jobs/watch.py), so an idle
    stream costs no reads at all. Closes its watch however it ends (a client that leaves
    cancels it: Starlette listens for the disconnect)."""
    try:
        last: tuple[str, int] | None = None
        quiet_since = time.monotonic()
        job = first
        while True:
            state = (job["status"], job["progress"])
            if state != last:
                last, quiet_since = state, time.monotonic()
                yield job_event(job)
            if job["status"] in states.TERMINAL or watch is None:
                yield END_EVENT
                return
            view = await watch.next(SSE_HEARTBEAT_SECONDS - (time.monotonic() - quiet_since))
            if view is not None:
                job = view
            elif watch.gone:  # deleted while watched: nothing more will happen to it
                yield END_EVENT
                return
            elif watch.draining:  # the server is shutting down: end cleanly (no `end`:
                return  # the client reconnects, to another process, with Last-Event-ID)
            elif time.monotonic() - quiet_since >= SSE_HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield KEEP_ALIVE
    finally:
        if watch is not None:
            watch.close()


class WatchedStream(StreamingResponse):
    """A StreamingResponse that frees its listener slot even if its body never started
    (a client gone before the headers were sent never runs the generator's ``finally``)."""

    def __init__(self, content: AsyncIterator[bytes], watch: Watch | None) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.watch is not None:
                self.watch.close()


@router.get(
    "/v2/jobs/{job_id}/events",
    summary="Server-Sent Events: status and progress",
    response_class=StreamingResponse,
    responses={
        429: {"description": "`too_many_listeners`: the key's live-status bound, Retry-After"},
        503: {"description": "`listeners_exhausted`: the process's bound, Retry-After"},
    },
)
async def job_events(
    job_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> StreamingResponse:
    """Every change of status or progress as an SSE ``job`` event, until the job ends.

    Any API process can serve any job's stream: changes reach it through the database's
    wake-ups (and a slow re-read). Each open stream of an unfinished job takes one of the
    key's `CASTFRAME_LIVE_LISTENERS_PER_KEY` and the process's `CASTFRAME_LIVE_LISTENERS`
    listener slots, freed when the job ends or the client leaves: beyond them, 429
    `too_many_listeners` or 503 `listeners_exhausted`, with Retry-After.
    """
    services = get_services(request)
    first = await run_in_threadpool(read_job_view, services, principal, job_id)
    watch = None
    if first["status"] not in states.TERMINAL:
        watch = services.watcher.watch(first["id"], principal.key_id)
    return WatchedStream(job_event_stream(first, watch), watch)


@router.get("/v2/jobs", summary="List jobs, newest first")
def list_jobs(
    request: Request,
    principal: Principal = Depends(authenticate),
    status: Status | None = None,
    model: str | None = None,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = None,
    scope: Literal["user", "team"] = Query(
        "user",
        description="Every Castframe account is one user who owns its team, so both scopes "
        "list the account's jobs (in the key's mode).",
    ),
    search: str | None = Query(None, description="A job id: that job only."),
    include_models: Literal["true", "false"] = Query(
        "false", description="`true` adds `models`: the model ids the caller has used."
    ),
) -> dict[str, Any]:
    services = get_services(request)
    with services.db.read() as conn:
        rows, next_cursor = queries.list_jobs(
            conn,
            principal,
            status=status,
            model=model,
            limit=limit,
            cursor=cursor,
            search=search,
        )
        models = queries.models_used(conn, principal) if include_models == "true" else None
    page: dict[str, Any] = {
        "jobs": [services.view(row) for row in rows],
        "nextCursor": next_cursor,
        "hasMore": next_cursor is not None,
    }
    if models is not None:
        page["models"] = models
    return page


@router.post("/v2/jobs/{job_id}/cancel", summary="Cancel a job")
def cancel_job(
    job_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    services = get_services(request)
    with services.db.write() as conn:
        job, _running = queries.cancel_job(conn, principal, job_id)
    return services.view(job)


@router.get("/v2/jobs/{job_id}/webhooks", summary="Webhook deliveries and attempts of a job")
def list_webhooks(
    job_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    services = get_services(request)
    with services.db.read() as conn:
        job = queries.get_job(conn, principal, job_id)
        deliveries = job_store.list_deliveries(conn, job.id)
    return {
        "deliveries": [
            {
                "id": delivery["id"],
                "event": delivery["event"],
                "url": delivery["url"],
                "status": delivery["status"],
                "attempts": [
                    {
                        "attemptedAt": iso(attempt["attempted_at"]),
                        "statusCode": attempt["status_code"],
                        "latencyMs": attempt["latency_ms"],
                        "error": attempt["error"],
                    }
                    for attempt in attempts
                ],
                "nextAttemptAt": iso(delivery["next_attempt_at"])
                if delivery["status"] in job_store.RETRYABLE_DELIVERIES
                else None,
                "createdAt": iso(delivery["created_at"]),
            }
            for delivery, attempts in deliveries
        ]
    }


def take_redelivery_token(request: Request, principal: Principal, per_minute: float) -> None:
    """One token of the key's redelivery bucket (its own, beside the submission bucket), or
    429 rate_limited: 500 redeliveries in a few seconds from one key would fill the outbox."""
    with _LIMITER_LOCK:  # made on first use, by one of the threads that got here at once
        limiter: RateLimiter | None = getattr(request.app.state, "redeliver_limiter", None)
        if limiter is None:
            burst = max(1, int(per_minute))
            limiter = RateLimiter(per_minute / 60.0, burst)
            request.app.state.redeliver_limiter = limiter
    decision = limiter.check(principal.key_id, take=True)
    if not decision.allowed:
        raise ApiError(
            "rate_limited",
            f"too many webhook redeliveries; retry in {decision.retry_after}s",
            headers={"Retry-After": str(decision.retry_after), **decision.headers()},
        )


@router.post(
    "/v2/jobs/{job_id}/webhooks/redeliver",
    status_code=202,
    summary="Send the job's final webhook again",
    responses={429: {"description": "`rate_limited`: the key's redelivery bucket, Retry-After"}},
)
def redeliver(
    job_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    """A new delivery of the job's final event. Each takes a token of the key's redelivery
    bucket (`CASTFRAME_REDELIVER_PER_MINUTE`): beyond it, 429 `rate_limited` with
    Retry-After; the outbox also caps what one account has in flight."""
    services = get_services(request)
    take_redelivery_token(request, principal, services.settings.redeliver_per_minute)
    with services.db.write() as conn:
        message_id, event = job_store.redeliver(conn, queries.get_job(conn, principal, job_id))
    return {"deliveryId": message_id, "event": event, "status": "pending"}
