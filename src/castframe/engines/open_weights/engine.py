"""The ``diffusers`` engine: open-weights pipelines inside ``castframe worker``.

``OpenWeightsEngine`` is the engine the router builds: it holds every model whose weights the
operator configured and hands each job to its family's module (sd3.py, qwen_image.py,
flux2_dev.py) or, for ``ideogram-character``, to ``DiffusersEngine`` below.

``DiffusersEngine``: character-consistent generation on one local pipeline. The pipeline is loaded once (bf16 on CUDA, float32 on CPU) from a local directory. Each
image has its own ``torch.Generator`` seeded with seed + index, so images are reproducible one
by one, whether they run one call each or (``batch_images``) in one call; progress is reported
per denoising step and cancellation is checked between steps. CUDA out-of-memory frees the cache and fails the job (``out_of_memory``) instead
of killing the worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.open_weights.families import (
    Family,
    detect_family,
    missing_requirements,
    styled_prompt,
    text_encoder_layers,
)
from castframe.engines.open_weights.weights import FLUX_2_DEV, QWEN_EDIT_KEY
from castframe.engines.prompt import expand_prompt
from castframe.errors import JobFailure

log = logging.getLogger("castframe.engines.diffusers")


@dataclass(frozen=True)
class SpeedUps:
    compile: bool = False
    first_block_cache: bool = False
    channels_last_vae: bool = False
    batch_images: bool = False
    """A job's images in one pipeline call (each still with its own seeded generator)."""


