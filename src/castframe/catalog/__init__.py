"""The model catalog: one module per model, each a ``ModelSpec``."""

from __future__ import annotations

from castframe.catalog.base import ModelSpec
from castframe.catalog.ideogram_character import IDEOGRAM_CHARACTER

MODELS: dict[str, ModelSpec] = {spec.id: spec for spec in (IDEOGRAM_CHARACTER,)}

__all__ = ["MODELS", "ModelSpec"]
