"""Saved characters: a reference image with exactly one clear face, stored once per account.

The image is stored as an upload (so jobs load it like any ``upload://`` reference) and its
face descriptor is cached, so jobs that use ``character_id`` neither refetch the image nor
recompute the reference's descriptor. Deleting is a soft delete: later submissions are
refused, jobs already accepted (and finished ones) keep working.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from castframe.errors import ApiError
from castframe.faces.identity import CLEAR_FACE_SCORE, FaceModel
from castframe.jobs.views import iso
from castframe.media.images import DecodedImage
from castframe.store.db import Database
from castframe.store.tables import characters

MIN_FACE_SIDE = 48


@dataclass(frozen=True)
class FaceCheck:
    box: tuple[int, int, int, int]
    descriptor: list[float] | None


def check_single_face(image: DecodedImage, model: FaceModel | None) -> FaceCheck:
    """Exactly one clear face, or an ApiError that says why not."""
    if model is not None:
        faces = [face for face in model.faces(image.pixels) if face.score >= CLEAR_FACE_SCORE]
        boxes = [face.box for face in faces]
    else:
        from castframe.engines.sandbox.subject import detect_faces

        boxes = detect_faces(image.pixels)
        faces = []
    if not boxes:
        raise ApiError(
            "no_face_found",
            "no face was found in the image; use a clear, frontal photo of the character",
            details={"image": ["no face"]},
        )
    if len(boxes) > 1 and boxes[1][2] * boxes[1][3] > 0.25 * boxes[0][2] * boxes[0][3]:
        raise ApiError(
            "multiple_faces",
            f"{len(boxes)} faces were found; crop the image to one",
            details={"image": [f"{len(boxes)} faces"]},
        )
    box = boxes[0]
    if min(box[2], box[3]) < MIN_FACE_SIDE:
        raise ApiError(
            "face_too_small",
            f"the face is {box[2]}x{box[3]} pixels; at least "
            f"{MIN_FACE_SIDE}x{MIN_FACE_SIDE} is needed",
            details={"image": ["face too small"]},
        )
    descriptor = [float(v) for v in faces[0].descriptor] if faces else None
    return FaceCheck(box=box, descriptor=descriptor)


def insert_character(
    conn: sa.Connection, account_id: str, name: str, upload_id: str, check: FaceCheck
) -> dict[str, Any]:
    row = {
        "id": "chr_" + secrets.token_hex(10),
        "account_id": account_id,
        "name": name,
        "upload_id": upload_id,
        "face_box": list(check.box),
        "descriptor": check.descriptor,
        "created_at": time.time(),
        "deleted_at": None,
    }
    conn.execute(characters.insert().values(**row))
    return row


def get_character(
    conn: sa.Connection, account_id: str, character_id: str, include_deleted: bool = False
) -> dict[str, Any] | None:
    query = sa.select(characters).where(
        characters.c.id == character_id, characters.c.account_id == account_id
    )
    if not include_deleted:
        query = query.where(characters.c.deleted_at.is_(None))
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def list_characters(conn: sa.Connection, account_id: str) -> list[dict[str, Any]]:
    query = sa.select(characters).where(
        characters.c.account_id == account_id, characters.c.deleted_at.is_(None)
    )
    return [
        dict(r) for r in conn.execute(query.order_by(characters.c.created_at.desc())).mappings()
    ]


def delete_character(conn: sa.Connection, account_id: str, character_id: str) -> bool:
    result = conn.execute(
        characters.update()
        .where(
            characters.c.id == character_id,
            characters.c.account_id == account_id,
            characters.c.deleted_at.is_(None),
        )
        .values(deleted_at=time.time())
    )
    return result.rowcount == 1


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


class CharacterDescriptors:
    """The reference descriptor of a job: cached for saved characters, computed otherwise."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def descriptor(
        self, job: dict[str, Any], reference: np.ndarray, model: FaceModel
    ) -> np.ndarray | None:
        character_id = job["params"].get("character_id")
        if character_id:
            with self.db.read() as conn:
                row = get_character(conn, job["account_id"], character_id, include_deleted=True)
            if row and row["descriptor"]:
                return np.asarray(row["descriptor"], dtype=np.float64)
        face = model.main_face(reference)
        return face.descriptor if face is not None else None
