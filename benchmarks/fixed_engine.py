"""An engine plug-in of fixed, tiny cost, so queue benchmarks measure the queue, not pixels.

Used as ``CASTFRAME_ROUTES=ideogram-character=benchmarks.fixed_engine:FixedCostEngine`` (with
``CASTFRAME_FIXED_ENGINE_MS`` for its cost). Not part of the package: benchmarks only.
"""

from __future__ import annotations

import os
import time

import numpy as np

from castframe.config import Settings
from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks


class FixedCostEngine:
    name = "fixed"

    def __init__(self, settings: Settings) -> None:
        self.cost = float(os.environ.get("CASTFRAME_FIXED_ENGINE_MS", "0")) / 1000

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        if self.cost:
            time.sleep(self.cost)
        pixels = np.full((16, 16, 3), request.seed % 255, np.uint8)
        return EngineResult(
            images=[
                GeneratedImage(pixels, request.seed, request.prompt)
                for _ in range(request.num_images)
            ],
            metadata={"engine": self.name},
        )
