"""Engine plug-ins for the pipeline tests: per-device stand-ins that record what ran where.

``DeviceEngine`` is built once per device by a worker given ``devices`` (the registry passes
``device=``); every call records its device and how many calls were on that device at once.
``CountingEngine`` counts its calls, for the post-processing bound.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np

from castframe.config import Settings
from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks


def _images(request: EngineRequest) -> list[GeneratedImage]:
    pixels = np.full((32, 32, 3), request.seed % 251, np.uint8)
    return [
        GeneratedImage(pixels, request.seed + index, request.prompt)
        for index in range(request.num_images)
    ]


class DeviceEngine:
    """One instance per device; the first call on each device waits at a two-party barrier,
    so two jobs can only get past it by running on the two devices at the same time."""

    name = "device"
    lock = threading.Lock()
    instances: list[str | None] = []
    calls: Counter[str | None] = Counter()
    in_flight: Counter[str | None] = Counter()
    most_at_once: Counter[str | None] = Counter()
    together = threading.Barrier(2)
    met: set[str | None] = set()

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        self.device = device
        with self.lock:
            self.instances.append(device)

    @classmethod
    def reset(cls) -> None:
        cls.instances.clear()
        cls.calls.clear()
        cls.in_flight.clear()
        cls.most_at_once.clear()
        cls.met.clear()
        cls.together = threading.Barrier(2)

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        with self.lock:
            self.calls[self.device] += 1
            self.in_flight[self.device] += 1
            self.most_at_once[self.device] = max(
                self.most_at_once[self.device], self.in_flight[self.device]
            )
            first = self.device not in self.met
            self.met.add(self.device)
        try:
            if first:
                self.together.wait(timeout=30)  # BrokenBarrierError fails the job
            time.sleep(0.02)
            return EngineResult(images=_images(request), metadata={"device": self.device})
        finally:
            with self.lock:
                self.in_flight[self.device] -= 1


class CountingEngine:
    """Counts calls; otherwise instant."""

    name = "counting"
    calls = 0
    lock = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        with self.lock:
            type(self).calls += 1
        return EngineResult(images=_images(request), metadata={"engine": self.name})
