"""An engine that holds models (engines/residency.py's ``ModelHost``), for the routing and
affinity tests: one model resident at a time, loads instant but recorded, every run recorded
in order (class-level records: the registry builds the instances)."""

from __future__ import annotations

import threading

import numpy as np

from castframe.config import Settings
from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks


class HostEngine:
    name = "host"
    lock = threading.Lock()
    loads: list[str] = []
    runs: list[str] = []

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        self.resident: list[str] = []
        self.ran: list[str] = []
        """The models of this instance's runs (one instance per worker registry)."""

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.loads.clear()
            cls.runs.clear()

    def resident_models(self) -> list[str]:
        return list(self.resident)

    def load(self, model: str) -> None:
        if model not in self.resident:
            with HostEngine.lock:
                HostEngine.loads.append(model)
            self.resident = [model]

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        self.load(request.model)
        with HostEngine.lock:
            HostEngine.runs.append(request.model)
            self.ran.append(request.model)
        pixels = np.full((32, 32, 3), request.seed % 251, np.uint8)
        return EngineResult(images=[GeneratedImage(pixels, request.seed, request.prompt)])
