"""Real images for tests: scikit-image's astronaut photograph and images the tests draw."""

from __future__ import annotations

import base64
import io
from functools import lru_cache

import numpy as np
from PIL import Image
from skimage import data


@lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    return np.asarray(data.astronaut(), dtype=np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def astronaut_png() -> bytes:
    return png_bytes(astronaut())


def data_uri(raw: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(raw).decode()}"


def decode(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def no_face_image(size: int = 256) -> np.ndarray:
    """A smooth colour gradient with a blob: an image with no face in it."""
    ys, xs = np.mgrid[:size, :size]
    image = np.stack([xs * 255 // size, ys * 255 // size, np.full_like(xs, 120)], -1)
    return image.astype(np.uint8)


def edit_pair(width: int = 640, height: int = 480) -> tuple[np.ndarray, np.ndarray]:
    """A test scene and a mask whose black (repaint) box is the centre third."""
    rng = np.random.default_rng(3)
    scene = (rng.random((height, width, 3)) * 60 + np.array([40, 90, 160])).astype(np.uint8)
    mask = np.full((height, width, 3), 255, np.uint8)
    mask[height // 4 : height - 20, width // 3 : 2 * width // 3] = 0
    return scene, mask
