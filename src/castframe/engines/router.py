"""Which engine runs a job: test keys always get the sandbox; live jobs get the configured one."""

from __future__ import annotations

import threading

from castframe.config import Settings
from castframe.engines.base import Engine

KNOWN_ENGINES = ("sandbox",)


def route_engine(model_id: str, mode: str, settings: Settings) -> str:
    """Pure: (model, key mode, settings) -> engine name, decided once at submission."""
    if mode == "test":
        return "sandbox"
    if model_id == "ideogram-character":
        return settings.engine_ideogram_character
    return "sandbox"


class EngineRegistry:
    """Engines are built on first use and kept (a GPU engine loads its weights once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Engine:
        with self._lock:
            if name not in self._engines:
                self._engines[name] = self._build(name)
            return self._engines[name]

    def _build(self, name: str) -> Engine:
        if name == "sandbox":
            from castframe.engines.sandbox import SandboxEngine

            return SandboxEngine()
        raise LookupError(f"engine {name!r} is not available in this build")


def validate_engine_settings(settings: Settings) -> None:
    """Fail at start-up, not on the first job, when an engine name is misspelt."""
    if settings.engine_ideogram_character not in KNOWN_ENGINES:
        raise ValueError(
            f"CASTFRAME_ENGINE_IDEOGRAM_CHARACTER={settings.engine_ideogram_character!r}: "
            f"choose one of {', '.join(KNOWN_ENGINES)}"
        )
