"""Find the character in the reference and cut it out with a soft alpha matte.

Face: OpenCV's Haar cascade (shipped in opencv-python-headless), or dlib's HOG detector when
the ``faces`` extra is installed. Body: a box grown from the face. Cut-out: GrabCut seeded
with the face as sure foreground and the body box as probable foreground, at a small working
size (GrabCut is the costly step), then the matte is upscaled and feathered. No face: a soft
ellipse around the centre.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from castframe.bytecache import ByteLRU, nbytes_of

Box = tuple[int, int, int, int]  # x, y, w, h

DETECT_MAX_SIDE = 512


@dataclass(frozen=True)
class Cutout:
    rgb: np.ndarray
    """float32 RGB in [0, 1] of the subject's bounding box."""
    alpha: np.ndarray
    """float32 matte in [0, 1], same height and width."""
    face: Box | None
    """The face box inside the cut-out, if one was found."""
    touches_bottom: bool
    """True for busts: the subject runs off the reference's bottom edge."""
    method: str


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml"  # type: ignore[attr-defined]
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise RuntimeError(f"cannot load the Haar cascade at {path}")
    return classifier


def detect_faces(rgb: np.ndarray) -> list[Box]:
    """Frontal faces in ``rgb``, largest first (full-resolution coordinates)."""
    height, width = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    # At least one pixel a side: an 8200x16 strip scales to 512x0, which OpenCV refuses.
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    # No histogram equalisation: on dark scenes it boosts noise and hides faces from the cascade.
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    minimum = max(20, int(min(small.shape[:2]) * 0.05))
    faces = _cascade().detectMultiScale(gray, 1.1, 4, minSize=(minimum, minimum))
    boxes = [
        (int(x / scale), int(y / scale), int(w / scale), int(h / scale)) for x, y, w, h in faces
    ]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def detect_face(rgb: np.ndarray) -> Box | None:
    """The largest frontal face in ``rgb``, or None."""
    faces = detect_faces(rgb)
    return faces[0] if faces else None


def body_box(face: Box, width: int, height: int) -> Box:
    """Where the body probably is, grown from the face: shoulders ~4 faces wide, down to the edge."""
    x, y, w, h = face
    left = max(0, int(x - 1.6 * w))
    right = min(width, int(x + w + 1.6 * w))
    top = max(0, int(y - 0.7 * h))
    return (left, top, right - left, height - top)


