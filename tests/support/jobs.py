"""Reading job objects in tests: Apiframe's URL-string images joined with Castframe's facts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from castframe.jobs import ledger

if TYPE_CHECKING:
    from tests.conftest import Api


def images_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Each output as one dict: its URL (``result.images[i]``) and its facts
    (``result.imageDetails[i]``), so a test can read ``image["url"]`` and ``image["seed"]``."""
    result = job["result"] or {}
    urls, details = result.get("images", []), result.get("imageDetails", [])
    assert len(urls) == len(details), result
    assert all(isinstance(url, str) for url in urls), urls
    return [{"url": url, **facts} for url, facts in zip(urls, details, strict=True)]


def entries(api: Api, job_id: str) -> dict[str, int]:
    """The job's ledger entries by kind (hold, capture, release)."""
    with api.services.db.read() as conn:
        return ledger.job_entries(conn, job_id)
