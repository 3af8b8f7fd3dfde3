"""Uploaded images (multipart uploads and inline data URIs), stored once per account.

An upload's ``url`` is this server's signed file URL, valid until the upload's ``expiresAt``.
Given back in an image field, it is recognised by its signature (``own_upload``) and read
from storage as ``upload://<id>``: never fetched over the network, so it works on a server
whose outbound fetches are locked down or that sits on a private address.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa

from castframe.errors import field_error
from castframe.jobs.views import iso
from castframe.media.images import DecodedImage
from castframe.media.signing import own_file, signed_url
from castframe.media.storage import Storage
from castframe.store.db import insert_rows
from castframe.store.tables import uploads

UPLOAD_SCHEME = "upload://"
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


UPLOADS_PREFIX = "uploads/"


def new_upload(
    storage: Storage, account_id: str, image: DecodedImage, ttl: float | None = None
) -> dict[str, Any]:
    """Write the bytes to storage and return the row to insert (in the caller's transaction).

    ``ttl`` (seconds) sets ``expires_at``; None keeps the upload as long as what uses it
    (inline images of a job, a saved character's image).
    """
    upload_id = str(uuid.uuid4())
    key = f"{UPLOADS_PREFIX}{account_id}/{upload_id}.{EXTENSIONS[image.content_type]}"
    storage.put(key, image.raw, image.content_type)
    now = time.time()
    return {
        "id": upload_id,
        "account_id": account_id,
        "storage_key": key,
        "content_type": image.content_type,
        "size": len(image.raw),
        "width": image.width,
        "height": image.height,
        "created_at": now,
        "expires_at": None if ttl is None else now + ttl,
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


def upload_url(row: dict[str, Any], base_url: str, secret: bytes) -> str:
    """The upload's own signed URL (``/v2/files/...``), valid until it expires."""
    ttl = max(1, int(float(row["expires_at"]) - time.time()))
    return signed_url(base_url, secret, row["storage_key"], ttl)


def own_upload(source: str, secret: bytes, field_path: str) -> str | None:
    """``upload://<id>`` for an upload URL this server signed; None for any other source.

    An expired one is refused here (400 upload_expired), at submission; whether it is the
    caller's is checked with the other references, inside the submission's transaction.
    """
    found = own_file(source, secret)
    if found is None or not found.key.startswith(UPLOADS_PREFIX):
        return None
    if found.verdict == "expired":
        raise field_error(
            "upload_expired", field_path, "this upload URL has expired; upload the file again"
        )
    upload_id = found.key.rsplit("/", 1)[-1].split(".", 1)[0]
    return UPLOAD_SCHEME + upload_id


def upload_view(row: dict[str, Any], url: str) -> dict[str, Any]:
    """Apiframe's Upload, plus Castframe's ``reference``, ``width`` and ``height``."""
    return {
        "id": row["id"],
        "url": url,
        "kind": "image",
        "contentType": row["content_type"],
        "byteSize": row["size"],
        "expiresAt": iso(row["expires_at"]),
        "reference": UPLOAD_SCHEME + row["id"],
        "width": row["width"],
        "height": row["height"],
    }