def _grabcut_matte(rgb: np.ndarray, face: Box, iterations: int, work_side: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = min(1.0, work_side / max(height, width))
    small = cv2.resize(
        rgb, (max(int(width * scale), 8), max(int(height * scale), 8)), interpolation=cv2.INTER_AREA
    )
    sh, sw = small.shape[:2]
    fx, fy, fw, fh = (int(v * scale) for v in face)
    bx, by, bw, bh = (int(v * scale) for v in body_box(face, width, height))
    mask = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    # A T-shaped prior: a head column around the face, the torso below it grows wider.
    mask[by : by + bh, bx : bx + bw] = cv2.GC_PR_BGD
    head_left, head_right = max(fx - fw // 3, 0), min(fx + fw + fw // 3, sw)
    shoulders = min(fy + int(1.4 * fh), sh)
    mask[max(fy - fh // 2, 0) : shoulders, head_left:head_right] = cv2.GC_PR_FGD
    mask[shoulders : by + bh, bx : bx + bw] = cv2.GC_PR_FGD
    cv2.ellipse(
        mask,
        (fx + fw // 2, fy + fh // 2),
        (max(fw * 2 // 5, 1), max(fh // 2, 1)),
        0,
        0,
        360,
        cv2.GC_FGD,
        -1,
    )
    # The neck and chest under the face are almost always the subject.
    cv2.rectangle(
        mask, (fx + fw // 4, fy + fh), (fx + 3 * fw // 4, min(sh - 1, fy + 2 * fh)), cv2.GC_FGD, -1
    )
    mask[0, :] = cv2.GC_BGD
    mask[:, [0, -1]] = np.where(mask[:, [0, -1]] == cv2.GC_FGD, cv2.GC_FGD, cv2.GC_BGD)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    # GrabCut seeds its colour models from OpenCV's (thread-local) RNG: fix it so that the
    # same reference always gives the same matte.
    cv2.setRNGSeed(0x5EED)
    cv2.grabCut(bgr, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    hard = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    hard = _keep_component(hard, (fx + fw // 2, fy + fh // 2))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    hard = cv2.morphologyEx(hard, cv2.MORPH_CLOSE, kernel)
    matte = cv2.resize(hard, (width, height), interpolation=cv2.INTER_LINEAR)
    feather = max(1.0, max(height, width) / 300)
    return cv2.GaussianBlur(matte.astype(np.float32) / 255.0, (0, 0), feather)


def _keep_component(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """Only the connected region that contains the face (drops stray background blobs)."""
    count, labels = cv2.connectedComponents(mask)
    if count <= 2:
        return mask
    x = min(max(seed[0], 0), mask.shape[1] - 1)
    y = min(max(seed[1], 0), mask.shape[0] - 1)
    label = labels[y, x]
    if label == 0:
        return mask
    return np.where(labels == label, 255, 0).astype(np.uint8)


def _ellipse_matte(height: int, width: int) -> np.ndarray:
    ys, xs = np.ogrid[:height, :width]
    d = ((xs - width / 2) / (width * 0.42)) ** 2 + ((ys - height * 0.55) / (height * 0.5)) ** 2
    return np.clip((1.0 - d.astype(np.float32)) * 4.0, 0.0, 1.0)


def extract_subject(rgb: np.ndarray, iterations: int, work_side: int) -> Cutout:
    """Cut the character out of the reference; pure and deterministic."""
    height, width = rgb.shape[:2]
    face = detect_face(rgb)
    if face is not None:
        alpha = _grabcut_matte(rgb, face, iterations, work_side)
        method = "grabcut"
        if float(alpha.max()) < 0.5:  # GrabCut gave up: fall back to the ellipse
            alpha, method = _ellipse_matte(height, width), "ellipse"
    else:
        alpha, method = _ellipse_matte(height, width), "ellipse"
    ys, xs = np.nonzero(alpha > 0.05)
    if ys.size == 0:
        ys, xs = np.array([0, height - 1]), np.array([0, width - 1])
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    crop_face = None
    if face is not None:
        crop_face = (face[0] - left, face[1] - top, face[2], face[3])
    return Cutout(
        rgb=rgb[top:bottom, left:right].astype(np.float32) / 255.0,
        alpha=alpha[top:bottom, left:right],
        face=crop_face,
        touches_bottom=bottom >= height - max(2, height // 100),
        method=method,
    )


CUTOUT_CACHE_BYTES = 96 * 1024 * 1024
"""The cut-out cache's budget: a cut-out is 16 bytes a pixel (float32 RGB and matte), so
about six 2048x2048 references (CASTFRAME_REFERENCE_MAX_SIDE) or hundreds of small ones."""


class CutoutCache:
    """An LRU of cut-outs by reference content, bounded in bytes (castframe/bytecache.py):
    ``num_images`` variations and repeated jobs with one saved character reuse the costly
    GrabCut."""

    def __init__(self, max_bytes: int = CUTOUT_CACHE_BYTES) -> None:
        self._items: ByteLRU[str, Cutout] = ByteLRU(
            max_bytes, lambda cutout: nbytes_of(cutout.rgb, cutout.alpha)
        )

    def get(self, rgb: np.ndarray, iterations: int, work_side: int) -> Cutout:
        digest = hashlib.sha256(rgb.tobytes()).hexdigest()
        key = f"{digest}:{rgb.shape}:{iterations}:{work_side}"
        found = self._items.get(key)
        if found is not None:
            return found
        cutout = extract_subject(rgb, iterations, work_side)
        self._items.put(key, cutout)
        return cutout
