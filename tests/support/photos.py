"""scikit-image's photographs with hand-labelled regions, for judging cut-outs and
upscales (tests and benchmarks/image_tools.py).

Each region is a box in fractions of the image (left, top, right, bottom), drawn by looking
at the photo: ``subject`` boxes lie inside what a cut-out must keep, ``background`` boxes
inside what it must remove; ambiguous parts (the astronaut's helmet, the cat's whiskers)
are in neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from skimage import data

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class LabelledPhoto:
    name: str
    subject: tuple[Box, ...]
    background: tuple[Box, ...]

    def pixels(self) -> np.ndarray:
        return photo(self.name)


PHOTOS = (
    LabelledPhoto(
        "astronaut",
        subject=((0.36, 0.10, 0.50, 0.26), (0.15, 0.45, 0.55, 0.80)),
        background=((0.00, 0.00, 0.07, 0.45), (0.10, 0.00, 0.25, 0.20), (0.92, 0.00, 1.00, 0.40)),
    ),
    LabelledPhoto(
        "chelsea",
        subject=((0.25, 0.30, 0.65, 0.85),),
        background=((0.88, 0.00, 1.00, 0.45), (0.90, 0.60, 1.00, 1.00)),
    ),
    LabelledPhoto(
        "coffee",
        subject=((0.33, 0.08, 0.62, 0.55), (0.25, 0.72, 0.70, 0.88)),
        background=((0.00, 0.00, 0.12, 0.30), (0.86, 0.30, 1.00, 1.00), (0.78, 0.00, 1.00, 0.12)),
    ),
)


@lru_cache(maxsize=4)
def photo(name: str) -> np.ndarray:
    pixels = np.asarray(getattr(data, name)(), dtype=np.uint8)
    pixels.setflags(write=False)
    return pixels


def region_mask(shape: tuple[int, ...], boxes: tuple[Box, ...]) -> np.ndarray:
    """bool (H, W): True inside any of ``boxes``."""
    height, width = shape[:2]
    mask = np.zeros((height, width), bool)
    for left, top, right, bottom in boxes:
        mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = (
            True
        )
    return mask


@dataclass(frozen=True)
class CutoutScore:
    subject_kept: float
    """Share of the labelled subject pixels with alpha >= 0.5."""
    background_removed: float
    """Share of the labelled background pixels with alpha < 0.5."""

    @property
    def accuracy(self) -> float:
        """The mean of the two: 1.0 is a perfect cut-out on the labelled pixels."""
        return (self.subject_kept + self.background_removed) / 2


def score_cutout(labelled: LabelledPhoto, matte: np.ndarray) -> CutoutScore:
    """How well a matte (float in [0, 1] or uint8 alpha) agrees with the labels."""
    alpha = matte.astype(np.float32) / (255.0 if matte.dtype == np.uint8 else 1.0)
    subject = region_mask(alpha.shape, labelled.subject)
    background = region_mask(alpha.shape, labelled.background)
    return CutoutScore(
        subject_kept=float((alpha[subject] >= 0.5).mean()),
        background_removed=float((alpha[background] < 0.5).mean()),
    )
