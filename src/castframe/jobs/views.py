"""Rows to the JSON clients see (Apiframe v2's job object), and times to ISO-8601."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from castframe.jobs import states


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def credit_cost(job: dict[str, Any]) -> int:
    """Apiframe's ``creditCost``: the price while held, the charge once done, 0 if not charged."""
    if job["status"] in (states.FAILED, states.CANCELED):
        return 0
    if job["status"] == states.COMPLETED:
        return int(job["charged"] or 0)
    return int(job["price"])


def result_view(
    result: dict[str, Any] | None, url_for: Callable[[str], str]
) -> dict[str, Any] | None:
    if not result:
        return None
    images = []
    for image in result.get("images", []):
        shown = {k: v for k, v in image.items() if k != "key"}
        shown = {"url": url_for(image["key"]), **shown}
        images.append(shown)
    return {"images": images, **{k: v for k, v in result.items() if k != "images"}}


def job_view(job: dict[str, Any], url_for: Callable[[str], str]) -> dict[str, Any]:
    error = None
    if job["error_code"]:
        error = {"code": job["error_code"], "message": job["error_message"] or ""}
    return {
        "id": job["id"],
        "status": job["status"],
        "model": job["model"],
        "progress": 100 if job["status"] == states.COMPLETED else int(job["progress"] or 0),
        "createdAt": iso(job["created_at"]),
        "startedAt": iso(job["started_at"]),
        "completedAt": iso(job["completed_at"]),
        "input": job["input"],
        "result": result_view(job["result"], url_for),
        "error": error,
        "creditCost": credit_cost(job),
        "webhookStatus": job["webhook_status"],
        "engine": job["engine"],
        "mode": job["mode"],
    }
