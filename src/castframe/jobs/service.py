"""Submitting, reading, listing and canceling jobs.

``prepare`` validates a request and turns inline images into uploads (no transaction);
``insert`` then writes the job, its credit hold, its upload rows and (by the caller) its
idempotency record in one transaction, so a job exists exactly when it was paid for.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from castframe.catalog import MODELS, ModelSpec
from castframe.catalog.ideogram_character import MAX_SEED
from castframe.config import Settings
from castframe.dispatch.notify import JOBS_CHANNEL, publish
from castframe.engines.router import check_params, route_engine
from castframe.errors import ApiError, details_of, field_error
from castframe.jobs import admission, ledger, states
from castframe.jobs.accounts import Principal
from castframe.jobs.characters import get_character
from castframe.jobs.uploads import (
    UPLOAD_SCHEME,
    existing_uploads,
    insert_uploads,
    new_upload,
    own_upload,
)
from castframe.media.fetch import FetchError, check_url_syntax
from castframe.media.images import ImageRejected, decode_image, image_error_code, parse_data_uri
from castframe.media.storage import Storage
from castframe.store.db import insert_rows
from castframe.store.tables import jobs
from castframe.webhooks import outbox


@dataclass
class Submission:
    spec: ModelSpec
    params: dict[str, Any]
    input_echo: dict[str, Any]
    price: int
    engine: str
    webhook_url: str | None
    webhook_events: list[str] | None
    new_uploads: list[dict[str, Any]] = field(default_factory=list)
    upload_refs: list[tuple[str, str]] = field(default_factory=list)
    """(field path, upload id) pairs to check inside the transaction."""


def pydantic_problems(error: ValidationError) -> list[tuple[str, str]]:
    """(JSON path, message) of each failure; a list index is a path part (``a.b.0``)."""
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"] if part not in ("body",))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append((path or "body", message))
    return problems


def invalid(error: ValidationError, what: str = "request") -> ApiError:
    """A 400 validation_error whose message names the first few fields."""
    problems = pydantic_problems(error)
    summary = "; ".join(f"{path}: {message}" for path, message in problems[:3])
    return ApiError("validation_error", f"invalid {what} ({summary})", details_of(problems))


def validate_request(body: Any) -> tuple[ModelSpec, BaseModel]:
    if not isinstance(body, dict):
        raise ApiError("invalid_json", "the body must be a JSON object")
    model_id = body.get("model")
    if model_id is None:
        raise field_error("validation_error", "model", "model is required")
    if not isinstance(model_id, str) or model_id not in MODELS:
        raise field_error(
            "unknown_model",
            "model",
            f"unknown model {model_id!r}; known: {', '.join(sorted(MODELS))}",
        )
    spec = MODELS[model_id]
    try:
        return spec, spec.request_model.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from exc


def prepare(body: Any, principal: Principal, settings: Settings, storage: Storage) -> Submission:
    """Validate a generate request and resolve what can be resolved before the transaction."""
    spec, request = validate_request(body)
    params = spec.normalise(request)
    echo = request.model_dump(mode="json", exclude_none=True)
    submission = Submission(
        spec=spec,
        params=params,
        input_echo=echo,
        price=0,
        engine=route_engine(spec.id, principal.mode, settings),
        webhook_url=echo.get("webhookUrl"),
        webhook_events=echo.get("webhookEvents"),
    )
    for name in spec.image_fields:
        source = params.get(name)
        if source is None:
            continue
        path = f"{spec.params_key}.{name}"
        sources, listed = (source, True) if isinstance(source, list) else ([source], False)
        resolved = [
            _resolve_image_source(
                item, f"{path}.{i}" if listed else path, principal, settings, storage, submission
            )
            for i, item in enumerate(sources)
        ]
        params[name] = resolved if listed else resolved[0]
        # The echo keeps the URLs the client sent; inline images show as their upload.
        shown = [
            new if old.startswith("data:") else old
            for old, new in zip(sources, resolved, strict=True)
        ]
        echo[spec.params_key][name] = shown if listed else shown[0]
    if submission.webhook_url:
        try:
            check_url_syntax(
                submission.webhook_url,
                allow_private=settings.allow_private_urls,
                exempt_hosts=settings.trusted_host_set,
            )
        except FetchError as exc:
            raise field_error("url_not_allowed", "webhookUrl", exc.message) from exc
    problems = check_params(submission.engine, params, settings)
    if problems:
        raise ApiError("unsupported_parameter", problems[0][1], details=details_of(problems))
    if params.get("seed") is None:
        params["seed"] = secrets.randbelow(MAX_SEED + 1)
    if principal.mode == "live":
        submission.price = spec.price(params, settings)
    return submission


def _resolve_image_source(
    source: str,
    path: str,
    principal: Principal,
    settings: Settings,
    storage: Storage,
    submission: Submission,
) -> str:
    """Data URIs become uploads now (jobs stay small); this server's upload URLs become
    upload references (read from storage, not the network); other URLs are checked."""
    if source.startswith("data:"):
        try:
            image = decode_image(
                parse_data_uri(source),
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
            )
        except ImageRejected as exc:
            raise field_error(image_error_code(exc), path, str(exc)) from exc
        row = new_upload(storage, principal.account_id, image)
        submission.new_uploads.append(row)
        return UPLOAD_SCHEME + row["id"]
    source = own_upload(source, settings.signing_key, path) or source
    if source.startswith(UPLOAD_SCHEME):
        submission.upload_refs.append((path, source[len(UPLOAD_SCHEME) :]))
        return source
    try:
        check_url_syntax(
            source,
            allow_private=settings.allow_private_urls,
            exempt_hosts=settings.trusted_host_set,
        )
    except FetchError as exc:
        raise field_error("url_not_allowed", path, exc.message) from exc
    return source


def insert(
    conn: sa.Connection, principal: Principal, submission: Submission, settings: Settings
) -> dict[str, Any]:
    """Write the job, take its active-job slot and hold its price.

    Raises 404/402/429 ApiErrors (the caller's transaction then rolls back what was written).
    """
    check_references(conn, principal, submission, _uploads_of(conn, [(principal, submission)]))
    publish(conn, JOBS_CHANNEL)  # delivered at commit
    job = admit(conn, principal, submission, settings)
    # Admission locks the account row until the commit (see jobs/admission.py): only the job
    # and its hold are written after it.
    write_jobs(conn, [(submission, job)])
    return job


def insert_many(
    conn: sa.Connection, pending: Sequence[tuple[Principal, Submission]], settings: Settings
) -> list[dict[str, Any] | ApiError]:
    """``insert`` for many submissions in one transaction (see store/group_commit.py).

    Returns each one's job or the ApiError that refused it; a refused submission has written
    nothing, because every check and the admission come before the first write. Accounts are
    admitted in a fixed order (by id; each account's submissions in arrival order), so two
    batches that lock the same account rows cannot deadlock. An account's submissions that
    all fit are admitted by one UPDATE (``admission.admit_all``), else one by one.
    """
    outcomes: list[dict[str, Any] | ApiError | None] = [None] * len(pending)
    known = _uploads_of(conn, pending)
    admitted: list[tuple[Submission, dict[str, Any]]] = []
    publish(conn, JOBS_CHANNEL)
    order = sorted(range(len(pending)), key=lambda index: pending[index][0].account_id)
    for _account, group in itertools.groupby(order, key=lambda i: pending[i][0].account_id):
        checked: list[int] = []
        for index in group:
            principal, submission = pending[index]
            try:
                check_references(conn, principal, submission, known)
            except ApiError as refused:
                outcomes[index] = refused
                continue
            checked.append(index)
        for index, outcome in zip(
            checked, _admit_group(conn, [pending[i] for i in checked], settings), strict=True
        ):
            outcomes[index] = outcome
            if isinstance(outcome, dict):
                admitted.append((pending[index][1], outcome))
    write_jobs(conn, admitted)
    return [outcome for outcome in outcomes if outcome is not None]


def _admit_group(
    conn: sa.Connection, group: Sequence[tuple[Principal, Submission]], settings: Settings
) -> list[dict[str, Any] | ApiError]:
    """One account's checked submissions: all in one UPDATE if they all fit, else each alone."""
    if len(group) > 1:
        now = time.time()
        limits = {principal.max_active_jobs or settings.max_active_jobs for principal, _ in group}
        if len(limits) == 1:
            keys = admission.admit_all(
                conn,
                group[0][0].account_id,
                [submission.price for _principal, submission in group],
                limits.pop(),
                now,
            )
            if keys is not None:
                # Each its own creation time, as when admitted one by one: listings order
                # jobs by it, and a batch's jobs then keep the order they were sent in.
                return [
                    job_row(principal, submission, key, time.time())
                    for (principal, submission), key in zip(group, keys, strict=True)
                ]
    outcomes: list[dict[str, Any] | ApiError] = []
    for principal, submission in group:
        try:
            outcomes.append(admit(conn, principal, submission, settings))
        except ApiError as refused:
            outcomes.append(refused)
    return outcomes


def _uploads_of(
    conn: sa.Connection, pending: Sequence[tuple[Principal, Submission]]
) -> set[tuple[str, str]]:
    """(account, upload id) of the uploads these submissions name that exist: one query."""
    wanted = {
        (principal.account_id, upload_id)
        for principal, submission in pending
        for _path, upload_id in submission.upload_refs
    }
    return existing_uploads(conn, wanted) if wanted else set()


def check_references(
    conn: sa.Connection,
    principal: Principal,
    submission: Submission,
    known_uploads: set[tuple[str, str]],
) -> None:
    """The saved character and the uploads a submission names must be the caller's (404s)."""
    character_id = submission.params.get("character_id")
    if character_id:
        character = get_character(conn, principal.account_id, character_id)
        if character is None:
            raise field_error(
                "character_not_found",
                f"{submission.spec.params_key}.character_id",
                f"no character {character_id!r} in this account (deleted?)",
            )
        submission.params["character_reference_image"] = UPLOAD_SCHEME + character["upload_id"]
    for path, upload_id in submission.upload_refs:
        if (principal.account_id, upload_id) not in known_uploads:
            raise field_error("upload_not_found", path, f"no upload {upload_id!r} in this account")


def admit(
    conn: sa.Connection, principal: Principal, submission: Submission, settings: Settings
) -> dict[str, Any]:
    """Take the job's slot and hold its price (402/429 if not); returns the job row to write."""
    now = time.time()
    limit = principal.max_active_jobs or settings.max_active_jobs
    queue_key = admission.admit(conn, principal.account_id, submission.price, limit, now)
    return job_row(principal, submission, queue_key, now)


def job_row(
    principal: Principal, submission: Submission, queue_key: float, now: float
) -> dict[str, Any]:
    """The row of an admitted job, QUEUED at ``queue_key``."""
    return {
        "id": str(uuid.uuid4()),
        "account_id": principal.account_id,
        "api_key_id": principal.key_id,
        "mode": principal.mode,
        "model": submission.spec.id,
        "engine": submission.engine,
        "status": states.QUEUED,
        "input": submission.input_echo,
        "params": submission.params,
        "progress": 0,
        "result": None,
        "error_code": None,
        "error_message": None,
        "price": submission.price,
        "charged": None,
        "delivered": None,
        "created_at": now,
        "started_at": None,
        "completed_at": None,
        "run_after": now,
        "attempts": 0,
        "lease_owner": None,
        "lease_expires_at": None,
        "cancel_requested": False,
        "webhook_url": submission.webhook_url,
        "webhook_events": submission.webhook_events,
        "webhook_status": None,
        "webhook_key_hash": principal.key_hash,
        "queue_key": queue_key,
    }


def write_jobs(conn: sa.Connection, admitted: Sequence[tuple[Submission, dict[str, Any]]]) -> None:
    """Admitted jobs' rows: their new uploads, the jobs, their holds (a statement per table)."""
    if not admitted:
        return
    uploads = [row for submission, _job in admitted for row in submission.new_uploads]
    if uploads:
        insert_uploads(conn, uploads)
    insert_rows(conn, jobs, [job for _submission, job in admitted])
    holds = [(job["account_id"], job["id"], job["price"]) for _s, job in admitted if job["price"]]
    if holds:
        ledger.record_holds(conn, holds)


def check_job_id(job_id: str, name: str = "id") -> str:
    """Job ids are UUIDs: anything else is a 400 (as Apiframe answers), not a lookup."""
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise field_error("invalid_request", name, f"{job_id!r} is not a job id (a UUID)") from None
    if len(job_id) != 36:
        raise field_error("invalid_request", name, f"{job_id!r} is not a job id (a UUID)")
    return job_id.lower()


def get_job(conn: sa.Connection, principal: Principal, job_id: str) -> dict[str, Any]:
    """The caller's job; another account's or mode's is a plain 404, a non-UUID a 400."""
    job_id = check_job_id(job_id)
    row = (
        conn.execute(
            sa.select(jobs).where(
                jobs.c.id == job_id,
                jobs.c.account_id == principal.account_id,
                jobs.c.mode == principal.mode,
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise ApiError("not_found", f"no job {job_id!r}")
    return dict(row)


def encode_cursor(job: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(f"{job['created_at']!r}|{job['id']}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return float(created), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise field_error("invalid_request", "cursor", "cursor is malformed") from exc


def list_jobs(
    conn: sa.Connection,
    principal: Principal,
    *,
    status: str | None,
    model: str | None,
    limit: int,
    cursor: str | None,
    search: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, keyset-paginated on (created_at, id); ``search`` is one job's id."""
    query = sa.select(jobs).where(
        jobs.c.account_id == principal.account_id, jobs.c.mode == principal.mode
    )
    if search:
        query = query.where(jobs.c.id == check_job_id(search, "search"))
    if status:
        query = query.where(jobs.c.status == status)
    if model:
        query = query.where(jobs.c.model == model)
    if cursor:
        created, job_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                jobs.c.created_at < created,
                sa.and_(jobs.c.created_at == created, jobs.c.id < job_id),
            )
        )
    rows = [
        dict(r)
        for r in conn.execute(
            query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)
        ).mappings()
    ]
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def models_used(conn: sa.Connection, principal: Principal) -> list[str]:
    """The model ids the caller has jobs of (``include_models=true`` on the list)."""
    query = (
        sa.select(jobs.c.model)
        .where(jobs.c.account_id == principal.account_id, jobs.c.mode == principal.mode)
        .distinct()
        .order_by(jobs.c.model)
    )
    return [str(model) for model in conn.execute(query).scalars()]


def cancel_job(
    conn: sa.Connection, principal: Principal, job_id: str
) -> tuple[dict[str, Any], bool]:
    """Cancel: a queued job at once; a running one when its engine next checks.

    Returns (job, notify) where ``notify`` is True when a worker should be told.
    """
    job = get_job(conn, principal, job_id)
    job_id = job["id"]
    if states.is_terminal(job["status"]):
        raise ApiError("job_not_cancelable", f"the job is already {job['status']}")
    if job["status"] == states.QUEUED:
        now = time.time()
        values = {
            "status": states.CANCELLED,
            "completed_at": now,
            "error_code": "cancelled",
            "error_message": "cancelled by the owner",
            "charged": 0,
        }
        updated = conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status == states.QUEUED)
            .values(**values)
        )
        if updated.rowcount == 1:
            job.update(values)
            outbox.enqueue(conn, job, "failed")
            ledger.settle(conn, job["account_id"], job_id, job["price"], 1, 0)
            return job, False
        job = get_job(conn, principal, job_id)  # a worker claimed it meanwhile
    conn.execute(jobs.update().where(jobs.c.id == job_id).values(cancel_requested=True))
    job["cancel_requested"] = True
    return job, True
