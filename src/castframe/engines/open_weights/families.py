"""Supported model families: how each maps Castframe's parameters onto its pipeline (pure).

The family is read from the saved pipeline's ``model_index.json`` (``_class_name``), so an
operator points ``CASTFRAME_DIFFUSERS_MODEL`` at a ``save_pretrained`` directory and nothing
else. No weights are downloaded at run time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STYLE_CLAUSES = {
    "AUTO": "",
    "GENERAL": "",
    "REALISTIC": "photorealistic photograph, natural skin texture, real lighting",
    "DESIGN": "flat graphic design poster, bold shapes, limited palette",
    "FICTION": "fantasy illustration, painterly, cinematic",
}


@dataclass(frozen=True)
class Family:
    name: str
    generate_class: str
    edit_class: str | None
    pipeline_classes: tuple[str, ...]
    steps: dict[str, int]
    """Denoising steps per rendering speed."""
    true_cfg: bool
    """Whether a negative prompt can be honoured (true classifier-free guidance)."""
    supports_first_block_cache: bool
    """diffusers 0.42's first-block-cache hook fails on FLUX.2's transformer (its blocks
    return lists); families without support ignore the setting with a warning."""
    licence: str
    requires: tuple[str, ...] = ()
    """Python packages the family's pipeline imports beyond diffusers and transformers."""
    reference_as_list: bool = False
    """The pipeline's ``image`` is a list of references for one prompt."""
    stacks_text_encoder_layers: bool = False
    """The pipeline takes ``text_encoder_out_layers`` (FLUX.2: hidden states of several layers)."""
    edit_with_references: bool = False
    """Edits run the main pipeline on [scene, reference] and the mask is applied when
    composing the result (the family's own inpainting pipeline cannot see the character)."""
    few_step_steps: dict[str, int] | None = None
    """Steps per speed with a step-distilled LoRA fused (Lightning); None: unchanged."""

    def call_kwargs(
        self, speed: str, negative_prompt: str | None, few_step: bool = False
    ) -> dict[str, Any]:
        """Pipeline arguments for a speed; ``few_step`` when a distilled LoRA is fused
        (distilled guidance: no true CFG, so no negative prompt)."""
        if few_step and self.few_step_steps:
            return {"num_inference_steps": self.few_step_steps[speed]}
        kwargs: dict[str, Any] = {"num_inference_steps": self.steps[speed]}
        if self.true_cfg and negative_prompt:
            kwargs["negative_prompt"] = negative_prompt
            kwargs["true_cfg_scale"] = 4.0
        return kwargs


FLUX2_KLEIN = Family(
    name="flux2-klein",
    generate_class="Flux2KleinPipeline",
    edit_class="Flux2KleinInpaintPipeline",
    pipeline_classes=("Flux2KleinPipeline", "Flux2KleinInpaintPipeline"),
    steps={"turbo": 4, "default": 4, "quality": 8},
    true_cfg=False,
    supports_first_block_cache=False,
    stacks_text_encoder_layers=True,
    licence="FLUX.2 [klein] 4B: Apache-2.0 (the 9B variants are non-commercial)",
)
QWEN_IMAGE_EDIT = Family(
    name="qwen-image-edit",
    generate_class="QwenImageEditPlusPipeline",
    edit_class=None,
    # Plus (2509/2511) only: the multi-image pipeline is what puts a character into a scene.
    pipeline_classes=("QwenImageEditPlusPipeline",),
    steps={"turbo": 20, "default": 40, "quality": 50},
    true_cfg=True,
    supports_first_block_cache=True,
    licence="Qwen-Image-Edit-2509/2511: Apache-2.0",
    # Its Qwen2-VL processor carries a video processor that transformers builds with torchvision.
    requires=("torchvision",),
    reference_as_list=True,
    edit_with_references=True,
    # Qwen-Image-Lightning ships 4-step and 8-step LoRAs.
    few_step_steps={"turbo": 4, "default": 8, "quality": 8},
)
FAMILIES = (FLUX2_KLEIN, QWEN_IMAGE_EDIT)


def detect_family(model_dir: str | Path) -> Family:
    """The family of a saved pipeline, or ValueError saying what is supported."""
    index = Path(model_dir) / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{model_dir} has no model_index.json: point CASTFRAME_DIFFUSERS_MODEL "
            "at a diffusers save_pretrained directory"
        )
    class_name = json.loads(index.read_text()).get("_class_name", "")
    for family in FAMILIES:
        if class_name in family.pipeline_classes:
            return family
    supported = ", ".join(c for f in FAMILIES for c in f.pipeline_classes)
    raise ValueError(f"unsupported pipeline {class_name!r} in {model_dir}; supported: {supported}")


def missing_requirements(family: Family) -> list[str]:
    """The family's extra packages that cannot be found in this environment."""
    import importlib.util

    return [name for name in family.requires if importlib.util.find_spec(name) is None]


def styled_prompt(prompt: str, style_type: str, style_preset: str | None = None) -> str:
    """The prompt with the style's words; a style preset is named in words (OIL_PAINTING ->
    "in the style of oil painting"), which is how text-conditioned open models take a look."""
    clauses = [STYLE_CLAUSES.get(style_type, "")]
    if style_preset:
        clauses.append("in the style of " + style_preset.replace("_", " ").lower())
    return ", ".join([prompt, *(clause for clause in clauses if clause)])


def check_params(
    params: Mapping[str, Any], family: Family, few_step: bool = False
) -> list[tuple[str, str]]:
    """Submission-time refusals for jobs routed to the diffusers engine running ``family``
    (``few_step``: a step-distilled LoRA is fused, which has no true CFG either)."""
    problems = []
    if params.get("style_reference_images"):
        problems.append(
            (
                "style_reference_images",
                "the diffusers engine cannot use style_reference_images; describe the look "
                "in the prompt or use style_preset",
            )
        )
    if params.get("negative_prompt") and (not family.true_cfg or few_step):
        reason = "a step-distilled LoRA" if family.true_cfg else family.name
        problems.append(
            (
                "negative_prompt",
                f"the diffusers engine cannot honour negative_prompt with {reason} "
                "(no true classifier-free guidance); leave it out",
            )
        )
    return problems


def text_encoder_layers(
    hidden_size: int, joint_attention_dim: int, num_layers: int
) -> tuple[int, ...]:
    """Which text-encoder layers FLUX.2 stacks: evenly spaced, as many as the transformer takes.

    For klein 4B (Qwen3-4B: 36 layers, 2560 wide; joint dim 7680) this gives (9, 18, 27), the
    pipeline's own default; tiny test models get what fits them.
    """
    count = max(1, joint_attention_dim // max(hidden_size, 1))
    return tuple(max(1, round(k * num_layers / (count + 1))) for k in range(1, count + 1))
