"""``POST /v2/uploads``: a multipart image upload, usable as ``upload://<id>`` in any image field."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from castframe.api.deps import authenticate, get_services
from castframe.errors import ApiError
from castframe.jobs.accounts import Principal
from castframe.jobs.uploads import insert_upload, new_upload, upload_view
from castframe.media.images import ImageRejected, decode_image

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
        raise ApiError(
            "payload_too_large", f"uploads are limited to {settings.max_image_bytes} bytes"
        )
    form = await request.form(max_files=1, max_fields=5)
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise ApiError(
            "validation_error",
            "the multipart field `file` is missing",
            details=[{"field": "file", "message": "required"}],
        )
    data = await file.read(settings.max_image_bytes + 1)
    try:
        image = decode_image(
            data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
    except ImageRejected as exc:
        code = "payload_too_large" if exc.code == "payload_too_large" else "invalid_image"
        raise ApiError(code, str(exc), details=[{"field": "file", "message": str(exc)}]) from exc

    def store() -> dict[str, Any]:
        row = new_upload(services.storage, principal.account_id, image)
        with services.db.write() as conn:
            insert_upload(conn, row)
        return row

    return upload_view(await run_in_threadpool(store))
