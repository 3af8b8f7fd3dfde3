"""Uploaded images (multipart uploads and inline data URIs), stored once per account."""

from __future__ import annotations

import secrets
import time
from typing import Any

import sqlalchemy as sa

from castframe.media.images import DecodedImage
from castframe.media.storage import Storage
from castframe.store.db import insert_rows
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
    insert_uploads(conn, [row])


def insert_uploads(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, uploads, rows)


def existing_uploads(conn: sa.Connection, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (account, upload id) pairs exist, in one query."""
    rows = conn.execute(
        _UPLOADS_AMONG, {"ids": sorted({upload_id for _account, upload_id in wanted})}
    ).all()
    return {(str(account), str(upload_id)) for upload_id, account in rows} & wanted


_UPLOADS_AMONG = sa.select(uploads.c.id, uploads.c.account_id).where(
    uploads.c.id.in_(sa.bindparam("ids", expanding=True))
)


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
