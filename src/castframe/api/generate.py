"""``POST /v2/images/generate``: validate, remember the idempotency key, enqueue, answer 202."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from castframe.api.deps import authenticate, get_services
from castframe.catalog import operations
from castframe.errors import ApiError, field_error
from castframe.jobs import idempotency
from castframe.jobs.accounts import Principal
from castframe.jobs.queries import get_job
from castframe.jobs.submitter import accepted_body
from castframe.jobs.validation import prepare
from castframe.jobs.watch import Watch
from castframe.metrics import JOBS_SUBMITTED
from castframe.services import Services
from castframe.store import states

router = APIRouter(tags=["images"])

IMAGE_JOB_DOC = {"requestBody": {"required": True, "content": {"application/json": {}}}}
"""Filled from the model registry when the document is built (api/openapi.py)."""


MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a JSON body may have (a request needs 3)."""
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.S)
"""A JSON string, or an unterminated one to the end; possessive, so the scan stays linear."""
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_DEPTH_CHUNK = 1 << 20


def json_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays and objects deeper than ``limit``, found without
    parsing: ``json.loads`` recurses once per level (a RecursionError at ~1,000, and on other
    builds the C stack). Brackets inside strings do not count; the few bodies with more than
    ``limit`` brackets at all are scanned with numpy (a running sum of +1/-1 steps)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    steps = np.frombuffer(brackets, dtype=np.int8)
    depth = 0
    for begin in range(0, len(steps), _DEPTH_CHUNK):
        running = np.cumsum(steps[begin : begin + _DEPTH_CHUNK], dtype=np.int64) + depth
        if int(running.max()) > limit:
            return True
        depth = int(running[-1])
    return False


def unstorable_text(value: Any) -> str | None:
    """The JSON path of the first string (key or value) holding a NUL or an unpaired
    surrogate (``"\\ud800"`` is valid JSON), or None: PostgreSQL cannot store either in text,
    and neither can be encoded as UTF-8, so they are refused at the door rather than failing a
    statement. Walks with a stack (the depth is already bounded)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                # A key that cannot be encoded is shown escaped: the path goes into the answer.
                shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                child_path = f"{path}.{shown}" if path else shown
                if not _storable(key):
                    return child_path
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}" if path else str(i), child) for i, child in enumerate(item))
        elif isinstance(item, str) and not _storable(item):
            return path or "body"
    return None


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@asynccontextmanager
async def body_deadline(seconds: float) -> AsyncIterator[None]:
    """Reading a request body within ``seconds``: a client whose Content-Length promises more
    than it sends would otherwise hold its connection (and a request slot) forever. On expiry,
    400 body_timeout with ``Connection: close``, so the server drops the half-read connection."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise ApiError(
            "body_timeout",
            f"the request body did not arrive within {seconds:g} seconds",
            headers={"Connection": "close"},
        ) from exc


async def read_json_body(request: Request, limit: int, timeout: float) -> tuple[Any, bytes]:
    """The parsed body and its bytes: application/json, at most ``limit`` bytes arriving
    within ``timeout`` seconds, nested at most MAX_JSON_DEPTH deep, every string storable."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(
            "unsupported_media_type",
            f"send Content-Type: application/json (got {content_type or 'nothing'})",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError("payload_too_large", f"the body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async with body_deadline(timeout):
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ApiError("payload_too_large", f"the body is over {limit} bytes")
    raw = b"".join(chunks)
    if len(raw) > INLINE_PARSE_BYTES:  # parsing megabytes would stall every other request
        return await run_in_threadpool(parse_json_body, raw), raw
    return parse_json_body(raw), raw


INLINE_PARSE_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the event loop (well under a millisecond); larger
ones (up to CASTFRAME_MAX_BODY_BYTES, 30 MB by default) in a thread."""


