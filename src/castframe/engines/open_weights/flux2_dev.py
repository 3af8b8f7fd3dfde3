"""FLUX.2 [dev] (``Flux2Pipeline``) for ``flux-2-dev``, served only where the operator
turned CASTFRAME_DIFFUSERS_FLUX_2_DEV on (FLUX [dev] Non-Commercial License).

``fluxParams`` as Replicate's FLUX.2 [dev] takes it: the size the catalog settled (or the
first input image's, for ``resolution: match_input_image``), ``guidance`` as the distilled
guidance scale (4 by default), ``steps`` (28 by default; ``go_fast`` halves the default),
``seed``, ``input_images`` (and ``image_prompt``) as reference images, and
``prompt_upsampling`` as the pipeline's own caption upsampling. ``raw`` and
``image_prompt_strength`` exist only on BFL's hosted models: the router refuses them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.open_weights import runs
from castframe.engines.open_weights.families import text_encoder_layers

FAMILY = "flux2-dev"
PIPELINE = "Flux2Pipeline"
LICENCE = "FLUX [dev] Non-Commercial License"
DEFAULT_STEPS = 28
DEFAULT_GUIDANCE = 4.0
UPSAMPLE_TEMPERATURE = 0.15
HOSTED_ONLY = ("raw", "image_prompt_strength")
MAX_PIXELS = 4 * 1024 * 1024


def refusals(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The fields only BFL's hosted FLUX models have."""
    return [
        (
            name,
            f"the diffusers engine (FLUX.2 [dev] on this server) cannot honour {name}: "
            "only Black Forest Labs' hosted models have it; leave it out",
        )
        for name in HOSTED_ONLY
        if params.get(name) not in (None, False)
    ]


def match_size(width: int, height: int) -> tuple[int, int]:
    """An input image's size as FLUX.2 makes it: multiples of 16, at most 4 MP and 2048 a
    side, at least 256."""
    scale = min(1.0, math.sqrt(MAX_PIXELS / (width * height)), 2048 / max(width, height))

    def fit(side: float) -> int:
        return min(2048, max(256, int(side * scale) // 16 * 16))

    return fit(width), fit(height)


class Flux2DevRunner:
    family = FAMILY

    def __init__(self, pipeline: Any, device: str) -> None:
        self.device = device
        self.pipeline: Any = pipeline
        encoder = self.pipeline.text_encoder.config
        text = getattr(encoder, "text_config", encoder)
        self.layers = text_encoder_layers(
            text.hidden_size,
            self.pipeline.transformer.config.joint_attention_dim,
            text.num_hidden_layers,
        )

    @classmethod
    def load(cls, model_dir: Path, device: str) -> Flux2DevRunner:
        return cls(runs.load(PIPELINE, model_dir, device), device)

    def run(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        references = [
            runs.pil_image(item.pixels)
            for item in (*request.inputs.references, *request.inputs.style_references)
        ]
        size = (request.width, request.height)
        if request.param("match_input_image") and references:
            size = match_size(*references[0].size)
        default_steps = DEFAULT_STEPS // 2 if request.param("go_fast") else DEFAULT_STEPS
        steps = int(request.param("steps", default_steps))
        guidance = float(request.param("guidance", DEFAULT_GUIDANCE))
        call: dict[str, Any] = {
            "prompt": request.prompt,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "width": size[0],
            "height": size[1],
            "text_encoder_out_layers": self.layers,
            "output_type": "np",
        }
        if references:
            call["image"] = references
        if request.param("prompt_upsampling"):
            call["caption_upsample_temperature"] = UPSAMPLE_TEMPERATURE
        images = []
        for index, seed in enumerate(runs.seeds(request)):
            hooks.check_cancelled()
            call["generator"] = runs.generator(seed)
            call["callback_on_step_end"] = runs.step_callback(
                hooks, index * steps, steps * request.num_images
            )
            with runs.gpu_memory_guard():
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
                "pipeline": PIPELINE,
                "steps": steps,
                "guidance": guidance,
                "references": len(references),
            },
        )