class DiffusersEngine:
    name = "diffusers"

    def __init__(
        self,
        model_dir: str,
        device: str = "auto",
        speedups: SpeedUps | None = None,
        lora: str = "",
    ) -> None:
        import torch
        from diffusers import DiffusionPipeline

        self.family: Family = detect_family(model_dir)
        missing = missing_requirements(self.family)
        if missing:
            raise ValueError(
                f"{self.family.name} pipelines need {', '.join(missing)}: install it next to "
                f"torch (matching its version), e.g. pip install {' '.join(missing)}"
            )
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
        self.few_step = False
        if lora:
            self._fuse_lora(lora)
        self.editor: Any = None
        if self.family.edit_class:
            import diffusers

            editor_class = getattr(diffusers, self.family.edit_class)
            self.editor = editor_class.from_pipe(self.pipeline)
            self.editor.set_progress_bar_config(disable=True)
        self._apply_speedups()
        self._lock = threading.Lock()  # one GPU, one job at a time in this process

    def _fuse_lora(self, path: str) -> None:
        """Load a local LoRA (a .safetensors file or a directory) and fuse it into the weights.

        Fused once at start, so it costs nothing per step; the edit pipeline, derived from
        this one afterwards, shares the fused weights. A step-distilled LoRA (Lightning)
        switches the family to its few-step preset.
        """
        from pathlib import Path

        lora = Path(path)
        if not lora.exists():
            raise ValueError(f"CASTFRAME_DIFFUSERS_LORA: {path} does not exist")
        if lora.is_file():
            self.pipeline.load_lora_weights(str(lora.parent), weight_name=lora.name)
        else:
            self.pipeline.load_lora_weights(str(lora))
        self.pipeline.fuse_lora()
        self.pipeline.unload_lora_weights()  # the fused weights stay; the adapter goes
        self.few_step = self.family.few_step_steps is not None
        log.info("fused LoRA %s (few-step preset: %s)", path, self.few_step)

    def _apply_speedups(self) -> None:
        transformer = self.pipeline.transformer
        if self.speedups.channels_last_vae:
            import torch

            # Per convolution: Qwen-Image's VAE is a video VAE whose Conv3d weights take the
            # 3-D layout (and which mixes in tensors of other ranks).
            for module in self.pipeline.vae.modules():
                if isinstance(module, torch.nn.Conv3d):
                    module.to(memory_format=torch.channels_last_3d)
                elif isinstance(module, torch.nn.Conv2d):
                    module.to(memory_format=torch.channels_last)
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
        if not self.family.stacks_text_encoder_layers:
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

        inputs = request.inputs
        editing = inputs.editing
        if inputs.character is None:
            raise JobFailure("engine_error", f"{self.family.name} needs a character reference")
        reference = Image.fromarray(inputs.character.pixels)
        base = self.family.call_kwargs(
            str(request.param("rendering_speed", "default")),
            request.negative_prompt,
            few_step=self.few_step,
        )
        steps = int(base["num_inference_steps"])
        seeds = [(request.seed + index) % 2_147_483_648 for index in range(request.num_images)]
        magic = str(request.param("magic_prompt_option", "Auto"))
        prompts = [expand_prompt(request.prompt, magic, s) for s in seeds]
        # One pipeline call per image (per-image progress), or, when they share one prompt
        # (magic prompt gives each image its own), one call for all of them, each image still
        # from its own seeded generator.
        batched = (
            self.speedups.batch_images
            and not editing
            and request.num_images > 1
            and len(set(prompts)) == 1
        )
        groups = [list(range(len(seeds)))] if batched else [[i] for i in range(len(seeds))]
        calls_total = steps * len(groups)
        pixels: list[np.ndarray] = []
        with self._lock:
            for number, group in enumerate(groups):
                hooks.check_cancelled()
                done_before = number * steps

                def on_step(
                    _pipe: Any, step: int, _t: Any, kwargs: dict[str, Any], done: int = done_before
                ) -> dict[str, Any]:
                    hooks.progress(5 + int(90 * (done + step + 1) / calls_total))
                    hooks.check_cancelled()
                    return kwargs

                generators = [torch.Generator(device="cpu").manual_seed(seeds[i]) for i in group]
                styled = [
                    styled_prompt(
                        prompts[i],
                        str(request.param("style_type", "AUTO")),
                        request.param("style_preset"),
                    )
                    for i in group
                ]
                call: dict[str, Any] = {
                    **base,
                    **self._extra_kwargs(),
                    "prompt": styled[0],
                    "generator": generators if batched else generators[0],
                    "callback_on_step_end": on_step,
                    "output_type": "np",
                }
                if batched:
                    call["num_images_per_prompt"] = len(group)
                try:
                    if editing:
                        pixels.append(self._edit(request, reference, call))
                    else:
                        pixels.extend(self._generate(request, reference, call))
                except torch.cuda.OutOfMemoryError as exc:
                    torch.cuda.empty_cache()
                    raise JobFailure(
                        "out_of_memory",
                        "the GPU ran out of memory on this "
                        "request; try fewer images or a smaller size",
                    ) from exc
        images = [
            GeneratedImage(pixels=image, seed=seed, prompt=prompt, metadata={"steps": steps})
            for image, seed, prompt in zip(pixels, seeds, prompts, strict=True)
        ]
        return EngineResult(
            images=images,
            metadata={
                "engine": self.name,
                "family": self.family.name,
                "device": self.device,
                "fewStep": self.few_step,
                "negativePromptHonoured": "negative_prompt" in base,
            },
        )

    def _generate(
        self, request: EngineRequest, reference: Any, call: dict[str, Any]
    ) -> list[np.ndarray]:
        image: Any = [reference] if self.family.reference_as_list else reference
        output = self.pipeline(image=image, height=request.height, width=request.width, **call)
        return [to_uint8(item) for item in output.images]

    def _edit(self, request: EngineRequest, reference: Any, call: dict[str, Any]) -> np.ndarray:
        from PIL import Image

        edit, edit_mask = request.inputs.image, request.inputs.mask
        assert edit is not None and edit_mask is not None
        image = Image.fromarray(edit.pixels)
        # diffusers' masks are white = repaint; Castframe's (and Ideogram's) black = repaint.
        mask = Image.fromarray(np.where(edit_mask, 255, 0).astype(np.uint8))
        height, width = edit.pixels.shape[:2]
        if self.family.edit_with_references:
            # Qwen-Image-Edit-Plus edits with several images: the scene first, then the
            # character it must place; the mask is applied below, when composing the result.
            output = self.pipeline(image=[image, reference], height=height, width=width, **call)
        elif self.editor is not None:
            output = self.editor(
                image=image,
                mask_image=mask,
                image_reference=reference,
                height=height,
                width=width,
                **call,
            )
        else:
            raise JobFailure("engine_error", f"{self.family.name} has no edit pipeline")
        # Pipelines may round the size to their latent grid: bring it back.
        result = to_uint8(output.images[0])
        if result.shape[:2] != (height, width):
            result = np.asarray(
                Image.fromarray(result).resize((width, height), Image.Resampling.LANCZOS)
            )
        # Keep the unmasked pixels exactly as given, like the other engines.
        kept: np.ndarray = np.where(edit_mask[..., None], result, edit.pixels)
        return kept.astype(np.uint8)


