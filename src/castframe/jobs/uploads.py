"""Uploaded images (multipart uploads and inline data URIs), stored once per account.

An upload's ``url`` is this server's signed file URL, valid until the upload's ``expiresAt``.
Given back in an image field, it is recognised by its signature (media/sources.py) and read
from storage as ``upload://<id>``: never fetched over the network, so it works on a server
whose outbound fetches are locked down or that sits on a private address.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from castframe.jobs.views import iso
from castframe.media.images import DecodedImage
from castframe.media.signing import signed_url
from castframe.media.sources import UPLOAD_SCHEME, UPLOADS_PREFIX
from castframe.media.storage import Storage, discard
from castframe.store.db import insert_rows
from castframe.store.tables import uploads

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class PlannedUpload:
    """An upload's row and bytes, before anything is written: a submission stores the files
    of its inline images only once its job is admitted."""

    row: dict[str, Any]
    data: bytes


def plan_upload(
    account_id: str, mode: str, image: DecodedImage, ttl: float | None = None
) -> PlannedUpload:
    """The row to insert and the bytes to store (pure). ``ttl`` (seconds) sets
    ``expires_at``; None keeps the upload as long as what uses it (inline images of a job, a
    saved character's image)."""
    upload_id = str(uuid.uuid4())
    key = f"{UPLOADS_PREFIX}{account_id}/{upload_id}.{EXTENSIONS[image.content_type]}"
    now = time.time()
    row = {
        "id": upload_id,
        "account_id": account_id,
        "mode": mode,
        "storage_key": key,
        "content_type": image.content_type,
        "size": len(image.raw),
        "width": image.width,
        "height": image.height,
        "created_at": now,
        "expires_at": None if ttl is None else now + ttl,
    }
    return PlannedUpload(row, image.raw)


def store_upload(storage: Storage, planned: PlannedUpload) -> dict[str, Any]:
    """Write the planned upload's bytes; returns its row (to insert in the caller's
    transaction)."""
    storage.put(planned.row["storage_key"], planned.data, planned.row["content_type"])
    return planned.row


@contextlib.contextmanager
def stored_upload(storage: Storage, planned: PlannedUpload) -> Iterator[dict[str, Any]]:
    """Store the planned upload's file for the ``with`` block that writes its row: if the
    block fails (the database is out of space, unreachable, the character refused), the file
    is removed again, so a failed request leaves neither a row nor a file. A failing store
    raises the storage's StorageError before the block runs."""
    row = store_upload(storage, planned)
    try:
        yield row
    except BaseException:
        discard(storage, [row["storage_key"]])
        raise


def insert_upload(conn: sa.Connection, row: dict[str, Any]) -> None:
    insert_uploads(conn, [row])


def insert_uploads(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, uploads, rows)


Owner = tuple[str, str]
"""(account id, mode): an upload (or character) belongs to one account in one mode; a test
key never sees a live one, nor a live key a test one."""


def existing_uploads(conn: sa.Connection, wanted: set[tuple[Owner, str]]) -> set[tuple[Owner, str]]:
    """Which of these (owner, upload id) pairs exist, in one query."""
    rows = conn.execute(
        _UPLOADS_AMONG, {"ids": sorted({upload_id for _owner, upload_id in wanted})}
    ).all()
    found = {((str(account), str(mode)), str(upload_id)) for upload_id, account, mode in rows}
    return found & wanted


_UPLOADS_AMONG = sa.select(uploads.c.id, uploads.c.account_id, uploads.c.mode).where(
    uploads.c.id.in_(sa.bindparam("ids", expanding=True))
)


def get_upload(conn: sa.Connection, owner: Owner, upload_id: str) -> dict[str, Any] | None:
    account_id, mode = owner
    row = (
        conn.execute(_GET_UPLOAD, {"upload_id": upload_id, "account_id": account_id, "mode": mode})
        .mappings()
        .first()
    )
    return dict(row) if row else None


_GET_UPLOAD = sa.select(uploads).where(
    uploads.c.id == sa.bindparam("upload_id"),
    uploads.c.account_id == sa.bindparam("account_id"),
    uploads.c.mode == sa.bindparam("mode"),
)


def upload_url(row: dict[str, Any], base_url: str, secret: bytes) -> str:
    """The upload's own signed URL (``/v2/files/...``), valid until it expires."""
    ttl = max(1, int(float(row["expires_at"]) - time.time()))
    return signed_url(base_url, secret, row["storage_key"], ttl)


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
