"""What the ``tools`` engine cannot honour, per model: each a 400 at submission naming the
engine and the field, never a silently ignored parameter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENGINE = "tools"
BG_REMOVE_MODELS = ("bria-bg-remove", "851-bg-remove")
UPSCALE_MODELS = ("topaz-image-upscale", "clarity-upscale")
TOPAZ_TYPES = {
    # Topaz's model_type -> the Real-ESRGAN weights that stand in for it.
    "standard-v2": "x4plus",
    "high-fidelity-v2": "x4plus",
    "low-res-v2": "x4plus",
    "cgi": "x4plus-anime",
}
CLARITY_DIFFUSION_FIELDS = (
    "prompt",
    "negative_prompt",
    "creativity",
    "resemblance",
    "dynamic",
    "num_inference_steps",
)


def serves(model_id: str) -> bool:
    return model_id in BG_REMOVE_MODELS or model_id in UPSCALE_MODELS


def check_params(model_id: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each parameter of a job of ``model_id`` this engine cannot
    honour."""
    refusals: list[tuple[str, str]] = []
    if model_id == "bria-bg-remove" and params.get("content_moderation"):
        refusals.append(
            (
                "content_moderation",
                f"the {ENGINE} engine runs Bria's RMBG-2.0 model locally, without Bria's content "
                "moderation: send content_moderation false or leave it out",
            )
        )
    if model_id == "topaz-image-upscale":
        model_type = params.get("model_type")
        if model_type is not None and model_type not in TOPAZ_TYPES:
            refusals.append(
                (
                    "model_type",
                    f"the {ENGINE} engine upscales with Real-ESRGAN, not Topaz: model_type "
                    f"{model_type!r} (a generative or text model) has no equivalent; use one of "
                    f"{', '.join(TOPAZ_TYPES)}",
                )
            )
        if params.get("face_enhance"):
            refusals.append(
                (
                    "face_enhance",
                    f"the {ENGINE} engine upscales with Real-ESRGAN, which has no face "
                    "enhancement: send face_enhance false or leave it out",
                )
            )
    if model_id == "clarity-upscale":
        for name in CLARITY_DIFFUSION_FIELDS:
            if params.get(name) is not None:
                refusals.append(
                    (
                        name,
                        f"the {ENGINE} engine upscales with Real-ESRGAN, not Clarity's diffusion "
                        f"model: {name} has no effect there; leave it out",
                    )
                )
    return refusals
