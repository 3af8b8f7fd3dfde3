"""``ideogram-v2``, ``-v2-turbo``, ``-v2a`` and ``-v2a-turbo``: Ideogram 2.x, legacy API.

Ideogram serves these through its legacy JSON generate route (``image_request.model``
V_2, V_2_TURBO, V_2A, V_2A_TURBO), with its legacy ratios and style types (RENDER_3D,
ANIME). Its legacy edit route takes only V_2 and V_2_TURBO, so the 2a models have no mask
edit on any engine. The model id fixes the speed (turbo or not).
"""

from __future__ import annotations

from castframe.catalog import ideogram_params as ideogram
from castframe.catalog.base import ModelSpec

MODELS = {
    # id: (label, speed, params class, credits per image)
    # Ideogram's legacy prices: 2.0 $0.08, 2.0 Turbo $0.05, 2a $0.04, 2a Turbo $0.025
    # (rounded up to whole credits).
    "ideogram-v2": ("Ideogram 2.0", "default", ideogram.V2Params, 8),
    "ideogram-v2-turbo": ("Ideogram 2.0 Turbo", "turbo", ideogram.V2Params, 5),
    "ideogram-v2a": ("Ideogram 2a", "default", ideogram.V2aParams, 4),
    "ideogram-v2a-turbo": ("Ideogram 2a Turbo", "turbo", ideogram.V2aParams, 3),
}


def _spec(model_id: str) -> ModelSpec:
    label, speed, params, credits = MODELS[model_id]
    edits = "with mask edits" if params.edits else "text to image only"
    return ModelSpec(
        id=model_id,
        label=label,
        description=f"{label} on Ideogram's legacy API, {edits}.",
        family="ideogram",
        params_key="ideogramParams",
        request_model=ideogram.ideogram_request(model_id, params, speed),
        normalise=ideogram.normalise,
        prices={"standard": credits},
        image_fields=ideogram.IMAGE_FIELDS,
        upstream="ideogram",
        saved_character_field="character_reference_image",
        example={
            "prompt": "a watercolor fox in a snowy forest",
            "model": model_id,
            "ideogramParams": {"aspect_ratio": "16:9", "style_type": "Render_3d"},
        },
    )


IDEOGRAM_V2 = tuple(_spec(model_id) for model_id in MODELS)
