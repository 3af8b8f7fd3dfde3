"""Engine requests for tests, benchmarks and scripts: an ``ideogram-character`` request with
sensible defaults, any field overridable by name.

Common fields (prompt, seed, size…) are the request's; the character, edit image and mask,
and style references become its inputs; every other keyword is a model param.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from castframe.catalog.ideogram_params import ASPECT_SIZES
from castframe.engines.base import EngineInputs, EngineRequest, InputImage
from tests.support.images import astronaut

COMMON = ("model", "prompt", "negative_prompt", "seed", "num_images", "width", "height")


def engine_request(**overrides: Any) -> EngineRequest:
    """A turbo, magic-prompt-off request at the exact size of ``aspect_ratio`` (default 1:1).

    ``reference`` (the character, default the astronaut; None for none), ``edit_image`` with
    ``edit_mask``, ``style_references`` (arrays) and ``reference_bytes`` name the inputs."""
    aspect = str(overrides.pop("aspect_ratio", "1:1"))
    width, height = ASPECT_SIZES.get(aspect, (1024, 1024))
    reference = overrides.pop("reference", None) if "reference" in overrides else astronaut()
    raw = overrides.pop("reference_bytes", b"")
    edit_image = overrides.pop("edit_image", None)
    edit_mask = overrides.pop("edit_mask", None)
    styles = overrides.pop("style_references", ())
    values: dict[str, Any] = {
        "model": "ideogram-character",
        "prompt": "a woman walking in a city street at night",
        "negative_prompt": None,
        "seed": 11,
        "num_images": 1,
        "width": width,
        "height": height,
    }
    params: dict[str, Any] = {
        "style_type": "REALISTIC",
        "magic_prompt_option": "Off",
        "rendering_speed": "turbo",
        "aspect_ratio": aspect,
    }
    for name, value in overrides.items():
        (values if name in COMMON else params)[name] = value
    if edit_image is not None:
        values["width"], values["height"] = edit_image.shape[1], edit_image.shape[0]
    params.update({name: values[name] for name in ("prompt", "negative_prompt", "seed")})
    inputs = EngineInputs(
        character=InputImage(np.asarray(reference), raw) if reference is not None else None,
        image=InputImage(edit_image) if edit_image is not None else None,
        mask=edit_mask,
        style_references=tuple(InputImage(np.asarray(item)) for item in styles),
    )
    return EngineRequest(**values, inputs=inputs, params=params)
