"""Uploaded images (multipart uploads and inline data URIs), stored once per account."""

from __future__ import annotations

import secrets
import time
from typing import Any

import sqlalchemy as sa

from castframe.media.images import DecodedImage
from castframe.media.storage import Storage
from castframe.store.tables import uploads

UPLOAD_SCHEME = "upload://"
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def new_upload(storage: Storage, account_id: str, image: DecodedImage) -> dict[str, Any]:
    """Write the bytes to storage and return the row to insert (in the caller's transaction)."""
    upload_id = "upl_" + secrets.token_hex(12)
    key = f"uploads/{account_id}/{upload_id}.{EXTENSIONS[image.content_type]}"
    storage.put(key, image.raw, image.content_type)
    return {
        "id": upload_id,
        "account_id": account_id,
        "storage_key": key,
        "content_type": image.content_type,
        "size": len(image.raw),
        "width": image.width,
        "height": image.height,
        "created_at": time.time(),
    }


def insert_upload(conn: sa.Connection, row: dict[str, Any]) -> None:
    conn.execute(uploads.insert().values(**row))


def get_upload(conn: sa.Connection, account_id: str, upload_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(_GET_UPLOAD, {"upload_id": upload_id, "account_id": account_id})
        .mappings()
        .first()
    )
    return dict(row) if row else None


_GET_UPLOAD = sa.select(uploads).where(
    uploads.c.id == sa.bindparam("upload_id"), uploads.c.account_id == sa.bindparam("account_id")
)


def upload_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "reference": UPLOAD_SCHEME + row["id"],
        "contentType": row["content_type"],
        "size": row["size"],
        "width": row["width"],
        "height": row["height"],
    }
