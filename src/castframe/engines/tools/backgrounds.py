"""What a background-removal job returns, from a matte: ``851-bg-remove``'s six
``background_type`` renderings, its ``threshold`` and ``reverse``.

The semantics are those of ``transparent-background``'s ``Remover.process`` (the model behind
851 Labs' remover), written here from its documented behaviour, so that every matting model
(the bundled one, the operator's InSPyReNet, the sandbox's GrabCut) answers the same fields the
same way:

- ``threshold`` (0-1): the matte becomes hard, 1 where it is above the threshold;
- ``reverse``: the matte is inverted (the background is kept, the subject removed);
- ``rgba``: the image with the matte as its alpha channel (the default);
- ``map``: the matte itself, as a grey picture;
- ``green`` / ``white``: the subject on a plain green or white background;
- ``blur``: the subject sharp in front of its own background, blurred;
- ``overlay``: the image with the subject tinted and its outline drawn.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

BackgroundType = Literal["rgba", "map", "green", "white", "blur", "overlay"]
BACKGROUND_TYPES: tuple[BackgroundType, ...] = ("rgba", "map", "green", "white", "blur", "overlay")
GREEN = (0.0, 255.0, 0.0)
WHITE = (255.0, 255.0, 255.0)
OVERLAY_TINT = (255.0, 0.0, 0.0)
OVERLAY_EDGE = (255.0, 255.0, 0.0)


def shape_matte(matte: np.ndarray, threshold: float | None, reverse: bool) -> np.ndarray:
    """The matte after ``threshold`` and ``reverse``, float32 in [0, 1]."""
    shaped = matte.astype(np.float32)
    if threshold is not None:
        shaped = (shaped > threshold).astype(np.float32)
    if reverse:
        shaped = 1.0 - shaped
    return shaped


def render(
    rgb: np.ndarray,
    matte: np.ndarray,
    background_type: BackgroundType = "rgba",
    threshold: float | None = None,
    reverse: bool = False,
) -> np.ndarray:
    """uint8 (H, W, 4) for ``rgba``, else uint8 (H, W, 3), at ``rgb``'s size."""
    alpha = shape_matte(matte, threshold, reverse)
    if background_type == "rgba":
        return np.dstack([rgb, _to_uint8(alpha * 255.0)])
    if background_type == "map":
        grey = _to_uint8(alpha * 255.0)
        return np.dstack([grey, grey, grey])
    image = rgb.astype(np.float32)
    weight = alpha[..., None]
    if background_type in ("green", "white"):
        colour = np.asarray(GREEN if background_type == "green" else WHITE, np.float32)
        return _to_uint8(image * weight + colour * (1.0 - weight))
    if background_type == "blur":
        sigma = max(2.0, max(rgb.shape[:2]) / 100.0)
        blurred = cv2.GaussianBlur(image, (0, 0), sigma)
        return _to_uint8(image * weight + blurred * (1.0 - weight))
    if background_type == "overlay":
        tinted = image * 0.5 + np.asarray(OVERLAY_TINT, np.float32) * 0.5
        out = image * (1.0 - weight) + tinted * weight
        hard = (alpha > 0.5).astype(np.uint8)
        edge = cv2.morphologyEx(hard, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        out[edge] = OVERLAY_EDGE
        return _to_uint8(out)
    raise ValueError(f"unknown background_type {background_type!r}")


def flatten(pixels: np.ndarray) -> np.ndarray:
    """An RGBA result on white, for formats without transparency (JPEG)."""
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        alpha = pixels[..., 3:4].astype(np.float32) / 255.0
        return _to_uint8(pixels[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha))
    return pixels


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)
