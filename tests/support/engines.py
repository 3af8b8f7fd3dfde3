"""Engine plug-ins for tests: tiny images at a known cost, reporting progress as they go.

Loaded like any operator's plug-in (``routes="ideogram-character=tests.support.engines:..."``),
so the worker runs its real path around them: progress writes, cancel checks, storage.
"""

from __future__ import annotations

import time

import numpy as np
import sqlalchemy as sa

from castframe.config import Settings
from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks

STEPS = 4


class SteppingEngine:
    """Four steps of ``STEP_SECONDS`` each, reporting progress and checking for cancellation
    after each step, as a diffusion engine does between denoising steps."""

    name = "stepping"
    STEP_SECONDS = 0.05

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        for step in range(STEPS):
            time.sleep(self.STEP_SECONDS)
            hooks.progress(int(100 * (step + 1) / (STEPS + 1)))
            hooks.check_cancelled()
        pixels = np.full((16, 16, 3), request.seed % 251, np.uint8)
        return EngineResult(
            images=[
                GeneratedImage(pixels, request.seed + index, request.prompt)
                for index in range(request.num_images)
            ],
            metadata={"engine": self.name},
        )


class BrokenEngine:
    """Fails as a plug-in with its own database access might: a statement error with SQL."""

    name = "broken"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        raise sa.exc.ProgrammingError(
            "SELECT secret FROM jobs WHERE lease_owner = 'w-0123456789ab'",
            {},
            Exception("relation does not exist"),
        )


class SlowSteppingEngine(SteppingEngine):
    """``SteppingEngine`` at one second a step: a job runs long enough to outlive an outage."""

    name = "slow-stepping"
    STEP_SECONDS = 1.0
