"""``POST /v2/images/generate``: validate, remember the idempotency key, enqueue, answer 202."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from castframe.api.deps import authenticate, get_services
from castframe.catalog.ideogram_character import IdeogramCharacterRequest
from castframe.errors import ApiError
from castframe.jobs import idempotency
from castframe.jobs.accounts import Principal
from castframe.jobs.queries import get_job
from castframe.jobs.submitter import accepted_body
from castframe.jobs.validation import prepare
from castframe.jobs.views import job_view
from castframe.metrics import JOBS_SUBMITTED
from castframe.services import Services

router = APIRouter(tags=["images"])

GENERATE_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": IdeogramCharacterRequest.model_json_schema(
                    by_alias=True, ref_template="#/components/schemas/{model}"
                ),
                "example": {
                    "prompt": "a detective walking down a rainy city street at night",
                    "model": "ideogram-character",
                    "ideogramParams": {
                        "character_reference_image": "https://example.com/me.jpg",
                        "style_type": "REALISTIC",
                        "rendering_speed": "turbo",
                        "seed": 7,
                    },
                    "aspect_ratio": "3:4",
                    "webhookUrl": "https://example.com/hooks/castframe",
                },
            }
        },
    },
}


async def read_json_body(request: Request, limit: int) -> tuple[Any, bytes]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(
            "unsupported_media_type",
            f"send Content-Type: application/json (got {content_type or 'nothing'})",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError("payload_too_large", f"the body is over {limit} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ApiError("payload_too_large", f"the body is over {limit} bytes")
    try:
        return json.loads(raw), raw
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("invalid_json", f"the body is not valid JSON: {exc}") from exc


MAX_WAIT_SECONDS = 60.0
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait(?:=(\d+))?(?:$|[;,\s])")


def parse_prefer_wait(header: str | None) -> float | None:
    """``Prefer: wait`` (60 s) or ``wait=N`` (capped at 60), as in RFC 7240 and Replicate."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header.strip().lower())
    if not match:
        return None
    return min(float(match.group(1) or MAX_WAIT_SECONDS), MAX_WAIT_SECONDS)


async def wait_for_terminal(
    services: Services, principal: Principal, job_id: str, seconds: float
) -> dict[str, Any]:
    """The job view once it has finished, or as it is after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        job = await run_in_threadpool(read_job_view, services, principal, job_id)
        if job["status"] in ("COMPLETED", "FAILED", "CANCELLED") or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def read_job_view(services: Services, principal: Principal, job_id: str) -> dict[str, Any]:
    with services.db.read() as conn:
        return job_view(get_job(conn, principal, job_id), services.url_for)


async def submit(
    services: Services, principal: Principal, body: Any, key: str | None, inline_images: bool
) -> str:
    """Prepare and insert the job; the idempotency record is completed in the same transaction
    (with other submissions of this moment: jobs/submitter.py). Validation runs on the event
    loop, except for bodies with inline images, whose decoding goes to a thread."""
    if inline_images:
        submission = await run_in_threadpool(
            prepare, body, principal, services.settings, services.routing
        )
    else:
        submission = prepare(body, principal, services.settings, services.routing)
    job = await services.submitter.submit_async(principal, submission, key)
    JOBS_SUBMITTED.labels(job.model, job.engine, job.mode).inc()
    return accepted_body(job)


def take_submission_token(request: Request, principal: Principal) -> None:
    """One token of the key's submission bucket, or 429 rate_limited with Retry-After."""
    decision = request.app.state.rate_limiter.check(
        principal.key_id, take=True, rate=principal.rate_per_second, burst=principal.rate_burst
    )
    request.state.rate_headers = decision.headers()
    if not decision.allowed:
        raise ApiError(
            "rate_limited",
            f"too many submissions; retry in {decision.retry_after}s",
            headers={"Retry-After": str(decision.retry_after)},
        )


@router.post(
    "/v2/images/generate",
    status_code=202,
    openapi_extra=GENERATE_DOC,
    summary="Submit a generation job",
    responses={202: {"description": 'Queued: `{"jobId", "status": "QUEUED"}`'}},
)
async def generate(request: Request, principal: Principal = Depends(authenticate)) -> Response:
    services = get_services(request)
    body, raw = await read_json_body(request, services.settings.max_body_bytes)
    key_header = request.headers.get("idempotency-key")
    key = idempotency.validate_key(key_header) if key_header is not None else None
    if key:
        # Before the rate limit: replaying a stored answer costs nothing, so a client's retry
        # of a submission that went through gets its job, never a 429.
        fingerprint = idempotency.fingerprint("POST", request.url.path, body)
        stored = await run_in_threadpool(
            idempotency.begin,
            services.db,
            principal.account_id,
            key,
            fingerprint,
            services.settings.idempotency_ttl_hours * 3600,
        )
        if stored is not None:
            return Response(
                stored.body,
                status_code=stored.status,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
    wait = parse_prefer_wait(request.headers.get("prefer"))
    try:
        take_submission_token(request, principal)
        response_body = await submit(services, principal, body, key, b'"data:' in raw)
    except BaseException:
        if key:
            await run_in_threadpool(idempotency.forget, services.db, principal.account_id, key)
        raise
    if wait is None:
        return Response(response_body, status_code=202, media_type="application/json")
    job_id = json.loads(response_body)["jobId"]
    job = await wait_for_terminal(services, principal, job_id, wait)
    finished = job["status"] in ("COMPLETED", "FAILED", "CANCELLED")
    return Response(
        json.dumps(job),
        status_code=200 if finished else 202,
        media_type="application/json",
        headers={"Preference-Applied": f"wait={wait:g}", "Location": f"/v2/jobs/{job_id}"},
    )
