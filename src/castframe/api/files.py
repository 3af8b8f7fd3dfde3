"""``GET /v2/files/...``: stored images behind expiring HMAC-signed URLs (no API key needed).

Uploads' URLs are always of this form, whatever the storage; on S3 the answer is a redirect
to a short-lived presigned URL of the object. An output deleted by retention answers ``410
output_expired`` (expired jobs' ``result.images`` are such links on every storage). Storage
that cannot be read answers 503 storage_unavailable (api/errors.py), found before the answer
starts: the file's ``stat`` is taken here and handed to the response. A read that fails once
the bytes are flowing can only cut the response short.
"""

from __future__ import annotations

from stat import S_ISREG

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from castframe.api.deps import get_services
from castframe.errors import ApiError
from castframe.media.signing import EXPIRED_PREFIX, check_signature
from castframe.media.storage import LocalStorage

router = APIRouter(tags=["files"])

REDIRECT_TTL = 300
"""Seconds the presigned URL of a redirect lives: long enough to follow it."""
OUTPUTS_PREFIX = "outputs/"
"""Storage keys of job outputs (dispatch/worker.py: ``output_key``)."""
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}


@router.get("/v2/files/{key:path}", summary="Download a stored image by signed URL")
def get_file(
    key: str, request: Request, expires: int = Query(...), signature: str = Query(...)
) -> Response:
    services = get_services(request)
    verdict = check_signature(services.settings.signing_key, key, expires, signature)
    if verdict == "invalid":
        raise ApiError("invalid_signature")
    if verdict == "expired":
        raise ApiError("url_expired", "this link has expired; GET the job again for a fresh one")
    if key.startswith(EXPIRED_PREFIX):  # an expired job's link: gone, whether swept yet or not
        raise ApiError("output_expired")
    storage = services.storage
    if not isinstance(storage, LocalStorage):
        if not storage.exists(key):
            raise missing(key)
        return RedirectResponse(storage.url(key, REDIRECT_TTL), status_code=307)
    stat = storage.stat(key)
    if stat is None or not S_ISREG(stat.st_mode):
        raise missing(key)
    suffix = "." + key.rsplit(".", 1)[-1]
    return FileResponse(
        storage.path_for(key),
        media_type=CONTENT_TYPES.get(suffix, "image/png"),
        headers={"Cache-Control": "private, max-age=300"},
        stat_result=stat,
    )


def missing(key: str) -> ApiError:
    """The answer for a signed link whose file is not there. This server signed it, so an
    output existed: retention deleted it (or a lifecycle rule did), gone for good."""
    if key.startswith(OUTPUTS_PREFIX):
        return ApiError("output_expired")
    return ApiError("not_found", "no such file")
