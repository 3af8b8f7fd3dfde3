"""Apiframe v2's request bodies for its image tools, as JSON Schemas, for contract tests.

Transcribed by hand from Apiframe's OpenAPI document (``ImageBackgroundRemoveRequest`` and
``ImageUpscaleRequest``: the ``oneOf`` variants with ``briaBgRemoveParams``,
``lab851BgRemoveParams``, ``topazUpscaleParams`` and ``clarityUpscaleParams``), like
apiframe_schemas.py's response shapes: the repository's own copy of the contract.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

UNIT: Schema = {"type": "number", "minimum": 0, "maximum": 1}
IMAGE: Schema = {"type": "string", "format": "uri"}


def _variant(model: str, key: str, params: Schema) -> Schema:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["model", key],
        "properties": {
            "model": {"type": "string", "enum": [model]},
            key: {
                "type": "object",
                "additionalProperties": False,
                "required": ["image"],
                "properties": {"image": IMAGE, **params},
            },
            "webhookUrl": {"type": "string", "format": "uri"},
            "webhookEvents": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": ["progress", "completed", "failed"]},
            },
        },
    }


def _factor(*values: int) -> Schema:
    return {"anyOf": [{"type": "number", "enum": [value]} for value in values]}


BACKGROUND_REMOVE_REQUEST: Schema = {
    "oneOf": [
        _variant(
            "bria-bg-remove", "briaBgRemoveParams", {"content_moderation": {"type": "boolean"}}
        ),
        _variant(
            "851-bg-remove",
            "lab851BgRemoveParams",
            {
                "background_type": {
                    "type": "string",
                    "enum": ["rgba", "map", "green", "white", "blur", "overlay"],
                },
                "threshold": UNIT,
                "reverse": {"type": "boolean"},
                "format": {"type": "string", "enum": ["png", "jpg"]},
            },
        ),
    ]
}

UPSCALE_REQUEST: Schema = {
    "oneOf": [
        _variant(
            "topaz-image-upscale",
            "topazUpscaleParams",
            {
                "upscale_factor": _factor(1, 2, 4, 6),
                "model_type": {
                    "type": "string",
                    "enum": [
                        "standard-v2",
                        "low-res-v2",
                        "cgi",
                        "high-fidelity-v2",
                        "text-refine",
                        "redefine",
                    ],
                },
                "face_enhance": {"type": "boolean"},
                "face_enhance_strength": UNIT,
                "face_enhance_creativity": UNIT,
                "output_format": {"type": "string", "enum": ["jpg", "png"]},
                "seed": {"type": "integer"},
            },
        ),
        _variant(
            "clarity-upscale",
            "clarityUpscaleParams",
            {
                "scale_factor": _factor(1, 2, 4, 8),
                "prompt": {"type": "string", "maxLength": 2000},
                "negative_prompt": {"type": "string", "maxLength": 2000},
                "creativity": UNIT,
                "resemblance": {"type": "number", "minimum": 0, "maximum": 3},
                "dynamic": {"type": "number", "minimum": 1, "maximum": 50},
                "sharpen": {"type": "number", "minimum": 0, "maximum": 10},
                "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 100},
                "output_format": {"type": "string", "enum": ["png", "jpg", "webp"]},
                "seed": {"type": "integer"},
            },
        ),
    ]
}
