"""The ``diffusers`` engine: open-weights character models on the operator's own GPU."""

from castframe.engines.open_weights.families import FAMILIES, Family, detect_family

__all__ = ["FAMILIES", "Family", "detect_family"]
