"""Which encoder and level for output images: times and sizes on 1024x1024 pictures.

Run: ``python benchmarks/encoding.py [--repeat 7]``. Prints, per picture (the sandbox engine's
turbo and default outputs, and scikit-image's astronaut resized to 1024x1024 as a stand-in
for a detailed GPU output), the best-of-N time and size of each candidate, and its time as a
ratio of Pillow's default (level 6) measured in the same run. ``media/images.py`` says what
was chosen and why.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image
from tests.support.requests import engine_request

from castframe.engines.base import NullHooks
from castframe.engines.sandbox import SandboxEngine
from castframe.media.images import encode_image


def pictures() -> dict[str, np.ndarray]:
    from skimage import data

    reference = data.astronaut()
    found = {}
    for speed in ("turbo", "default"):
        request = engine_request(
            prompt="a woman in a city street at night",
            negative_prompt=None,
            style_type="AUTO",
            magic_prompt_option="Off",
            rendering_speed=speed,
            seed=7,
            num_images=1,
            width=1024,
            height=1024,
            aspect_ratio="1:1",
            reference=reference,
        )
        found[f"sandbox {speed}"] = SandboxEngine().generate(request, NullHooks()).images[0].pixels
    found["astronaut 1024"] = cv2.resize(reference, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return found


def pil_png(level: int, strategy: int = -1) -> Callable[[np.ndarray], bytes]:
    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(
            buffer, format="PNG", optimize=False, compress_level=level, compress_type=strategy
        )
        return buffer.getvalue()

    return encode


def cv2_png(level: int, strategy: int = 0) -> Callable[[np.ndarray], bytes]:
    def encode(pixels: np.ndarray) -> bytes:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategy]
        return bytes(cv2.imencode(".png", bgr, params)[1])

    return encode


def pil_webp(method: int) -> Callable[[np.ndarray], bytes]:
    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="WEBP", quality=90, method=method)
        return buffer.getvalue()

    return encode


CANDIDATES: dict[str, Callable[[np.ndarray], bytes]] = {
    "PIL png 6 (old default)": pil_png(6),
    "PIL png 1": pil_png(1),
    "PIL png 2": pil_png(2),
    "PIL png 3": pil_png(3),
    "PIL png 1 rle": pil_png(1, 3),
    "cv2 png 1": cv2_png(1),
    "cv2 png 2": cv2_png(2),
    "cv2 png 1 rle": cv2_png(1, cv2.IMWRITE_PNG_STRATEGY_RLE),
    "chosen png": lambda p: encode_image(p, "png"),
    "chosen jpeg": lambda p: encode_image(p, "jpeg"),
    "PIL webp q90 m0": pil_webp(0),
    "chosen webp (m2)": lambda p: encode_image(p, "webp"),
    "PIL webp q90 m4": pil_webp(4),
}


def best_of(encode: Callable[[np.ndarray], bytes], pixels: np.ndarray, repeat: int) -> tuple:
    encode(pixels)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = encode(pixels)
        times.append(time.perf_counter() - start)
    return min(times), len(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for name, pixels in pictures().items():
        print(f"== {name} ({pixels.shape[1]}x{pixels.shape[0]})")
        base = None
        for label, encode in CANDIDATES.items():
            seconds, size = best_of(encode, pixels, args.repeat)
            base = base or seconds
            print(
                f"  {label:24s} {seconds * 1000:7.1f} ms  x{seconds / base:4.2f}"
                f"  {size / 1024:7.0f} KiB"
            )


if __name__ == "__main__":
    main()
