"""An engine plug-in that stands in for a GPU: the worker's view of one, without the GPU.

    CASTFRAME_ROUTES=ideogram-character=benchmarks.gpu_standin:StandInGpuEngine
    CASTFRAME_GPU_STANDIN_MS=500       # engine time per image
    CASTFRAME_GPU_STANDIN_DEVICES=1    # devices, for a worker that does not name them

What a real GPU engine does to the worker, it does: a call holds its device (one lock per
device: one call at a time, as on a GPU), spends ``CASTFRAME_GPU_STANDIN_MS`` per image with
the GIL released (``time.sleep``, as a thread waiting on CUDA kernels does), reports progress
and honours cancellation between images, and returns a real 1024x1024 picture with a face in
it (scikit-image's astronaut, shifted and tinted per seed so every output differs), so the
worker's post-processing (face scoring, encoding, storage) does its real work.

Built per device when the worker names devices (``castframe worker --devices cuda:0,cuda:1``:
the registry passes ``device=``); a worker that does not (today's worker, or no
``--devices``) shares ``CASTFRAME_GPU_STANDIN_DEVICES`` device locks among its slots, the
first free one per call. Benchmarks only: not part of the package.
"""

from __future__ import annotations

import functools
import os
import threading
import time

import numpy as np

from castframe.config import Settings
from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks

_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()
_SHARED = threading.Condition()
_BUSY: set[int] = set()

BUSY_SECONDS = 0.0
"""Seconds this process's stand-in devices were held in all (for tests and the benchmark)."""
_BUSY_LOCK = threading.Lock()


def device_lock(device: str) -> threading.Lock:
    with _REGISTRY_LOCK:
        return _DEVICE_LOCKS.setdefault(device, threading.Lock())


@functools.lru_cache(maxsize=4)
def base_picture(width: int, height: int) -> np.ndarray:
    """The astronaut at the requested size (made once per size)."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)


def picture(width: int, height: int, seed: int) -> np.ndarray:
    """A different, deterministic picture per seed: shifted by up to 63 pixels each way and
    tinted, the face still whole and detectable."""
    base = base_picture(width, height)
    shifted = np.roll(base, (seed % 64 - 32, (seed // 64) % 64 - 32), axis=(0, 1))
    tint = np.array([seed % 17, (seed // 17) % 17, (seed // 289) % 17], dtype=np.int16) - 8
    return np.clip(shifted.astype(np.int16) + tint, 0, 255).astype(np.uint8)


class StandInGpuEngine:
    name = "gpu-standin"

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        self.seconds = float(os.environ.get("CASTFRAME_GPU_STANDIN_MS", "500")) / 1000
        self.devices = max(1, int(os.environ.get("CASTFRAME_GPU_STANDIN_DEVICES", "1")))
        self.device = device

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        check_cancelled(hooks)
        if self.device is not None:
            with device_lock(self.device):
                images = self._run(request, hooks)
            device = self.device
        else:
            index = self._acquire_shared()
            try:
                images = self._run(request, hooks)
            finally:
                self._release_shared(index)
            device = f"shared:{index}"
        return EngineResult(images=images, metadata={"engine": self.name, "device": device})

    def _run(self, request: EngineRequest, hooks: RunHooks) -> list[GeneratedImage]:
        global BUSY_SECONDS
        images = []
        started = time.perf_counter()
        try:
            for index in range(request.num_images):
                # The picture is made inside the image's time, so a device is busy exactly
                # ``seconds`` per image, as the duty cycle counts it.
                due = time.perf_counter() + self.seconds
                seed = request.seed + index
                pixels = picture(request.width, request.height, seed)
                time.sleep(max(0.0, due - time.perf_counter()))
                images.append(GeneratedImage(pixels, seed, request.prompt))
                hooks.progress(int(100 * (index + 1) / request.num_images))
                if index + 1 < request.num_images:
                    check_cancelled(hooks)
        finally:
            with _BUSY_LOCK:
                BUSY_SECONDS += time.perf_counter() - started
        return images

    def _acquire_shared(self) -> int:
        with _SHARED:
            while len(_BUSY) >= self.devices:
                _SHARED.wait()
            index = min(set(range(self.devices)) - _BUSY)
            _BUSY.add(index)
            return index

    def _release_shared(self, index: int) -> None:
        with _SHARED:
            _BUSY.discard(index)
            _SHARED.notify()


def check_cancelled(hooks: RunHooks) -> None:
    """The hooks' cancellation check, also under a baseline from before it was spelt so
    (``check_canceled``): gpu_duty.py runs this engine against older checkouts too."""
    check = getattr(hooks, "check_cancelled", None) or getattr(hooks, "check_canceled")  # noqa: B009
    check()
