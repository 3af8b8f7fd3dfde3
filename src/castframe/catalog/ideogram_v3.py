"""``ideogram-v3-turbo``, ``-balanced`` and ``-quality``: Ideogram 3.0.

One model per rendering speed (the id fixes it: a different ``rendering_speed`` in the
params is a 400, the same one is accepted). Text to image with Ideogram 3.0's ratios, sizes,
style presets, negative prompt and up to three style references; a mask edit goes to its
inpaint route; a character reference is optional and, when given, priced at Ideogram's
character prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from castframe.catalog import ideogram_params as ideogram
from castframe.catalog.base import ModelSpec

PRICES = {
    # Ideogram 3.0 per image: turbo $0.03, default $0.06, quality $0.09; with a character
    # reference Ideogram charges its character prices ($0.10, $0.15, $0.20).
    "standard": {"turbo": 3, "default": 6, "quality": 9},
    "character": {"turbo": 10, "default": 15, "quality": 20},
}
LABELS = {"turbo": "Turbo", "default": "Balanced", "quality": "Quality"}
IDS = {
    "turbo": "ideogram-v3-turbo",
    "default": "ideogram-v3-balanced",
    "quality": "ideogram-v3-quality",
}


def _tier(params: Mapping[str, Any]) -> str:
    with_character = params.get("character_reference_image") or params.get("character_id")
    return "character" if with_character else "standard"


def _spec(speed: str) -> ModelSpec:
    model_id = IDS[speed]
    return ModelSpec(
        id=model_id,
        label=f"Ideogram 3.0 {LABELS[speed]}",
        description=(
            f"Ideogram 3.0 at its {speed} rendering speed: strong typography and layout, "
            "style presets and style references, an optional character reference, and mask "
            "edits."
        ),
        family="ideogram",
        params_key="ideogramParams",
        request_model=ideogram.ideogram_request(model_id, ideogram.IdeogramParams, speed),
        normalise=ideogram.normalise,
        prices={tier: prices[speed] for tier, prices in PRICES.items()},
        tier=_tier,
        image_fields=ideogram.IMAGE_FIELDS,
        upstream="ideogram",
        saved_character_field="character_reference_image",
        example={
            "prompt": 'a poster that says "Castframe" in bold letters',
            "model": model_id,
            "ideogramParams": {"aspect_ratio": "3:4", "style_type": "DESIGN"},
        },
    )


IDEOGRAM_V3 = tuple(_spec(speed) for speed in IDS)
