"""The sandbox's image tools, deterministic and weightless: a classical GrabCut cut-out for
background removal, Lanczos for upscaling.

They are also the classical baselines that the real models (engines/tools/) are measured
against (benchmarks/image_tools.py, tests/test_image_tools_models.py).
"""

from __future__ import annotations

import cv2
import numpy as np

from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.sandbox.subject import _grabcut_matte, detect_face
from castframe.engines.tools.backgrounds import flatten, render
from castframe.engines.tools.engine import check_input, superres_factor
from castframe.engines.tools.rules import BG_REMOVE_MODELS, UPSCALE_MODELS
from castframe.errors import JobFailure

TOOL_MODELS = BG_REMOVE_MODELS + UPSCALE_MODELS

WORK_SIDE = 320
ITERATIONS = 4
MARGIN = 0.04
"""The rectangle GrabCut starts from when there is no face: the frame less 4% on each side
(the border is taken as background, everything inside as probably the subject)."""


def grabcut_matte(rgb: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1], 1 on the subject: GrabCut seeded from the face (the sandbox's
    character cut-out) when there is one, else from the frame less a margin."""
    face = detect_face(rgb)
    if face is not None:
        return _grabcut_matte(rgb, face, ITERATIONS, WORK_SIDE)
    height, width = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(height, width))
    small = cv2.resize(
        rgb, (max(int(width * scale), 8), max(int(height * scale), 8)), interpolation=cv2.INTER_AREA
    )
    sh, sw = small.shape[:2]
    mx, my = max(1, int(sw * MARGIN)), max(1, int(sh * MARGIN))
    mask = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0x5EED)  # GrabCut's colour models are seeded from OpenCV's RNG
    cv2.grabCut(
        cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
        mask,
        (mx, my, sw - 2 * mx, sh - 2 * my),
        bgd,
        fgd,
        ITERATIONS,
        cv2.GC_INIT_WITH_RECT,
    )
    hard = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 1.0, 0.0).astype(np.float32)
    matte = cv2.resize(hard, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(matte, (0, 0), max(1.0, max(height, width) / 300))


def lanczos_upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Lanczos interpolation to exactly ``factor`` times the input's size."""
    if factor == 1:
        return rgb.copy()
    height, width = rgb.shape[:2]
    return cv2.resize(rgb, (width * factor, height * factor), interpolation=cv2.INTER_LANCZOS4)


def run_tool(request: EngineRequest, hooks: RunHooks) -> EngineResult:
    """A background-remove or upscale job on the sandbox: the same fields honoured as on the
    tools engine, with the classical methods; deterministic (same input, same bytes)."""
    image = request.inputs.image
    if image is None:
        raise JobFailure("engine_error", f"{request.model} needs an input image")
    check_input(image.raw)
    hooks.progress(10)
    if request.model in BG_REMOVE_MODELS:
        pixels = render(
            image.pixels,
            grabcut_matte(image.pixels),
            request.param("background_type", "rgba"),
            request.param("threshold"),
            bool(request.param("reverse", False)),
        )
        if request.param("output_format", "png") == "jpeg":
            pixels = flatten(pixels)
        metadata: dict[str, object] = {
            "engine": "sandbox",
            "model": "GrabCut cut-out (classical, sandbox)",
            "operation": "background-remove",
        }
    else:
        factor = superres_factor(request)
        pixels = lanczos_upscale(image.pixels, factor)
        metadata = {
            "engine": "sandbox",
            "model": "Lanczos interpolation (classical, sandbox)",
            "operation": "upscale",
            "factor": factor,
        }
    hooks.progress(95)
    return EngineResult(
        images=[GeneratedImage(pixels=pixels, seed=request.seed, prompt="", metadata={})],
        metadata=metadata,
    )
