"""Qwen-Image for ``qwen-image``: ``QwenImagePipeline`` (text-to-image),
``QwenImageImg2ImgPipeline`` (image-to-image, on the same loaded weights) and, for the
image-edit task, ``QwenImageEditPlusPipeline`` on the Qwen-Image-Edit weights (the
``qwen-image:edit`` key of CASTFRAME_DIFFUSERS_MODELS, another checkpoint).

``guidance_scale`` is Qwen's ``true_cfg_scale``: true classifier-free guidance, which runs
only above 1 and with a negative prompt, so a blank one (" ") stands in when the request has
none (diffusers documents that plain ``guidance_scale`` has no effect on Qwen-Image). The
steps are the catalog's, after ``acceleration``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from castframe.catalog.qwen_image import fit_image_size
from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.open_weights import runs

FAMILY = "qwen-image"
PIPELINE = "QwenImagePipeline"
IMG2IMG = "QwenImageImg2ImgPipeline"
EDIT = "QwenImageEditPlusPipeline"
LICENCE = "Apache-2.0"


def refusals(params: Mapping[str, Any], has_edit_weights: bool) -> list[tuple[str, str]]:
    """What the diffusers engine cannot honour in a ``qwenImageParams`` job."""
    problems = []
    if params.get("task_type") == "image-edit" and not has_edit_weights:
        problems.append(
            (
                "task_type",
                "the diffusers engine has no Qwen-Image-Edit weights for image-edit on this "
                'server (CASTFRAME_DIFFUSERS_MODELS "qwen-image:edit")',
            )
        )
    guidance = params.get("guidance_scale")
    if params.get("negative_prompt") and guidance is not None and float(guidance) <= 1:
        problems.append(
            (
                "negative_prompt",
                "the diffusers engine honours negative_prompt only with guidance_scale above "
                "1 (true classifier-free guidance); raise it or leave it out",
            )
        )
    return problems


class QwenImageRunner:
    family = FAMILY

    def __init__(self, pipeline: Any, device: str, editor: Any = None) -> None:
        self.device = device
        self.pipeline: Any = pipeline
        self.img2img: Any = runs.derived(IMG2IMG, pipeline)
        self.editor: Any = editor

    @classmethod
    def load(cls, model_dir: Path, device: str, edit_dir: Path | None = None) -> QwenImageRunner:
        editor = runs.load(EDIT, edit_dir, device) if edit_dir else None
        return cls(runs.load(PIPELINE, model_dir, device), device, editor)

    def run(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        task = str(request.param("task_type", "text-to-image"))
        steps = int(request.param("steps", 30))
        guidance = float(request.param("guidance_scale", 2.5))
        source = request.inputs.image
        size = (request.width, request.height)
        if source is not None and request.param("size_from_image"):
            size = fit_image_size(*source.size)
        strength = float(request.param("strength", 0.6))
        per_image = runs.strength_steps(steps, strength) if task == "image-to-image" else steps
        call: dict[str, Any] = {
            "prompt": request.prompt,
            "num_inference_steps": steps,
            "true_cfg_scale": guidance,
            "width": size[0],
            "height": size[1],
            "output_type": "np",
        }
        if guidance > 1:
            call["negative_prompt"] = request.negative_prompt or " "
        pipeline = {"image-to-image": self.img2img, "image-edit": self.editor}.get(
            task, self.pipeline
        )
        if task != "text-to-image":
            assert source is not None, "the catalog requires image_url for image tasks"
            image = runs.pil_image(source.pixels, size)
            call["image"] = [image] if task == "image-edit" else image
            if task == "image-to-image":
                call["strength"] = strength
        images = []
        for index, seed in enumerate(runs.seeds(request)):
            hooks.check_cancelled()
            if task == "image-to-image" and per_image == 0:
                pixels = np.asarray(call["image"])
            else:
                call["generator"] = runs.generator(seed)
                call["callback_on_step_end"] = runs.step_callback(
                    hooks, index * per_image, per_image * request.num_images
                )
                with runs.gpu_memory_guard():
                    output = pipeline(**call)
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
                "pipeline": {"image-to-image": IMG2IMG, "image-edit": EDIT}.get(task, PIPELINE),
                "taskType": task,
                "steps": steps,
                "trueCfgScale": guidance,
            },
        )
