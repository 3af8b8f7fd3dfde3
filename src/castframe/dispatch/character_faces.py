"""Faces of saved characters: the one-clear-face check at creation, and the reference
descriptor a job is scored against, computed once per picture.

Where a job's reference descriptor comes from, cheapest first: a saved character's stored
descriptor (computed when it was created); this process's cache by the picture's content
(faces/cache.py); the sidecar file stored beside the reference's upload (``<upload key>``
plus ``.face.json``, written the first time any worker computes it, so restarts and other
workers skip the work too); and only then the face model.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from castframe.errors import ApiError
from castframe.faces.cache import DescriptorCache, ReferenceFace, content_key, dump_face, load_face
from castframe.faces.identity import CLEAR_FACE_SCORE, FaceFinder, FaceModel
from castframe.jobs.characters import FaceCheck, get_character
from castframe.jobs.uploads import Owner
from castframe.media.images import DecodedImage
from castframe.media.storage import Storage
from castframe.store.db import Database

log = logging.getLogger("castframe.faces")

SIDECAR_SUFFIX = ".face.json"

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


def sidecar_key(upload_key: str) -> str:
    """Where an upload's reference descriptor is kept: beside its file, so whatever keeps or
    removes the upload's files (a prefix, a lifecycle rule) treats its sidecar alike."""
    return upload_key + SIDECAR_SUFFIX


class CharacterDescriptors:
    """The reference descriptor of a job, computed at most once per picture (module doc)."""

    def __init__(
        self, db: Database, storage: Storage | None = None, cache: DescriptorCache | None = None
    ) -> None:
        self.db = db
        self.storage = storage
        self.cache = cache if cache is not None else DescriptorCache()
        self.computed = 0
        """How many descriptors the face model computed (the rest came from a cache)."""
        self._guard = threading.Lock()
        self._computing: dict[str, threading.Lock] = {}
        """One lock per picture being looked up: jobs of one reference post-processed at the
        same moment wait for the first one's computation instead of repeating it."""

    def descriptor(
        self,
        owner: Owner,
        character_id: str | None,
        reference: DecodedImage | np.ndarray,
        model: FaceFinder,
        upload_key: str | None = None,
    ) -> np.ndarray | None:
        """The reference's main-face descriptor, or None when it has no face. ``upload_key``
        is the storage key of the upload the reference was read from (None for outside
        URLs): its sidecar is read, and written after a computation."""
        if character_id:
            with self.db.read() as conn:
                row = get_character(conn, owner, character_id, include_deleted=True)
            if row and row["descriptor"]:
                return np.asarray(row["descriptor"], dtype=np.float64)
        if isinstance(reference, DecodedImage):
            pixels, raw = reference.pixels, reference.raw
        else:
            pixels, raw = reference, b""
        key = content_key(raw, pixels)
        found = self.cache.get(key)
        if found is not None:
            return found.descriptor
        with self._guard:
            lock = self._computing.setdefault(key, threading.Lock())
        try:
            with lock:
                found = self._look_up(key, pixels, model, upload_key)
        finally:
            with self._guard:
                self._computing.pop(key, None)
        return found.descriptor

    def _look_up(
        self, key: str, pixels: np.ndarray, model: FaceFinder, upload_key: str | None
    ) -> ReferenceFace:
        """Memory (filled meanwhile by another job?), the sidecar, then the model."""
        found = self.cache.get(key)
        if found is None and upload_key is not None:
            found = self._read_sidecar(key, upload_key)
        if found is None:
            face = model.main_face(pixels)
            with self._guard:
                self.computed += 1
            found = ReferenceFace(face.descriptor if face is not None else None)
            if upload_key is not None:
                self._write_sidecar(key, upload_key, found)
        self.cache.put(key, found)
        return found

    def _read_sidecar(self, key: str, upload_key: str) -> ReferenceFace | None:
        """The stored descriptor, or None: a missing, unreadable or stale sidecar (another
        model version, another picture) is only a cache miss."""
        if self.storage is None:
            return None
        try:
            data = self.storage.get(sidecar_key(upload_key))
        except Exception:  # missing (the usual first time) or storage trouble: recompute
            return None
        return load_face(key, data)

    def _write_sidecar(self, key: str, upload_key: str, face: ReferenceFace) -> None:
        """Best effort: a failed write costs a later worker one computation, never a job."""
        if self.storage is None:
            return
        try:
            self.storage.put(sidecar_key(upload_key), dump_face(key, face), "application/json")
        except Exception as exc:
            log.warning("could not store the reference descriptor of %s: %s", upload_key, exc)
