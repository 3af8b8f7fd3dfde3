"""``ideogram-character``: one character reference, a new scene, optional inpainting.

Ideogram 3.0's generate route with a ``character_reference_images`` file (its inpaint route
for a mask edit), priced at Ideogram's character prices. The client chooses the rendering
speed. A saved character (``character_id``, a Castframe extension) may stand in for the image.
"""

from __future__ import annotations

from castframe.catalog import ideogram_params as ideogram
from castframe.catalog.base import ImageField, ModelSpec

IdeogramCharacterRequest = ideogram.ideogram_request(
    "ideogram-character", ideogram.CharacterParams, None, required=True
)


IDEOGRAM_CHARACTER = ModelSpec(
    id="ideogram-character",
    label="Ideogram Character",
    description=(
        "Keep one character consistent across new scenes from a single reference image; "
        "optional inpainting places the character into an existing image under a mask."
    ),
    family="ideogram",
    params_key="ideogramParams",
    request_model=IdeogramCharacterRequest,
    normalise=ideogram.normalise,
    # Ideogram's character prices: turbo $0.10, default $0.15, quality $0.20 per image.
    prices={"turbo": 10, "default": 15, "quality": 20},
    tier=ideogram.speed_tier,
    image_fields=(
        ImageField("character_reference_image", "character", required=True),
        *ideogram.IMAGE_FIELDS[1:],
    ),
    upstream="ideogram",
    saved_character_field="character_reference_image",
    example={
        "prompt": "a detective in a rainy city street at night",
        "model": "ideogram-character",
        "ideogramParams": {
            "character_reference_image": "https://example.com/me.jpg",
            "style_type": "REALISTIC",
            "rendering_speed": "turbo",
        },
    },
)
