"""Style references in the sandbox: the output takes their palette (pure).

A Reinhard colour transfer in CIELAB: the output's per-channel mean and spread move toward
those of the references (pooled), part of the way, so the scene keeps its own contrast and
the character stays recognisable. Deterministic: the same inputs give the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

STRENGTH = 0.6
"""How far the output's colour statistics move toward the references' (0 = not at all)."""
SAMPLE_SIDE = 256
"""References are measured at most this size: statistics need no more pixels."""


def _lab(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB).astype(np.float32)


def _sample(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    scale = SAMPLE_SIDE / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def palette_of(references: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of L, a, b over all the references' pixels."""
    samples = np.concatenate([_lab(_sample(image)).reshape(-1, 3) for image in references])
    return samples.mean(axis=0), samples.std(axis=0) + 1e-3


def match_palette(
    pixels: np.ndarray, references: Sequence[np.ndarray], strength: float = STRENGTH
) -> np.ndarray:
    """``pixels`` (RGB uint8) recoloured toward the references' palette."""
    if not references:
        return pixels
    target_mean, target_std = palette_of(references)
    lab = _lab(pixels)
    mean = lab.reshape(-1, 3).mean(axis=0)
    std = lab.reshape(-1, 3).std(axis=0) + 1e-3
    moved_mean = mean + (target_mean - mean) * strength
    moved_std = std + (target_std - std) * strength
    recoloured = (lab - mean) * (moved_std / std) + moved_mean
    out = np.clip(recoloured, 0, 255).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
