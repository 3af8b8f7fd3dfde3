"""FLUX Fill's outpainting, done here: the seven ``outpaint`` choices as a larger canvas with
the image placed on it and a mask of the new area.

Fill [pro] itself only inpaints (white = paint), so an outpaint is an inpaint of a canvas
that is bigger than the image: Apiframe's choices are its presets. The arithmetic is pure and
shared by the sandbox and the ``bfl`` engine, so both grow the canvas identically:

- ``Zoom out 1.5x`` / ``Zoom out 2x``: every side x1.5 / x2, the image centred;
- ``Make square``: the longer side squared, the image centred;
- ``Left`` / ``Right`` / ``Top`` / ``Bottom outpaint``: that side extended by half the
  image's width (or height), the image against the opposite edge.

Sides are rounded up to multiples of 32 (FLUX works in 16-pixel latents; the extra pixels
go to the new area). A canvas over ``MAX_PIXELS`` is scaled down as a whole (the image with
it), so the output stays within what Fill [pro] accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from castframe.engines.base import EngineRequest

MULTIPLE = 32
MAX_PIXELS = 2048 * 2048
"""Fill [pro]'s budget: about 4 megapixels."""


@dataclass(frozen=True)
class Canvas:
    """Where the image goes on the new canvas, all in canvas pixels."""

    width: int
    height: int
    left: int
    top: int
    image_width: int
    image_height: int

    @property
    def right(self) -> int:
        return self.left + self.image_width

    @property
    def bottom(self) -> int:
        return self.top + self.image_height


def _up(value: float) -> int:
    return math.ceil(value / MULTIPLE - 1e-9) * MULTIPLE


def plan_canvas(width: int, height: int, choice: str) -> Canvas:
    """Pure: an image's size and an ``outpaint`` choice -> the canvas and the image's place."""
    if choice in ("Zoom out 1.5x", "Zoom out 2x"):
        factor = 1.5 if choice.endswith("1.5x") else 2.0
        target_w, target_h = width * factor, height * factor
        anchor_x, anchor_y = 0.5, 0.5
    elif choice == "Make square":
        side = max(width, height)
        target_w = target_h = side
        anchor_x, anchor_y = 0.5, 0.5
    elif choice == "Left outpaint":
        target_w, target_h, anchor_x, anchor_y = width * 1.5, height, 1.0, 0.5
    elif choice == "Right outpaint":
        target_w, target_h, anchor_x, anchor_y = width * 1.5, height, 0.0, 0.5
    elif choice == "Top outpaint":
        target_w, target_h, anchor_x, anchor_y = width, height * 1.5, 0.5, 1.0
    elif choice == "Bottom outpaint":
        target_w, target_h, anchor_x, anchor_y = width, height * 1.5, 0.5, 0.0
    else:
        raise ValueError(f"unknown outpaint choice {choice!r}")
    scale = min(1.0, math.sqrt(MAX_PIXELS / (target_w * target_h)))
    image_w = max(1, round(width * scale))
    image_h = max(1, round(height * scale))
    canvas_w = _up(target_w * scale)
    canvas_h = _up(target_h * scale)
    while canvas_w * canvas_h > MAX_PIXELS:  # rounding up may step just over the budget
        scale *= 0.99
        image_w, image_h = max(1, int(width * scale)), max(1, int(height * scale))
        canvas_w, canvas_h = _up(target_w * scale), _up(target_h * scale)
    left = round((canvas_w - image_w) * anchor_x)
    top = round((canvas_h - image_h) * anchor_y)
    return Canvas(canvas_w, canvas_h, left, top, image_w, image_h)


def outpaint_inputs(image: np.ndarray, choice: str) -> tuple[np.ndarray, np.ndarray, Canvas]:
    """The canvas (uint8 RGB: the image, and its edges stretched over the new area so the
    model sees the colours it continues) and its mask (bool, True = paint: the new area)."""
    height, width = image.shape[:2]
    canvas = plan_canvas(width, height, choice)
    placed = image
    if (canvas.image_width, canvas.image_height) != (width, height):
        placed = cv2.resize(
            image, (canvas.image_width, canvas.image_height), interpolation=cv2.INTER_AREA
        )
    pixels = cv2.copyMakeBorder(
        placed,
        canvas.top,
        canvas.height - canvas.bottom,
        canvas.left,
        canvas.width - canvas.right,
        cv2.BORDER_REPLICATE,
    )
    mask = np.ones((canvas.height, canvas.width), bool)
    mask[canvas.top : canvas.bottom, canvas.left : canvas.right] = False
    return pixels, mask, canvas


def fill_paint_mask(request: EngineRequest) -> np.ndarray | None:
    """The inpaint mask as True-where-painted: the worker reads mask images black = paint,
    and ``flux-fill-pro``'s masks are white = paint (its params say ``mask_paints``)."""
    mask = request.inputs.mask
    if mask is None:
        return None
    return ~mask if request.param("mask_paints") == "white" else mask
