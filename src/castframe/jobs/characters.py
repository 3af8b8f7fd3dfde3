"""Saved characters: a reference image with exactly one clear face, stored once per account.

The image is stored as an upload (so jobs load it like any ``upload://`` reference) and its
face descriptor is cached, so jobs that use ``character_id`` neither refetch the image nor
recompute the reference's descriptor. Deleting (jobs/character_deletion.py) refuses later
submissions and the image's reference at once, and removes the image and the descriptor as
soon as no queued or running job needs them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from castframe.jobs.uploads import Owner
from castframe.jobs.views import iso
from castframe.store.tables import characters


@dataclass(frozen=True)
class FaceCheck:
    """The one clear face of a character image (dispatch/character_faces.py checks it)."""

    box: tuple[int, int, int, int]
    descriptor: list[float] | None


def insert_character(
    conn: sa.Connection, owner: Owner, name: str, upload_id: str, check: FaceCheck
) -> dict[str, Any]:
    account_id, mode = owner
    row = {
        "id": "chr_" + secrets.token_hex(10),
        "account_id": account_id,
        "mode": mode,
        "name": name,
        "upload_id": upload_id,
        "face_box": list(check.box),
        "descriptor": check.descriptor,
        "created_at": time.time(),
        "deleted_at": None,
    }
    conn.execute(characters.insert().values(**row))
    return row


def _owned_by(owner: Owner) -> sa.ColumnElement[bool]:
    return sa.and_(characters.c.account_id == owner[0], characters.c.mode == owner[1])


def get_character(
    conn: sa.Connection, owner: Owner, character_id: str, include_deleted: bool = False
) -> dict[str, Any] | None:
    query = sa.select(characters).where(characters.c.id == character_id, _owned_by(owner))
    if not include_deleted:
        query = query.where(characters.c.deleted_at.is_(None))
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def list_characters(conn: sa.Connection, owner: Owner) -> list[dict[str, Any]]:
    query = sa.select(characters).where(_owned_by(owner), characters.c.deleted_at.is_(None))
    return [
        dict(r) for r in conn.execute(query.order_by(characters.c.created_at.desc())).mappings()
    ]


def character_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "characterId": row["id"],
        "name": row["name"],
        "reference": f"upload://{row['upload_id']}",
        "face": {"box": row["face_box"]},
        "descriptorCached": row["descriptor"] is not None,
        "createdAt": iso(row["created_at"]),
    }
