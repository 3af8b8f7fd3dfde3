"""Apiframe v2's FLUX request variants as JSON Schemas, for contract tests.

Transcribed by hand from Apiframe's published OpenAPI 3.1 spec (``GenerateImageRequest``'s
``oneOf`` variants for flux-1.1-pro, flux-1.1-pro-ultra, flux-2-pro, flux-2-flex and
flux-2-max, and ``ImageEditRequest``'s flux-fill-pro variant). The repository's own copy of
the contract: the spec file is not read at test time.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

WEBHOOK = {
    "webhookEvents": {
        "items": {"enum": ["progress", "completed", "failed"], "type": "string"},
        "minItems": 1,
        "type": "array",
    },
    "webhookUrl": {"format": "uri", "type": "string"},
}


def _flux_params(resolution: Schema) -> Schema:
    return {
        "additionalProperties": False,
        "type": "object",
        "properties": {
            "aspect_ratio": {"pattern": "^\\d+:\\d+$", "type": "string"},
            "go_fast": {"type": "boolean"},
            "guidance": {"maximum": 10, "minimum": 1.5, "type": "number"},
            "height": {"maximum": 2048, "minimum": 256, "type": "integer"},
            "image_prompt": {"format": "uri", "type": "string"},
            "image_prompt_strength": {"maximum": 1, "minimum": 0, "type": "number"},
            "input_images": {
                "items": {"format": "uri", "type": "string"},
                "maxItems": 10,
                "type": "array",
            },
            "output_format": {"enum": ["jpg", "png", "webp"], "type": "string"},
            "output_quality": {"maximum": 100, "minimum": 0, "type": "integer"},
            "prompt_upsampling": {"type": "boolean"},
            "raw": {"type": "boolean"},
            "resolution": resolution,
            "seed": {"type": "integer"},
            "steps": {"maximum": 50, "minimum": 1, "type": "integer"},
            "width": {"maximum": 2048, "minimum": 256, "type": "integer"},
        },
    }


FLUX_2_RESOLUTION = {"enum": ["0.5MP", "1MP", "2MP", "4MP", "match_input_image"], "type": "string"}


def generate_variant(model_id: str) -> Schema:
    resolution = FLUX_2_RESOLUTION if model_id.startswith("flux-2") else {"type": "string"}
    return {
        "additionalProperties": False,
        "type": "object",
        "required": ["prompt", "model"],
        "properties": {
            "fluxParams": _flux_params(resolution),
            "model": {"enum": [model_id], "type": "string"},
            "prompt": {"maxLength": 2000, "minLength": 1, "type": "string"},
            **WEBHOOK,
        },
    }


FLUX_FILL_VARIANT: Schema = {
    "additionalProperties": False,
    "type": "object",
    "required": ["model", "fluxFillParams"],
    "properties": {
        "fluxFillParams": {
            "additionalProperties": False,
            "type": "object",
            "required": ["image", "prompt", "mode"],
            "properties": {
                "guidance": {"maximum": 5, "minimum": 2, "type": "number"},
                "image": {"format": "uri", "type": "string"},
                "mask": {"format": "uri", "type": "string"},
                "mode": {"enum": ["inpaint", "outpaint"], "type": "string"},
                "outpaint": {
                    "enum": [
                        "Zoom out 1.5x",
                        "Zoom out 2x",
                        "Make square",
                        "Left outpaint",
                        "Right outpaint",
                        "Top outpaint",
                        "Bottom outpaint",
                    ],
                    "type": "string",
                },
                "output_format": {"enum": ["jpg", "png"], "type": "string"},
                "prompt": {"maxLength": 2000, "minLength": 1, "type": "string"},
                "prompt_upsampling": {"type": "boolean"},
                "safety_tolerance": {"maximum": 6, "minimum": 1, "type": "integer"},
                "seed": {"type": "integer"},
                "steps": {"maximum": 50, "minimum": 1, "type": "integer"},
            },
        },
        "model": {"enum": ["flux-fill-pro"], "type": "string"},
        **WEBHOOK,
    },
}