def parse_json_body(raw: bytes) -> Any:
    """The parsed body: nested at most MAX_JSON_DEPTH deep, every string storable."""
    too_deep = ApiError("invalid_json", f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
    if json_too_deep(raw):
        raise too_deep
    try:
        body = json.loads(raw)
    except RecursionError as exc:  # a text the scan cannot read (UTF-16) nested too deep
        raise too_deep from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("invalid_json", f"the body is not valid JSON: {exc}") from exc
    if (path := unstorable_text(body)) is not None:
        raise field_error(
            "validation_error", path, "text may not contain NUL characters or unpaired surrogates"
        )
    return body


def mentions_data_uri(value: Any) -> bool:
    """Whether any string in the parsed body is a data URI (``data:``, any case, however the
    JSON spelled it: ``"data\u003a..."`` is one too). Its decoding then goes to a thread."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item[:5].lower() == "data:":
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


MAX_WAIT_SECONDS = 60.0
_PREFER_WAIT = re.compile(r'(?:^|[;,])\s*wait\s*(?:=\s*"?(\d+)"?)?\s*(?=$|[;,])')
"""RFC 7240's ``preference = token [ BWS "=" BWS word ]``: ``wait = 2`` is ``wait=2``."""


def parse_prefer_wait(header: str | None) -> float | None:
    """``Prefer: wait`` (60 s) or ``wait=N`` (capped at 60), as in RFC 7240 and Replicate;
    whitespace around ``=`` is allowed (the RFC's BWS), and ``wait="5"`` is ``wait=5``."""
    if not header:
        return None
    match = _PREFER_WAIT.search(header.strip().lower())
    if not match:
        return None
    return min(float(match.group(1) or MAX_WAIT_SECONDS), MAX_WAIT_SECONDS)


async def wait_for_terminal(
    services: Services,
    principal: Principal,
    job_id: str,
    seconds: float,
    request: Request | None = None,
) -> dict[str, Any] | None:
    """The job view once it has finished, or as it is after ``seconds`` (or at once when the
    server begins to shut down); None when no live-status listener is free
    (``too_many_listeners``, ``listeners_exhausted``): the job exists by now, so the caller
    answers as if ``Prefer: wait`` had not been sent. None too when the client of
    ``request`` hangs up: its listener is freed then, not after ``seconds``.

    Waits on the process's shared reader (jobs/watch.py), which reads the job when a commit
    says it changed, instead of reading it every 0.1 s in the thread pool."""
    try:
        watch = services.watcher.watch(job_id, principal.key_id)
    except ApiError:
        return None
    with watch:
        waiting = asyncio.ensure_future(_watch_until_terminal(watch, seconds))
        if request is None:
            latest = await waiting
        else:
            leaving = asyncio.ensure_future(client_gone(request))
            try:
                await asyncio.wait((waiting, leaving), return_when=asyncio.FIRST_COMPLETED)
            finally:
                leaving.cancel()
                if not waiting.done():
                    waiting.cancel()
            if waiting.cancelled() or not waiting.done():
                return None  # the client hung up: nobody reads the answer
            latest = waiting.result()
        if latest is not None and (latest["status"] in states.TERMINAL or not watch.gone):
            return latest
    return await run_in_threadpool(read_job_view, services, principal, job_id)


async def _watch_until_terminal(watch: Watch, seconds: float) -> dict[str, Any] | None:
    """The last view ``watch`` was handed within ``seconds`` (a terminal one ends it)."""
    latest: dict[str, Any] | None = None
    deadline = time.monotonic() + seconds
    while (view := await watch.next(deadline - time.monotonic())) is not None:
        latest = view
        if view["status"] in states.TERMINAL:
            break
    return latest


async def client_gone(request: Request) -> None:
    """Returns once the client has hung up. Call only after the body has been read: the
    next ASGI message is then ``http.disconnect``, sent when the connection closes."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def read_job_view(services: Services, principal: Principal, job_id: str) -> dict[str, Any]:
    with services.db.read() as conn:
        job = get_job(conn, principal, job_id)
    return services.view(job)


async def submit(
    services: Services,
    principal: Principal,
    body: Any,
    claim: idempotency.Claim | None,
    heavy: bool,
    operation: str = "generate",
) -> str:
    """Prepare and insert the job; the idempotency record is completed in the same transaction
    (with other submissions of this moment: jobs/submitter.py). Validation runs on the event
    loop, except for ``heavy`` bodies (inline images to decode, or large), which go to a
    thread."""
    if heavy:
        submission = await run_in_threadpool(
            prepare, body, principal, services.settings, services.routing, operation
        )
    else:
        submission = prepare(body, principal, services.settings, services.routing, operation)
    if services.settings.unserved_models == "reject":
        model = submission.spec.id
        if not await run_in_threadpool(services.has_worker, model):
            raise ApiError(
                "model_unavailable",
                f"no live worker serves {model!r} now; retry later",
                headers={"Retry-After": "30"},
            )
    job = await services.submitter.submit_async(principal, submission, claim)
    JOBS_SUBMITTED.labels(job.model, job.engine, job.mode).inc()
    return accepted_body(job)


def take_submission_token(request: Request, principal: Principal) -> bool:
    """One token of the key's submission bucket: True if taken, else 429 rate_limited with
    Retry-After (``rate_limit_refusal``)."""
    decision = request.app.state.rate_limiter.check(
        principal.key_id, take=True, rate=principal.rate_per_second, burst=principal.rate_burst
    )
    request.state.rate_headers = decision.headers()
    if not decision.allowed:
        raise rate_limit_refusal(decision.retry_after, "submissions")
    return True


def rate_limit_refusal(retry_after: int, what: str) -> ApiError:
    return ApiError(
        "rate_limited",
        f"too many {what}; retry in {retry_after}s",
        headers={"Retry-After": str(retry_after)},
    )


async def take_token_before_body(
    request: Request, services: Services, principal: Principal, key: str | None
) -> bool:
    """The submission's rate-limit token, taken before the body is read or parsed (a 30 MB
    body from a client over its rate costs nothing). Whether a token was taken: a client
    whose bucket is empty still gets its stored answer for an Idempotency-Key that already
    went through (looked up by key alone; the body must then still match it), without one."""
    try:
        return take_submission_token(request, principal)
    except ApiError:
        if key is not None and await run_in_threadpool(
            idempotency.answered, services.db, principal.account_id, principal.mode, key
        ):
            return False
        raise


async def generate(request: Request, principal: Principal = Depends(authenticate)) -> Response:
    """Every image endpoint (``POST /v2/images/<operation>``): the operation is the path's
    last segment, and the body names one of its models."""
    # From the scope's path, not ``request.url`` (building that URL costs every submission
    # ~4 µs): the route matched it, so its last segment is the operation either way.
    operation = request.scope["path"].rstrip("/").rsplit("/", 1)[-1]
    services = get_services(request)
    settings = services.settings
    key_header = request.headers.get("idempotency-key")
    key = idempotency.validate_key(key_header) if key_header is not None else None
    charged = await take_token_before_body(request, services, principal, key)
    body, raw = await read_json_body(request, settings.max_body_bytes, settings.body_read_timeout)
    claim: idempotency.Claim | None = None
    if key:
        fingerprint = idempotency.fingerprint("POST", request.url.path, body)
        found = await run_in_threadpool(
            idempotency.begin,
            services.db,
            principal.account_id,
            principal.mode,
            key,
            fingerprint,
            settings.idempotency_ttl_hours * 3600,
        )
        if isinstance(found, idempotency.StoredResponse):
            # Replaying a stored answer costs nothing: a client's retry of a submission that
            # went through gets its job, never a 429.
            if charged:
                request.app.state.rate_limiter.give_back(principal.key_id, principal.rate_burst)
            return Response(
                found.body,
                status_code=found.status,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        claim = found
    wait = parse_prefer_wait(request.headers.get("prefer"))
    try:
        heavy = len(raw) > INLINE_PARSE_BYTES or mentions_data_uri(body)
        response_body = await submit(services, principal, body, claim, heavy, operation)
    except BaseException:
        if claim:
            await run_in_threadpool(idempotency.forget, services.db, claim)
        raise
    finally:
        if claim:
            idempotency.release(claim)
    if wait is None:
        return Response(response_body, status_code=202, media_type="application/json")
    job_id = json.loads(response_body)["jobId"]
    job = await wait_for_terminal(services, principal, job_id, wait, request)
    if job is None:  # no listener free: the job is queued all the same
        return Response(response_body, status_code=202, media_type="application/json")
    finished = job["status"] in states.TERMINAL
    return Response(
        json.dumps(job),
        status_code=200 if finished else 202,
        media_type="application/json",
        headers={"Preference-Applied": f"wait={wait:g}", "Location": f"/v2/jobs/{job_id}"},
    )


SUMMARIES = {
    "generate": "Submit a generation job",
    "edit": "Submit an image edit job",
    "background-remove": "Submit a background removal job",
    "upscale": "Submit an upscaling job",
}

for _operation in operations():
    router.add_api_route(
        f"/v2/images/{_operation}",
        generate,
        methods=["POST"],
        status_code=202,
        openapi_extra=IMAGE_JOB_DOC,
        summary=SUMMARIES.get(_operation, f"Submit a {_operation} job"),
        responses={202: {"description": 'Queued: `{"jobId", "status": "QUEUED"}`'}},
        name=f"images_{_operation.replace('-', '_')}",
    )
