"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``, and its Img2Img pipeline when the
job has an ``image``) for the four ``stable-diffusion-3*`` models.

The catalog (catalog/stable_diffusion.py) settled the size, steps and cfg with each model's
defaults; here ``cfg`` is diffusers' ``guidance_scale`` (no classifier-free guidance at 1 or
below, which is why the router refuses a negative prompt there) and ``prompt_strength`` is
the img2img ``strength``. Image-to-image keeps the input's proportions at about a megapixel;
a strength of 0 repaints nothing, so the input comes back at that size.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from castframe.catalog.stable_diffusion import image_to_image_size
from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.open_weights import runs

FAMILY = "stable-diffusion-3"
PIPELINE = "StableDiffusion3Pipeline"
IMG2IMG = "StableDiffusion3Img2ImgPipeline"
LICENCE = "Stability AI Community Licence"


def refusals(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the diffusers engine cannot honour in a ``stableDiffusionParams`` job."""
    cfg = params.get("cfg")
    if params.get("negative_prompt") and cfg is not None and float(cfg) <= 1:
        return [
            (
                "negative_prompt",
                "the diffusers engine honours negative_prompt only with cfg above 1 "
                "(classifier-free guidance); raise cfg or leave it out",
            )
        ]
    return []


class StableDiffusion3Runner:
    family = FAMILY

    def __init__(self, pipeline: Any, device: str) -> None:
        self.device = device
        self.pipeline: Any = pipeline
        self.img2img: Any = runs.derived(IMG2IMG, pipeline)

    @classmethod
    def load(cls, model_dir: Path, device: str) -> StableDiffusion3Runner:
        return cls(runs.load(PIPELINE, model_dir, device), device)

    def run(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        steps = int(request.param("steps", 28))
        cfg = float(request.param("cfg", 3.5))
        source = request.inputs.image
        strength = float(request.param("prompt_strength", 0.85))
        if source is not None:
            size = image_to_image_size(*source.size)
            per_image = runs.strength_steps(steps, strength)
        else:
            size = (request.width, request.height)
            per_image = steps
        call: dict[str, Any] = {
            "prompt": request.prompt,
            "num_inference_steps": steps,
            "guidance_scale": cfg,
            "width": size[0],
            "height": size[1],
            "output_type": "np",
        }
        if request.negative_prompt:
            call["negative_prompt"] = request.negative_prompt
        images = []
        for index, seed in enumerate(runs.seeds(request)):
            hooks.check_cancelled()
            if source is not None and per_image == 0:
                pixels = np.asarray(runs.pil_image(source.pixels, size))
            else:
                call["generator"] = runs.generator(seed)
                call["callback_on_step_end"] = runs.step_callback(
                    hooks, index * per_image, per_image * request.num_images
                )
                with runs.gpu_memory_guard():
                    if source is not None:
                        output = self.img2img(
                            image=runs.pil_image(source.pixels, size), strength=strength, **call
                        )
                    else:
                        output = self.pipeline(**call)
                pixels = runs.at_size(runs.to_uint8(output.images[0]), size)
            images.append(
                GeneratedImage(
                    pixels=pixels, seed=seed, prompt=request.prompt, metadata={"steps": steps}
                )
            )
        return EngineResult(
            images=images,
            metadata={
                "family": FAMILY,
                "pipeline": IMG2IMG if source is not None else PIPELINE,
                "steps": steps,
                "cfg": cfg,
            },
        )
