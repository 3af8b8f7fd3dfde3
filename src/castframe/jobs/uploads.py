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
from castframe.store.tables import characters, uploads

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
    """Which of these (owner, upload id) pairs exist, in one query.

    On PostgreSQL the rows found are held (``FOR KEY SHARE``) until the submission commits:
    the retention sweeper skips a held upload, and one it is deleting is waited for and then
    found gone (a 400 ``upload_not_found``), so a job is never queued with a deleted upload.
    """
    statement = _UPLOADS_AMONG_HELD if conn.dialect.name == "postgresql" else _UPLOADS_AMONG
    rows = conn.execute(
        statement,
        {"ids": sorted({upload_id for _owner, upload_id in wanted}), "now": time.time()},
    ).all()
    found = {((str(account), str(mode)), str(upload_id)) for upload_id, account, mode in rows}
    return found & wanted


_UPLOADS_AMONG = sa.select(uploads.c.id, uploads.c.account_id, uploads.c.mode).where(
    uploads.c.id.in_(sa.bindparam("ids", expanding=True)),
    # Past its expiry (a deleted character's image among them) an upload is no longer
    # usable, even before the sweeper has deleted it.
    sa.or_(uploads.c.expires_at.is_(None), uploads.c.expires_at > sa.bindparam("now")),
)
_UPLOADS_AMONG_HELD = _UPLOADS_AMONG.with_for_update(read=True, key_share=True)


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


# -- retention: what the sweeper (jobs/retention.py) expires and deletes --------------------

_CHARACTER_IMAGES = sa.select(characters.c.upload_id).where(characters.c.deleted_at.is_(None))
"""Saved characters' images are uploads that never expire (a character keeps its image);
a deleted character's image expires at its deletion (jobs/character_deletion.py)."""

DESCRIPTOR_SIDECAR_SUFFIX = ".face.json"
"""An upload's reference descriptor is stored beside it under its key plus this suffix
(dispatch/character_faces.py: ``SIDECAR_SUFFIX``); it goes when the upload goes."""


def usable_upload(conn: sa.Connection, owner: Owner, upload_id: str) -> bool:
    """Whether ``upload_id`` is one of ``owner``'s uploads that may still be named (not past
    its expiry: a deleted character's image is refused at once)."""
    return (owner, upload_id) in existing_uploads(conn, {(owner, upload_id)})


def files_of(storage_keys: list[str]) -> list[str]:
    """The storage keys to delete with these uploads: each file and its descriptor sidecar."""
    return [k for key in storage_keys for k in (key, key + DESCRIPTOR_SIDECAR_SUFFIX)]


def expire_inputs(conn: sa.Connection, owner: Owner, upload_ids: set[str], now: float) -> int:
    """Give these uploads of ``owner`` (a finished job's stored inline images) an expiry of
    ``now``, so the sweeper deletes them once no queued or running job uses them. Uploads
    that already expire (multipart uploads) and saved characters' images are left as they
    are."""
    if not upload_ids:
        return 0
    account_id, mode = owner
    moved = conn.execute(
        uploads.update()
        .where(
            uploads.c.id.in_(sorted(upload_ids)),
            uploads.c.account_id == account_id,
            uploads.c.mode == mode,
            uploads.c.expires_at.is_(None),
            uploads.c.id.not_in(_CHARACTER_IMAGES),
        )
        .values(expires_at=now)
    ).rowcount
    return int(moved or 0)


@dataclass(frozen=True)
class ExpiredUpload:
    id: str
    storage_key: str


def any_expired(conn: sa.Connection, now: float) -> bool:
    """Whether any upload is past its expiry (one index probe, no lock)."""
    query = sa.select(uploads.c.id).where(
        uploads.c.expires_at.is_not(None), uploads.c.expires_at <= now
    )
    return conn.execute(query.limit(1)).first() is not None


def expired_uploads(conn: sa.Connection, now: float, limit: int) -> list[ExpiredUpload]:
    """Uploads past their expiry (never a character's image), oldest first; on PostgreSQL
    locked until the commit (``FOR UPDATE SKIP LOCKED``: a submission holding one is
    skipped, and two sweepers take different ones)."""
    query = (
        sa.select(uploads.c.id, uploads.c.storage_key)
        .where(
            uploads.c.expires_at.is_not(None),
            uploads.c.expires_at <= now,
            uploads.c.id.not_in(_CHARACTER_IMAGES),
        )
        .order_by(uploads.c.expires_at, uploads.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [ExpiredUpload(str(i), str(key)) for i, key in conn.execute(query).all()]


def delete_uploads(conn: sa.Connection, upload_ids: set[str]) -> int:
    """Delete these uploads' rows (their files are queued for deletion by the caller)."""
    if not upload_ids:
        return 0
    # A deleted character goes with its image, and its face descriptor with it.
    conn.execute(
        characters.delete().where(
            characters.c.upload_id.in_(sorted(upload_ids)), characters.c.deleted_at.is_not(None)
        )
    )
    deleted = conn.execute(
        uploads.delete().where(
            uploads.c.id.in_(sorted(upload_ids)), uploads.c.id.not_in(_CHARACTER_IMAGES)
        )
    ).rowcount
    return int(deleted or 0)
