"""Rows to the JSON clients see (Apiframe v2's job object), and times to ISO-8601."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from castframe.jobs.record import Job
from castframe.store import states


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def credit_cost(job: Job) -> int:
    """Apiframe's ``creditCost``: the price while held, the charge once done, 0 if not charged."""
    if job.status in (states.FAILED, states.CANCELLED):
        return 0
    if job.status == states.COMPLETED:
        return int(job.charged or 0)
    return job.price


IMAGE_FACTS = ("width", "height", "seed", "prompt", "contentType", "consistency", "metadata")
"""What Castframe knows of each output beside its URL: ``result.imageDetails``, an extension."""


def result_view(
    result: dict[str, Any] | None, url_for: Callable[[str], str]
) -> dict[str, Any] | None:
    """Apiframe's image result: ``images`` is a list of URL strings (signed at read time).

    Castframe's per-image facts go to ``imageDetails``, in the same order, so a client written
    for Apiframe reads ``images[i]`` as a URL and never sees a changed field.
    """
    if not result:
        return None
    stored = result.get("images", [])
    return {
        "images": [url_for(image["key"]) for image in stored],
        "imageDetails": [
            {name: image[name] for name in IMAGE_FACTS if name in image} for image in stored
        ],
        **{k: v for k, v in result.items() if k != "images"},
    }


def job_view(
    job: Job,
    url_for: Callable[[str], str],
    expired_url_for: Callable[[str], str] | None = None,
    expired: bool | None = None,
) -> dict[str, Any]:
    """Apiframe's job object, plus Castframe's extensions after its own fields.

    An expired job (its files deleted by retention) keeps its ``result.images`` list, so that
    clients reading URL strings do not break, with links from ``expired_url_for``: this
    server's own signed ``/v2/files`` links, which answer ``410 output_expired`` (a presigned
    S3 URL would answer the bucket's 404 or 403). ``expired``: whether retention's period has
    passed (the caller's clock), which may be before a sweep marks the row.
    """
    expired = job.expired if expired is None else expired
    links = expired_url_for if expired and expired_url_for is not None else url_for
    return {
        "id": job.id,
        "status": job.status,
        "model": job.model,
        "progress": 100 if job.status == states.COMPLETED else int(job.progress or 0),
        "result": result_view(job.result, links),
        "error": (job.error_message or job.error_code) if job.error_code else None,
        "creditCost": credit_cost(job),
        "webhookStatus": job.webhook_status,
        "createdAt": iso(job.created_at),
        "completedAt": iso(job.completed_at),
        "expired": expired,
        "input": job.input,
        # Castframe's extensions.
        "errorCode": job.error_code,
        "startedAt": iso(job.started_at),
        "engine": job.engine,
        "mode": job.mode,
    }
