"""dlib's face pipeline: HOG detector, 5-point landmarks, ResNet 128-d descriptors.

Installed by the ``faces`` extra (``dlib-bin`` and ``face-recognition-models``). The model
files are located inside the ``face_recognition_models`` package directly: importing that
package needs ``pkg_resources``, which new setuptools no longer ships. The 68-point landmark
model in the same package is not used (its licence is non-commercial).

Two faces belong to the same person when their descriptors are closer than 0.6 (Euclidean),
the threshold dlib's model was trained for.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("castframe.faces")

SAME_PERSON_DISTANCE = 0.6
CLEAR_FACE_SCORE = 0.5
MAX_SIDE = 800


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]
    """x, y, width, height in the image's pixels."""
    descriptor: np.ndarray
    score: float = 1.0
    """The detector's confidence; weak detections (< CLEAR_FACE_SCORE) may be false positives."""

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


def models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models"
    return path if path.is_dir() else None


class FaceFinder(Protocol):
    """What scoring needs of a face model: ``FaceModel`` in this process, or
    ``faces/pool.py: FacePool`` in worker processes (the same answers)."""

    def faces(self, rgb: np.ndarray) -> list[Face]: ...

    def main_face(self, rgb: np.ndarray) -> Face | None: ...

    def faces_many(self, images: Sequence[np.ndarray]) -> list[list[Face]]: ...


class FaceModel:
    """Thread-safe wrapper: dlib's models are shared and guarded by one lock."""

    def __init__(self, dlib: Any, directory: Path) -> None:
        self._detector = dlib.get_frontal_face_detector()
        self._shapes = dlib.shape_predictor(str(directory / "shape_predictor_5_face_landmarks.dat"))
        self._recognizer = dlib.face_recognition_model_v1(
            str(directory / "dlib_face_recognition_resnet_model_v1.dat")
        )
        self._lock = threading.Lock()

    def faces(self, rgb: np.ndarray) -> list[Face]:
        """Every face found, largest first, with descriptors (full-resolution boxes)."""
        height, width = rgb.shape[:2]
        scale = min(1.0, MAX_SIDE / max(height, width))
        image = rgb
        if scale < 1.0:
            import cv2

            image = cv2.resize(
                rgb, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_AREA
            )
        image = np.ascontiguousarray(image, dtype=np.uint8)
        found = []
        with self._lock:
            # Upsampling finds small faces but costs ~4x: large images try without it first.
            rectangles, scores = [], []
            if max(image.shape[:2]) >= 640:
                rectangles, scores, _ = self._detector.run(image, 0, 0.0)
            if len(rectangles) == 0:
                rectangles, scores, _ = self._detector.run(image, 1, 0.0)
            for rect, score in zip(rectangles, scores, strict=True):
                shape = self._shapes(image, rect)
                descriptor = np.asarray(self._recognizer.compute_face_descriptor(image, shape))
                box = (
                    int(rect.left() / scale),
                    int(rect.top() / scale),
                    int(rect.width() / scale),
                    int(rect.height() / scale),
                )
                found.append(Face(box=box, descriptor=descriptor, score=float(score)))
        return sorted(found, key=lambda face: face.area, reverse=True)

    def main_face(self, rgb: np.ndarray) -> Face | None:
        found = self.faces(rgb)
        return found[0] if found else None

    def faces_many(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """``faces`` of each image, one after the other (the lock allows no more here)."""
        return [self.faces(image) for image in images]


def faces_available() -> bool:
    """Whether the ``faces`` extra is installed, without importing dlib or loading a model
    (the worker's scoring processes load their own)."""
    return importlib.util.find_spec("dlib") is not None and models_dir() is not None


@lru_cache(maxsize=1)
def face_model() -> FaceModel | None:
    """The process's model, or None when the ``faces`` extra is not installed."""
    directory = models_dir()
    try:
        import dlib
    except ImportError:
        return None
    if directory is None:
        log.warning("dlib is installed but face_recognition_models is not: no consistency scores")
        return None
    return FaceModel(dlib, directory)


def consistency(reference: np.ndarray | None, faces: list[Face]) -> dict[str, Any]:
    """Pure: compare the reference descriptor with the best-matching face of an output."""
    if not faces:
        return {"faceDetected": False, "distance": None, "sameCharacter": None}
    if reference is None:
        return {"faceDetected": True, "distance": None, "sameCharacter": None}
    distance = min(float(np.linalg.norm(face.descriptor - reference)) for face in faces)
    return {
        "faceDetected": True,
        "distance": round(distance, 4),
        "sameCharacter": distance < SAME_PERSON_DISTANCE,
    }
