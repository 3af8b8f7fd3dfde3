"""Engines that hold several models on one device: the hook a multi-model lane uses.

An engine that serves several models from local weights (the diffusers engine, the
benchmarks' stand-ins) cannot keep them all on its device. It implements ``ModelHost``:

- ``resident_models()``: the models it can run now without loading (on its device). The
  worker's claims prefer their jobs (dispatch/affinity.py), so a lane switches models rarely.
- ``load(model)``: make ``model`` resident before a job of it runs, keeping as many others
  as fit and moving the rest to CPU memory or dropping them (the engine's choice: it knows
  their sizes). The worker calls it before the engine call and times it (metrics.py's
  ``castframe_model_load_seconds`` and ``castframe_model_switches_total``); an engine's
  ``generate`` must still load on its own if called without it.

Engines that are not hosts (upstream APIs, the sandbox) hold nothing: every model is as
good as resident, and claims stay in plain queue order.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable


@runtime_checkable
class ModelHost(Protocol):
    """An engine that loads models onto its device (see the module's notes)."""

    def resident_models(self) -> Collection[str]:
        """The models on the device now (loading none)."""
        ...

    def load(self, model: str) -> None:
        """Make ``model`` resident, evicting (to CPU memory, or dropping) what no longer fits."""
        ...


def host_of(engine: object) -> ModelHost | None:
    """``engine`` as a ``ModelHost``, or None when it holds no models."""
    return engine if isinstance(engine, ModelHost) else None
