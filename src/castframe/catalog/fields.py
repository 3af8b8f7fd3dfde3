"""Field types the open-model params blocks share (``stableDiffusionParams``,
``qwenImageParams``): JSON numbers that are numbers, seeds, image sources."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictInt

from castframe.catalog.base import MAX_SEED


def _json_number(value: Any) -> Any:
    """A JSON number (an integer is one too); booleans and strings are not, although
    pydantic's lax floats would take ``true`` or ``"3.5"``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return float(value)


# The bounds come before the type check, so the JSON Schema shows them as minimum/maximum.
Fraction = Annotated[float, Field(ge=0, le=1), BeforeValidator(_json_number)]
"""A JSON number from 0 to 1 (strengths)."""
Scale = Annotated[float, Field(ge=0, le=20), BeforeValidator(_json_number)]
"""A JSON number from 0 to 20 (guidance scales)."""
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
Source = Annotated[str, Field(min_length=1, max_length=30 * 1024 * 1024)]
"""An image: an http(s) URL, a data:image/...;base64 URI, or upload://id."""


def lower(value: Any) -> Any:
    """Enum spellings are matched without regard to case (``PNG`` is ``png``)."""
    return value.strip().lower() if isinstance(value, str) else value
