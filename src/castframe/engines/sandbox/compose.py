"""Place a cut-out character into a scene: size, position, light match, shadow, blend."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from castframe.engines.sandbox.subject import Box, Cutout


@dataclass(frozen=True)
class Placement:
    x: int
    y: int
    width: int
    height: int
    face: Box | None
    """The face box in output coordinates (styles keep it recognisable)."""


def plan_placement(
    cutout: Cutout, width: int, height: int, horizon: float, rng: np.random.Generator
) -> Placement:
    """Where and how large the character goes: rule-of-thirds columns, height by framing."""
    ch, cw = cutout.alpha.shape
    if cutout.touches_bottom:
        target_h = height * float(rng.uniform(0.7, 0.9))
    else:
        target_h = height * float(rng.uniform(0.5, 0.7))
    scale = min(target_h / ch, width * 0.75 / cw)
    out_w, out_h = max(int(cw * scale), 8), max(int(ch * scale), 8)
    column = float(rng.choice([1 / 3, 1 / 2, 2 / 3])) + float(rng.uniform(-0.05, 0.05))
    x = int(column * width - out_w / 2)
    x = min(max(x, -out_w // 6), width - out_w + out_w // 6)
    if cutout.touches_bottom:
        y = height - out_h
    else:
        feet = int(height * min(0.97, horizon + float(rng.uniform(0.15, 0.3))))
        y = max(feet - out_h, 0)
    face = None
    if cutout.face is not None:
        fx, fy, fw, fh = cutout.face
        face = (x + int(fx * scale), y + int(fy * scale), int(fw * scale), int(fh * scale))
    return Placement(x, y, out_w, out_h, face)


def _clip(place: Placement, width: int, height: int) -> tuple[slice, slice, slice, slice]:
    """Canvas and cut-out slices of the visible part of a placement."""
    x0, y0 = max(place.x, 0), max(place.y, 0)
    x1, y1 = min(place.x + place.width, width), min(place.y + place.height, height)
    return (
        slice(y0, y1),
        slice(x0, x1),
        slice(y0 - place.y, y1 - place.y),
        slice(x0 - place.x, x1 - place.x),
    )


def composite(
    canvas: np.ndarray, cutout: Cutout, place: Placement, light: np.ndarray, shadow: bool
) -> np.ndarray:
    """Blend the character onto ``canvas`` (float RGB); returns the full-size alpha used."""
    height, width = canvas.shape[:2]
    rgb = cv2.resize(cutout.rgb, (place.width, place.height), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(cutout.alpha, (place.width, place.height), interpolation=cv2.INTER_LINEAR)
    # Light match: tint the subject gently toward the scene's light; strong enough to sit in
    # the scene, weak enough that a face-recognition model still sees the same person.
    rgb = np.clip(rgb * (0.85 + 0.15 * light), 0, 1)
    cy, cx, sy, sx = _clip(place, width, height)
    full_alpha = np.zeros((height, width), np.float32)
    full_alpha[cy, cx] = alpha[sy, sx]
    if shadow:
        feet_y = min(place.y + place.height, height - 1)
        axes = (max(place.width // 3, 2), max(place.height // 25, 2))
        shade = np.zeros((height, width), np.float32)
        cv2.ellipse(shade, (place.x + place.width // 2, feet_y), axes, 0, 0, 360, 0.45, -1)
        shade = cv2.GaussianBlur(shade, (0, 0), max(axes[1], 2))
        canvas *= 1 - shade[..., None]
    a = full_alpha[cy, cx][..., None]
    canvas[cy, cx] = canvas[cy, cx] * (1 - a) + rgb[sy, sx] * a
    return full_alpha
