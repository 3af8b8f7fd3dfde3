"""``POST /v2/uploads``: a multipart image upload; its ``url`` works in any image field."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from castframe.api.account_limits import take_account_token
from castframe.api.deps import authenticate, get_services
from castframe.api.generate import body_deadline
from castframe.errors import ApiError, field_error
from castframe.jobs.accounts import Principal
from castframe.jobs.quota import check_quota
from castframe.jobs.uploads import (
    insert_upload,
    plan_upload,
    stored_upload,
    upload_url,
    upload_view,
)
from castframe.media.images import ImageRejected, decode_image, image_error_code

router = APIRouter(tags=["uploads"])


@router.post("/v2/uploads", status_code=201, summary="Upload an image (multipart field `file`)")
async def create_upload(
    request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    services = get_services(request)
    settings = services.settings
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError("unsupported_media_type", "send multipart/form-data with a `file` field")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_image_bytes + 64 * 1024:
        raise field_error(
            "image_too_large", "file", f"uploads are limited to {settings.max_image_bytes} bytes"
        )
    # The account's upload token before the body is read: a client over its rate costs
    # neither the transfer nor the parse.
    take_account_token(request, principal, "upload_limiter", "uploads")
    async with body_deadline(settings.body_read_timeout):
        form = await request.form(max_files=1, max_fields=5)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise field_error("validation_error", "file", "the multipart field `file` is missing")
        data = await file.read(settings.max_image_bytes + 1)

    def store() -> dict[str, Any]:
        # Decoding is CPU work: in this thread, never on the event loop.
        try:
            image = decode_image(
                data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            )
        except ImageRejected as exc:
            raise field_error(image_error_code(exc), "file", str(exc)) from exc
        # A storage failure is 507 storage_full or 503 storage_unavailable (api/errors.py);
        # a row that cannot be written takes its file with it.
        planned = plan_upload(
            principal.account_id,
            principal.mode,
            image,
            ttl=settings.upload_retention_hours * 3600,
        )
        with services.db.read() as conn:
            check_quota(
                conn, principal.account_id, planned.row["size"], settings.upload_quota_bytes
            )
        with stored_upload(services.storage, planned) as row, services.db.write() as conn:
            insert_upload(conn, row)
        return row

    row = await run_in_threadpool(store)
    return upload_view(row, upload_url(row, settings.resolved_public_url, settings.signing_key))