CHARACTER_MODELS = frozenset({"ideogram-character"})
"""Character-consistent generation and mask edits from one reference, on the open-weights
families of families.py (CASTFRAME_DIFFUSERS_MODEL)."""
OPEN_MODELS = frozenset(
    {
        "stable-diffusion-3.5-large",
        "stable-diffusion-3.5-large-turbo",
        "stable-diffusion-3.5-medium",
        "stable-diffusion-3",
        "qwen-image",
        "flux-2-dev",
    }
)
"""Apiframe's open models, each on its own weights (CASTFRAME_DIFFUSERS_MODELS)."""
SERVED_MODELS = CHARACTER_MODELS | OPEN_MODELS
"""Every catalog model this engine can serve; which it does serve on a server is the
models whose weights are configured (weights.py: ``holds``)."""


def serves(model_id: str) -> bool:
    return model_id in SERVED_MODELS


class Runner(Protocol):
    family: str

    def run(self, request: EngineRequest, hooks: RunHooks) -> EngineResult: ...


def build_runner(model_id: str, path: Path, device: str, edit_dir: Path | None = None) -> Runner:
    """The pipeline family module that runs ``model_id``, loaded from ``path``."""
    if model_id.startswith("stable-diffusion-3"):
        from castframe.engines.open_weights.sd3 import StableDiffusion3Runner

        return StableDiffusion3Runner.load(path, device)
    if model_id == "qwen-image":
        from castframe.engines.open_weights.qwen_image import QwenImageRunner

        return QwenImageRunner.load(path, device, edit_dir)
    if model_id == "flux-2-dev":
        from castframe.engines.open_weights.flux2_dev import Flux2DevRunner

        return Flux2DevRunner.load(path, device)
    raise ValueError(f"the diffusers engine has no pipeline family for {model_id}")


class OpenWeightsEngine:
    """The ``diffusers`` engine of a worker: every model whose weights the operator
    configured, loaded once at start on one device, one job at a time (one GPU)."""

    name = "diffusers"

    def __init__(
        self,
        weights: Mapping[str, Path],
        device: str = "auto",
        *,
        character_dir: str = "",
        speedups: SpeedUps | None = None,
        lora: str = "",
        flux_2_dev: bool = False,
    ) -> None:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.character: DiffusersEngine | None = (
            DiffusersEngine(character_dir, device, speedups, lora) if character_dir else None
        )
        edit_dir = weights.get(QWEN_EDIT_KEY)
        self.runners: dict[str, Runner] = {}
        for model_id, path in weights.items():
            if model_id == QWEN_EDIT_KEY or (model_id == FLUX_2_DEV and not flux_2_dev):
                continue  # the edit weights belong to qwen-image; flux-2-dev is not turned on
            self.runners[model_id] = build_runner(model_id, path, device, edit_dir)
        self._lock = threading.Lock()  # one GPU, one job at a time in this process

    @classmethod
    def with_runners(cls, runners: Mapping[str, Runner], device: str) -> OpenWeightsEngine:
        """An engine around pipelines already built (benchmarks time random weights of the
        real architecture without writing tens of gigabytes to disk)."""
        engine = cls({}, device)
        engine.runners = dict(runners)
        return engine

    @property
    def models(self) -> list[str]:
        """The models this engine holds weights for."""
        return [*(["ideogram-character"] if self.character else []), *self.runners]

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        if request.model in CHARACTER_MODELS and self.character is not None:
            with self._lock:
                return self.character.generate(request, hooks)
        runner = self.runners.get(request.model)
        if runner is None:
            raise JobFailure(
                "engine_error", f"the diffusers engine holds no weights for {request.model}"
            )
        with self._lock:
            result = runner.run(request, hooks)
        result.metadata = {"engine": self.name, "device": self.device, **result.metadata}
        return result


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A pipeline's float image in [0, 1] as 8-bit RGB."""
    pixels: np.ndarray = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return pixels
