"""The four looks of ``style_type``, plus AUTO's choice from the prompt.

REALISTIC: photographic grade (S-curve, warm/cool split), film grain, depth-of-field blur of
the background, vignette. DESIGN: flat colours quantised to a small palette with dark
outlines. GENERAL: painterly edge-preserving smoothing. FICTION: OpenCV's stylization
(stronger, illustrative). The face region is blended back toward the unstyled pixels so the
character stays recognisable whatever the style.
"""

from __future__ import annotations

import cv2
import numpy as np

from castframe.engines.lexicon import STYLE_HINTS, first_match, tokens
from castframe.engines.sandbox.subject import Box


def resolve_style(style_type: str, prompt: str, style_preset: str | None = None) -> str:
    """AUTO picks from the prompt's words (photo -> REALISTIC, poster -> DESIGN, ...).

    A style preset is read the same way, from its name's words (FLAT_VECTOR -> DESIGN,
    EXPIRED_FILM -> REALISTIC), and wins over style_type: it is the more specific ask.
    A preset whose words name no look is drawn as FICTION, the sandbox's most stylised one.
    """
    if style_preset:
        return first_match(tokens(style_preset.replace("_", " ")), STYLE_HINTS) or "FICTION"
    if style_type != "AUTO":
        return style_type
    return first_match(tokens(prompt), STYLE_HINTS) or "REALISTIC"


def background_pass(style: str, background: np.ndarray, detail: int) -> np.ndarray:
    """Effects applied before the character is placed (depth of field is behind the subject)."""
    if style == "REALISTIC":
        sigma = 2.0 + detail * 0.8
        return cv2.GaussianBlur(background, (0, 0), sigma)
    return background


def face_weight(height: int, width: int, face: Box | None) -> np.ndarray:
    """1 on the face, fading to 0 around it: where styles are held back.

    Drawn and blurred at 1/8 scale (it is smooth anyway), which is ~50x cheaper than a wide
    Gaussian at full size.
    """
    if face is None:
        return np.zeros((height, width), np.float32)
    scale = 8
    small = np.zeros((max(height // scale, 1), max(width // scale, 1)), np.float32)
    x, y, w, h = (v / scale for v in face)
    center = (int(x + w / 2), int(y + h / 2))
    cv2.ellipse(small, center, (max(int(w * 0.75), 1), max(int(h * 0.95), 1)), 0, 0, 360, 1.0, -1)
    small = cv2.GaussianBlur(small, (0, 0), max(w / 6, 0.5))
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def final_pass(
    style: str, image: np.ndarray, face: Box | None, rng: np.random.Generator, detail: int
) -> np.ndarray:
    height, width = image.shape[:2]
    if style == "REALISTIC":
        styled = _photographic(image, rng, detail)
        keep = 0.5
    elif style == "DESIGN":
        styled = _poster(image, detail)
        keep = 0.85
    elif style == "FICTION":
        styled = _painterly(image, strong=True)
        keep = 0.8
    else:
        styled = _painterly(image, strong=False)
        keep = 0.75
    weight = face_weight(height, width, face)[..., None] * keep
    out = styled * (1 - weight) + image * weight
    if detail >= 2:
        blurred = cv2.GaussianBlur(out, (0, 0), 1.2)
        out = out + 0.35 * (out - blurred)  # quality: a final sharpening pass
    return np.clip(out, 0, 1)


def _photographic(image: np.ndarray, rng: np.random.Generator, detail: int) -> np.ndarray:
    curved = image + 0.12 * np.sin((image - 0.5) * np.pi) * 0.5
    shadows = 1 - curved.mean(axis=2, keepdims=True)
    split = np.asarray((-0.015, 0.0, 0.02), np.float32) * shadows
    graded = curved + split
    height, width = image.shape[:2]
    ys, xs = np.ogrid[:height, :width]
    r2 = ((xs - width / 2) / width) ** 2 + ((ys - height / 2) / height) ** 2
    graded *= (1 - 0.45 * r2.astype(np.float32))[..., None]
    if detail == 0:  # turbo: no grain pass
        return graded
    grain = rng.standard_normal((height, width), dtype=np.float32)[..., None]
    return graded + grain * (0.012 + 0.006 * detail)


def _poster(image: np.ndarray, detail: int) -> np.ndarray:
    colours = 8 + 4 * detail
    sample = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA).reshape(-1, 3)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-3)
    cv2.setRNGSeed(0)
    _, _, centers = cv2.kmeans(
        sample.astype(np.float32), colours, None, criteria, 2, cv2.KMEANS_PP_CENTERS
    )
    centers = centers[np.lexsort(centers.T[::-1])]  # stable order, deterministic output
    smooth = cv2.bilateralFilter(image, 7, 0.1, 5)
    flat = smooth.reshape(-1, 3)
    distances = (flat * flat).sum(1)[:, None] - 2 * flat @ centers.T + (centers * centers).sum(1)
    quantised = centers[np.argmin(distances, axis=1)].reshape(image.shape)
    gray = (cv2.cvtColor(quantised, cv2.COLOR_RGB2GRAY) * 255).astype(np.uint8)
    edges = cv2.Canny(gray, 40, 120)
    edges = cv2.dilate(edges, np.ones((2, 2), np.uint8)).astype(np.float32)[..., None] / 255
    return quantised * (1 - edges * 0.85)


def _painterly(image: np.ndarray, strong: bool) -> np.ndarray:
    """OpenCV's NPR filters at half size (they dominate the cost), detail added back."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    small8 = (np.clip(small, 0, 1) * 255).astype(np.uint8)
    if strong:
        painted8 = cv2.stylization(small8, sigma_s=40, sigma_r=0.35)
    else:
        painted8 = cv2.edgePreservingFilter(
            small8, flags=cv2.RECURS_FILTER, sigma_s=40, sigma_r=0.3
        )
    painted = cv2.resize(
        painted8.astype(np.float32) / 255, (width, height), interpolation=cv2.INTER_LINEAR
    )
    if strong:
        hsv = cv2.cvtColor(painted, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = np.clip(hsv[..., 1] * 1.25, 0, 1)
        painted = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return painted
