"""``DiffusersEngine``: runs a local diffusers pipeline inside ``castframe worker``.

The pipeline is loaded once (bf16 on CUDA, float32 on CPU) from a local directory. Each
image is its own call with its own ``torch.Generator`` seeded with seed + index, so images are
reproducible one by one; progress is reported per denoising step and cancellation is checked
between steps. CUDA out-of-memory frees the cache and fails the job (``out_of_memory``) instead
of killing the worker.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.open_weights.families import (
    Family,
    detect_family,
    styled_prompt,
    text_encoder_layers,
)
from castframe.engines.prompt import expand_prompt
from castframe.errors import JobFailure

log = logging.getLogger("castframe.engines.diffusers")


@dataclass(frozen=True)
class SpeedUps:
    compile: bool = False
    first_block_cache: bool = False
    channels_last_vae: bool = False


class DiffusersEngine:
    name = "diffusers"

    def __init__(
        self, model_dir: str, device: str = "auto", speedups: SpeedUps | None = None
    ) -> None:
        import torch
        from diffusers import DiffusionPipeline

        self.family: Family = detect_family(model_dir)
        self.speedups = speedups or SpeedUps()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        log.info(
            "loading %s pipeline from %s on %s (%s)", self.family.name, model_dir, device, dtype
        )
        self.pipeline: Any = DiffusionPipeline.from_pretrained(model_dir, dtype=dtype)
        self.pipeline.to(device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.editor: Any = None
        if self.family.edit_class:
            import diffusers

            editor_class = getattr(diffusers, self.family.edit_class)
            self.editor = editor_class.from_pipe(self.pipeline)
            self.editor.set_progress_bar_config(disable=True)
        self._apply_speedups()
        self._lock = threading.Lock()  # one GPU, one job at a time in this process

    def _apply_speedups(self) -> None:
        transformer = self.pipeline.transformer
        if self.speedups.channels_last_vae:
            import torch

            self.pipeline.vae.to(memory_format=torch.channels_last)
        cache = self.speedups.first_block_cache and self.family.supports_first_block_cache
        if self.speedups.first_block_cache and not cache:
            log.warning("first-block cache is not supported for %s; ignoring it", self.family.name)
        if cache:
            from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

            apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=0.08))
        if self.speedups.compile:
            # Regional compilation of the repeated blocks: compile time in seconds, not minutes.
            transformer.compile_repeated_blocks(fullgraph=not cache)

    def _extra_kwargs(self) -> dict[str, Any]:
        if self.family.name != "flux2-klein":
            return {}
        config = self.pipeline.text_encoder.config
        layers = text_encoder_layers(
            config.hidden_size,
            self.pipeline.transformer.config.joint_attention_dim,
            config.num_hidden_layers,
        )
        return {"text_encoder_out_layers": layers}

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        import torch
        from PIL import Image

        editing = request.edit_image is not None and request.edit_mask is not None
        reference = Image.fromarray(request.reference)
        base = self.family.call_kwargs(request.rendering_speed, request.negative_prompt)
        steps = int(base["num_inference_steps"])
        total = steps * request.num_images
        images: list[GeneratedImage] = []
        with self._lock:
            for index in range(request.num_images):
                hooks.check_canceled()
                seed = (request.seed + index) % 2_147_483_648
                prompt = expand_prompt(request.prompt, request.magic_prompt_option, seed)
                done_before = index * steps

                def on_step(
                    _pipe: Any, step: int, _t: Any, kwargs: dict[str, Any], done: int = done_before
                ) -> dict[str, Any]:
                    hooks.progress(5 + int(90 * (done + step + 1) / total))
                    hooks.check_canceled()
                    return kwargs

                call: dict[str, Any] = {
                    **base,
                    **self._extra_kwargs(),
                    "prompt": styled_prompt(prompt, request.style_type),
                    "generator": torch.Generator(device="cpu").manual_seed(seed),
                    "callback_on_step_end": on_step,
                    "output_type": "np",
                }
                try:
                    if editing:
                        output = self._edit(request, reference, call)
                    else:
                        output = self._generate(request, reference, call)
                except torch.cuda.OutOfMemoryError as exc:
                    torch.cuda.empty_cache()
                    raise JobFailure(
                        "out_of_memory",
                        "the GPU ran out of memory on this "
                        "request; try fewer images or a smaller size",
                    ) from exc
                pixels = (np.clip(output.images[0], 0, 1) * 255 + 0.5).astype(np.uint8)
                images.append(
                    GeneratedImage(
                        pixels=pixels, seed=seed, prompt=prompt, metadata={"steps": steps}
                    )
                )
        return EngineResult(
            images=images,
            metadata={
                "engine": self.name,
                "family": self.family.name,
                "device": self.device,
                "negativePromptHonoured": bool(request.negative_prompt and self.family.true_cfg),
            },
        )

    def _generate(self, request: EngineRequest, reference: Any, call: dict[str, Any]) -> Any:
        image = [reference] if self.family.name == "qwen-image-edit" else reference
        return self.pipeline(image=image, height=request.height, width=request.width, **call)

    def _edit(self, request: EngineRequest, reference: Any, call: dict[str, Any]) -> Any:
        from PIL import Image

        assert request.edit_image is not None and request.edit_mask is not None
        image = Image.fromarray(request.edit_image)
        # diffusers' masks are white = repaint; Castframe's (and Ideogram's) black = repaint.
        mask = Image.fromarray(np.where(request.edit_mask, 255, 0).astype(np.uint8))
        height, width = request.edit_image.shape[:2]
        if self.editor is None:
            raise JobFailure("engine_error", f"{self.family.name} has no inpainting pipeline")
        extra = {"image_reference": reference} if self.family.name == "flux2-klein" else {}
        output = self.editor(
            image=image, mask_image=mask, height=height, width=width, **extra, **call
        )
        # Keep the unmasked pixels exactly as given, like the other engines.
        result = (np.clip(output.images[0], 0, 1) * 255 + 0.5).astype(np.uint8)
        if result.shape[:2] != (height, width):
            result = np.asarray(Image.fromarray(result).resize((width, height)))
        kept = np.where(request.edit_mask[..., None], result, request.edit_image)
        output.images[0] = kept.astype(np.float32) / 255.0
        return output
