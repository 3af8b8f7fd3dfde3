"""Admitting validated submissions and writing their jobs, in the caller's transaction.

``insert_many`` (a group commit's batch, of one submission or many: jobs/submitter.py) checks
the references each submission names, admit it (its active-job slot and credit hold: one
conditional UPDATE of the account row, jobs/admission.py) and write what an admitted job
needs: its inline images' upload rows, its job row (the job store) and its hold. A refused
submission writes nothing, because every check and the admission come first. The files of
inline images are stored before the transaction and discarded when it refuses or fails
(``store_inline_images``, ``discard_inline_images``).
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from castframe.catalog.base import SAVED_CHARACTER_PARAM
from castframe.config import Settings
from castframe.errors import ApiError, field_error
from castframe.jobs import admission, ledger, sizing
from castframe.jobs import store as job_store
from castframe.jobs.accounts import Principal
from castframe.jobs.characters import get_character
from castframe.jobs.record import Job
from castframe.jobs.uploads import (
    Owner,
    existing_uploads,
    get_upload,
    insert_uploads,
    store_upload,
)
from castframe.jobs.validation import Submission
from castframe.media.sources import UPLOAD_SCHEME
from castframe.media.storage import Storage
from castframe.store import states

log = logging.getLogger("castframe.submission")


def insert_many(
    conn: sa.Connection,
    pending: Sequence[tuple[Principal, Submission]],
    settings: Settings,
) -> list[Job | ApiError]:
    """Admit and write submissions in one transaction (see store/group_commit.py); a
    single submission is a batch of one.

    Returns each one's job or the ApiError that refused it. Accounts are admitted in a fixed
    order (by id; each account's submissions in arrival order), so two batches that lock the
    same account rows cannot deadlock. An account's submissions that all fit are admitted by
    one UPDATE (``admission.admit_all``), else one by one.
    """
    outcomes: list[dict[str, Any] | ApiError | None] = [None] * len(pending)
    known = _uploads_of(conn, pending)
    job_store.announce_jobs(conn)
    admitted: list[tuple[int, Submission, dict[str, Any]]] = []
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
                admitted.append((index, pending[index][1], outcome))
    written = write_jobs(conn, [(submission, row) for _i, submission, row in admitted])
    results: list[Job | ApiError | None] = [
        outcome if isinstance(outcome, ApiError) else None for outcome in outcomes
    ]
    for (index, _submission, _row), job in zip(admitted, written, strict=True):
        results[index] = job
    return [result for result in results if result is not None]


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
) -> set[tuple[Owner, str]]:
    """(owner, upload id) of the uploads these submissions name that exist: one query."""
    wanted = {
        (principal.owner, upload_id)
        for principal, submission in pending
        for _path, upload_id in submission.upload_refs
    }
    return existing_uploads(conn, wanted) if wanted else set()


def check_references(
    conn: sa.Connection,
    principal: Principal,
    submission: Submission,
    known_uploads: set[tuple[Owner, str]],
) -> None:
    """The saved character and the uploads a submission names must be the caller's (400s)."""
    spec = submission.spec
    character_id = submission.params.get(SAVED_CHARACTER_PARAM)
    if character_id and spec.saved_character_field:
        character = get_character(conn, principal.owner, character_id)
        if character is None:
            raise field_error(
                "character_not_found",
                f"{spec.params_key}.{SAVED_CHARACTER_PARAM}",
                f"no character {character_id!r} in this account (deleted?)",
            )
        submission.params[spec.saved_character_field] = UPLOAD_SCHEME + character["upload_id"]
    for path, upload_id in submission.upload_refs:
        if (principal.owner, upload_id) in known_uploads:
            continue
        if path in submission.signed_refs:  # a signed URL is a public URL: used as one
            submission.set_source(path, submission.signed_refs[path])
            continue
        raise field_error("upload_not_found", path, f"no upload {upload_id!r} in this account")
    if submission.size_limit is not None and not submission.params.get("width"):
        _size_from_upload(conn, principal, submission, submission.size_limit)


def _size_from_upload(
    conn: sa.Connection, principal: Principal, submission: Submission, max_pixels: int
) -> None:
    """A tool job whose input is an upload: its output size (and so its price) from the
    upload's row, and the output pixel limit (jobs/sizing.py)."""
    spec = submission.spec
    path = f"{spec.params_key}.{sizing.input_field(spec)}"
    upload_id = next((ref for ref_path, ref in submission.upload_refs if ref_path == path), None)
    if upload_id is None:
        return
    sizing.apply_upload_size(
        spec, submission.params, get_upload(conn, principal.owner, upload_id), max_pixels
    )
    if principal.mode == "live":
        submission.price = spec.price(submission.params, submission.price_overrides)


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
        "expired": False,
        "queue_key": queue_key,
    }


def write_jobs(
    conn: sa.Connection, admitted: Sequence[tuple[Submission, dict[str, Any]]]
) -> list[Job]:
    """Admitted jobs' rows: their inline images' uploads, the jobs, their holds (a statement
    per table)."""
    if not admitted:
        return []
    uploads = [
        planned.row for submission, _row in admitted for planned in submission.inline_uploads
    ]
    if uploads:
        insert_uploads(conn, uploads)
    written = job_store.insert_jobs(conn, [row for _submission, row in admitted])
    holds = [(job.account_id, job.id, job.price) for job in written if job.price]
    if holds:
        ledger.record_holds(conn, holds)
    return written


def store_inline_images(storage: Storage, submissions: Sequence[Submission]) -> None:
    """Write the files of the submissions' inline images, before their transaction (so no
    lock is held during storage I/O); ``discard_inline_images`` removes those of the
    submissions that were then refused, or whose transaction failed."""
    for submission in submissions:
        for planned in submission.inline_uploads:
            store_upload(storage, planned)


def discard_inline_images(storage: Storage, submissions: Sequence[Submission]) -> None:
    """Remove stored inline images that no committed job needs (best effort: a file left
    behind is an orphan, never an error for the client)."""
    for submission in submissions:
        for planned in submission.inline_uploads:
            try:
                storage.delete(planned.row["storage_key"])
            except Exception:
                log.warning("could not remove %s", planned.row["storage_key"], exc_info=True)
