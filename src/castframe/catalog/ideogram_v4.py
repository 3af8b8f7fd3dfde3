"""``ideogram-v4-turbo``, ``-balanced`` and ``-quality``: Ideogram 4.0.

Native 2K output at Ideogram 4.0's sizes (a ratio picks its 2K size), one model per
rendering speed. Ideogram's 4.0 route takes only a prompt, a size and the speed: the
``ideogram`` engine refuses every other field at submission (engines/ideogram.py); the sandbox
honours them all. There is no 4.0 mask edit, so ``image`` and ``mask`` are refused for every
engine.
"""

from __future__ import annotations

from castframe.catalog import ideogram_params as ideogram
from castframe.catalog.base import ModelSpec

PRICES = {"turbo": 3, "default": 6, "quality": 10}
"""Ideogram 4.0 per image: turbo $0.03, default $0.06, quality $0.10."""
LABELS = {"turbo": "Turbo", "default": "Balanced", "quality": "Quality"}
IDS = {
    "turbo": "ideogram-v4-turbo",
    "default": "ideogram-v4-balanced",
    "quality": "ideogram-v4-quality",
}


def _spec(speed: str) -> ModelSpec:
    model_id = IDS[speed]
    return ModelSpec(
        id=model_id,
        label=f"Ideogram 4.0 {LABELS[speed]}",
        description=(
            f"Ideogram 4.0 at its {speed} rendering speed: native 2K images with legible text "
            "(prompt, size and speed only)."
        ),
        family="ideogram",
        params_key="ideogramParams",
        request_model=ideogram.ideogram_request(model_id, ideogram.V4Params, speed),
        normalise=ideogram.normalise,
        prices={"standard": PRICES[speed]},
        image_fields=ideogram.IMAGE_FIELDS,
        upstream="ideogram",
        saved_character_field="character_reference_image",
        example={
            "prompt": 'a neon sign that reads "open late" above a rainy street',
            "model": model_id,
            "ideogramParams": {"aspect_ratio": "16:9"},
        },
    )


IDEOGRAM_V4 = tuple(_spec(speed) for speed in IDS)
