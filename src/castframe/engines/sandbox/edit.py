"""Inpainting for the sandbox: put the character into the black region of a mask.

Poisson (seamless) cloning blends the character's gradients into the image, then every pixel
outside the mask is copied back from the input, so white-mask pixels are bit-for-bit kept.
"""

from __future__ import annotations

import cv2
import numpy as np

from castframe.engines.sandbox.subject import Cutout


def place_in_mask(
    image: np.ndarray, mask: np.ndarray, cutout: Cutout, rng: np.random.Generator
) -> np.ndarray:
    """``image`` uint8 RGB, ``mask`` bool (True = repaint) -> edited uint8 RGB."""
    height, width = image.shape[:2]
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return image.copy()
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    box_h, box_w = bottom - top, right - left
    ch, cw = cutout.alpha.shape
    scale = min(box_h * float(rng.uniform(0.85, 0.98)) / ch, box_w * 0.95 / cw)
    out_w, out_h = max(int(cw * scale), 4), max(int(ch * scale), 4)
    x = left + (box_w - out_w) // 2 + int(rng.uniform(-0.05, 0.05) * box_w)
    x = min(max(x, left), right - out_w)
    y = bottom - out_h
    subject = cv2.resize(
        (cutout.rgb * 255).astype(np.uint8), (out_w, out_h), interpolation=cv2.INTER_AREA
    )
    alpha = cv2.resize(cutout.alpha, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    source = image.copy()
    region = source[y : y + out_h, x : x + out_w]
    region[:] = (region * (1 - alpha[..., None]) + subject * alpha[..., None]).astype(np.uint8)
    clone_mask = np.zeros((height, width), np.uint8)
    clone_mask[y : y + out_h, x : x + out_w] = (alpha > 0.05).astype(np.uint8) * 255
    clone_mask &= mask.astype(np.uint8) * 255
    clone_mask[[0, -1], :] = 0
    clone_mask[:, [0, -1]] = 0
    if clone_mask.any():
        bx, by, bw, bh = cv2.boundingRect(clone_mask)
        center = (bx + bw // 2, by + bh // 2)
        result = cv2.seamlessClone(source, image, clone_mask, center, cv2.NORMAL_CLONE)
    else:
        result = source
    return np.where(mask[..., None], result, image)


def paint_in_mask(image: np.ndarray, mask: np.ndarray, painting: np.ndarray) -> np.ndarray:
    """``painting`` (same size as ``image``) inside the mask, feathered a few pixels into it
    so the seam is soft; every pixel outside the mask is the input's, bit for bit."""
    inside = mask.astype(np.float32)
    feather = max(3, int(min(image.shape[:2]) * 0.01) | 1)
    soft = cv2.GaussianBlur(inside, (feather * 2 + 1, feather * 2 + 1), 0) * inside
    blended = image * (1 - soft[..., None]) + painting * soft[..., None]
    kept: np.ndarray = np.where(mask[..., None], blended, image).astype(np.uint8)
    return kept
