"""Engine requests for tests: sensible defaults, any field overridable."""

from __future__ import annotations

from typing import Any

from castframe.catalog.ideogram_character import ASPECT_SIZES
from castframe.engines.base import EngineRequest
from tests.support.images import astronaut


def engine_request(**overrides: Any) -> EngineRequest:
    """A turbo, magic-prompt-off request at the exact size of ``aspect_ratio`` (default 1:1)."""
    aspect = str(overrides.pop("aspect_ratio", "1:1"))
    width, height = ASPECT_SIZES[aspect]
    values: dict[str, Any] = {
        "prompt": "a woman walking in a city street at night",
        "negative_prompt": None,
        "style_type": "REALISTIC",
        "magic_prompt_option": "Off",
        "rendering_speed": "turbo",
        "seed": 11,
        "num_images": 1,
        "width": width,
        "height": height,
        "aspect_ratio": aspect,
        "reference": astronaut(),
    }
    values.update(overrides)
    return EngineRequest(**values)
