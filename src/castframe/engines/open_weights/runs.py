"""What every open-model pipeline run shares: loading, seeds, per-step progress and
cancellation, out-of-memory handling, and turning pipeline output into 8-bit pixels.

Each image runs as its own pipeline call with its own ``torch.Generator`` seeded with
seed + index, so an image is reproducible by its seed alone, whatever the job's count.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from castframe.engines.base import EngineRequest, RunHooks
from castframe.errors import JobFailure

log = logging.getLogger("castframe.engines.diffusers")

SEED_SPACE = 2_147_483_648


def torch_dtype(device: str) -> Any:
    """bf16 on a GPU, float32 on a CPU (CPUs have no fast bf16 kernels for all layers)."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load(class_name: str, model_dir: Path | str, device: str) -> Any:
    """A diffusers pipeline class loaded from a local directory onto ``device``."""
    import diffusers

    log.info("loading %s from %s on %s", class_name, model_dir, device)
    pipeline_class = getattr(diffusers, class_name)
    # A component the saved index leaves out (SD3 saved without its T5 encoder, which the
    # pipeline allows) loads as None instead of failing.
    index = json.loads((Path(model_dir) / "model_index.json").read_text())
    expected, _optional = pipeline_class._get_signature_keys(pipeline_class)
    absent = {name: None for name in expected if not (index.get(name) or [None])[0]}
    pipeline = pipeline_class.from_pretrained(str(model_dir), dtype=torch_dtype(device), **absent)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def derived(class_name: str, pipeline: Any) -> Any:
    """Another pipeline class on the same loaded components (no second copy of weights)."""
    import diffusers

    other = getattr(diffusers, class_name).from_pipe(pipeline)
    other.set_progress_bar_config(disable=True)
    return other


def seeds(request: EngineRequest) -> list[int]:
    return [(request.seed + index) % SEED_SPACE for index in range(request.num_images)]


def generator(seed: int) -> Any:
    """A CPU generator: the same seed gives the same noise on every device."""
    import torch

    return torch.Generator(device="cpu").manual_seed(seed)


def step_callback(
    hooks: RunHooks, done_before: int, total: int
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    """A ``callback_on_step_end`` reporting progress over a job's ``total`` steps and
    checking cancellation after each step."""

    def on_step(_pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        hooks.progress(min(95, 5 + int(90 * (done_before + step + 1) / max(total, 1))))
        hooks.check_cancelled()
        return kwargs

    return on_step


def strength_steps(steps: int, strength: float) -> int:
    """The steps an image-to-image pipeline runs at ``strength`` (diffusers skips the first
    ``steps - steps * strength``)."""
    return steps - int(max(steps - steps * strength, 0))


@contextlib.contextmanager
def gpu_memory_guard() -> Iterator[None]:
    """CUDA out-of-memory fails the job (``out_of_memory``) and frees the cache, instead of
    killing the worker."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        raise JobFailure(
            "out_of_memory",
            "the GPU ran out of memory on this request; try fewer images or a smaller size",
        ) from exc


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A pipeline's float image in [0, 1] as 8-bit RGB."""
    pixels: np.ndarray = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return pixels


def pil_image(pixels: np.ndarray, size: tuple[int, int] | None = None) -> Any:
    """RGB pixels as a PIL image, resized to ``size`` (width, height) when given."""
    from PIL import Image

    image = Image.fromarray(pixels)
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def at_size(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixels at exactly (width, height) (pipelines may round to their latent grid)."""
    if (pixels.shape[1], pixels.shape[0]) == size:
        return pixels
    return np.asarray(pil_image(pixels, size))
