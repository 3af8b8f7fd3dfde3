"""Faces of saved characters: the one-clear-face check at creation, and the reference
descriptor a job is scored against (cached for saved characters, computed otherwise)."""

from __future__ import annotations

import numpy as np

from castframe.errors import ApiError
from castframe.faces.identity import CLEAR_FACE_SCORE, FaceModel
from castframe.jobs.characters import FaceCheck, get_character
from castframe.jobs.uploads import Owner
from castframe.media.images import DecodedImage
from castframe.store.db import Database

MIN_FACE_SIDE = 48


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


class CharacterDescriptors:
    """The reference descriptor of a job: cached for saved characters, computed otherwise."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def descriptor(
        self, owner: Owner, character_id: str | None, reference: np.ndarray, model: FaceModel
    ) -> np.ndarray | None:
        if character_id:
            with self.db.read() as conn:
                row = get_character(conn, owner, character_id, include_deleted=True)
            if row and row["descriptor"]:
                return np.asarray(row["descriptor"], dtype=np.float64)
        face = model.main_face(reference)
        return face.descriptor if face is not None else None
