"""Job endpoints: get, list, cancel, webhook attempts and redelivery."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from castframe.api.deps import authenticate, get_services
from castframe.api.generate import read_job_view
from castframe.jobs import queries
from castframe.jobs import store as job_store
from castframe.jobs.accounts import Principal
from castframe.jobs.views import iso, job_view
from castframe.store import states

router = APIRouter(tags=["jobs"])

Status = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]


@router.get("/v2/jobs/{job_id}", summary="Get a job")
def get_job(
    job_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    services = get_services(request)
    with services.db.read() as conn:
        job = queries.get_job(conn, principal, job_id)
    return job_view(job, services.url_for, services.expired_url_for)


SSE_POLL_SECONDS = 0.25
SSE_HEARTBEAT_SECONDS = 15.0


@router.get(
    "/v2/jobs/{job_id}/events",
    summary="Server-Sent Events: status and progress",
    response_class=StreamingResponse,
)
async def job_events(
    job_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> StreamingResponse:
    """Every change of status or progress as an SSE ``job`` event, until the job ends.

    Reads the database (not in-process state), so any API process can serve any job's stream.
    """
    services = get_services(request)
    first = await run_in_threadpool(read_job_view, services, principal, job_id)

    async def stream() -> AsyncIterator[bytes]:
        last: tuple[str, int] | None = None
        quiet_since = time.monotonic()
        job = first
        while True:
            state = (job["status"], job["progress"])
            if state != last:
                last, quiet_since = state, time.monotonic()
                yield f"event: job\nid: {job['status']}-{job['progress']}\ndata: {json.dumps(job)}\n\n".encode()
            if job["status"] in states.TERMINAL:
                yield b"event: end\ndata: {}\n\n"
                return
            if time.monotonic() - quiet_since > SSE_HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_SECONDS)
            job = await run_in_threadpool(read_job_view, services, principal, job_id)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


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
        "jobs": [job_view(row, services.url_for, services.expired_url_for) for row in rows],
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
    return job_view(job, services.url_for, services.expired_url_for)


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


@router.post(
    "/v2/jobs/{job_id}/webhooks/redeliver",
    status_code=202,
    summary="Send the job's final webhook again",
)
def redeliver(
    job_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    services = get_services(request)
    with services.db.write() as conn:
        message_id, event = job_store.redeliver(conn, queries.get_job(conn, principal, job_id))
    return {"deliveryId": message_id, "event": event, "status": "pending"}
