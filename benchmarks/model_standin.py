"""An engine plug-in that stands in for a GPU holding several models: loads cost real time.

    CASTFRAME_ROUTES=ideogram-v3-turbo=benchmarks.model_standin:StandInModelEngine,...
    CASTFRAME_MODEL_STANDIN_LOAD_MS=3000   # loading a model onto the device (from disk)
    CASTFRAME_MODEL_STANDIN_MS=500         # engine time per image
    CASTFRAME_MODEL_STANDIN_RESIDENT=1     # models that fit on the device at once

It implements the worker's ``ModelHost`` hook (engines/residency.py): ``resident_models()``
and ``load(model)``, which holds the device for ``LOAD_MS`` and evicts the least recently used
model beyond ``RESIDENT`` (dropped: loading it again costs the full load). ``generate`` holds
the device for ``MS`` per image with the GIL released, as a thread waiting on CUDA does, and
returns small 256x256 pictures (the benchmark measures scheduling, not encoding). Module
counters record image time, load time and loads for the benchmark. Benchmarks only.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

import numpy as np

from castframe.config import Settings
from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks

COUNTERS = {"image_seconds": 0.0, "load_seconds": 0.0, "loads": 0.0}
"""This process's totals: device time spent on images, on loads, and the loads made."""
_COUNTERS_LOCK = threading.Lock()


def _count(name: str, value: float) -> None:
    with _COUNTERS_LOCK:
        COUNTERS[name] += value


def reset_counters() -> None:
    with _COUNTERS_LOCK:
        for name in COUNTERS:
            COUNTERS[name] = 0.0


class StandInModelEngine:
    name = "model-standin"

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        self.load_seconds = float(os.environ.get("CASTFRAME_MODEL_STANDIN_LOAD_MS", "3000")) / 1000
        self.seconds = float(os.environ.get("CASTFRAME_MODEL_STANDIN_MS", "500")) / 1000
        self.capacity = max(1, int(os.environ.get("CASTFRAME_MODEL_STANDIN_RESIDENT", "1")))
        self.device = device
        self._resident: OrderedDict[str, None] = OrderedDict()
        self._device = threading.Lock()

    def resident_models(self) -> list[str]:
        with self._device:
            return list(self._resident)

    def load(self, model: str) -> None:
        with self._device:
            self._load(model)

    def _load(self, model: str) -> None:
        if model in self._resident:
            self._resident.move_to_end(model)
            return
        while len(self._resident) >= self.capacity:
            self._resident.popitem(last=False)  # dropped: the next load reads it again
        time.sleep(self.load_seconds)
        self._resident[model] = None
        _count("load_seconds", self.load_seconds)
        _count("loads", 1)

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        hooks.check_cancelled()
        images = []
        with self._device:
            self._load(request.model)  # the worker loads first; this is the engine's own net
            started = time.perf_counter()
            try:
                for index in range(request.num_images):
                    due = time.perf_counter() + self.seconds
                    seed = request.seed + index
                    pixels = np.full((256, 256, 3), (seed * 37) % 251, np.uint8)
                    time.sleep(max(0.0, due - time.perf_counter()))
                    images.append(GeneratedImage(pixels, seed, request.prompt))
                    hooks.progress(int(100 * (index + 1) / request.num_images))
            finally:
                _count("image_seconds", time.perf_counter() - started)
        return EngineResult(images=images, metadata={"engine": self.name, "device": self.device})
