"""Castframe's own ``/openapi.json`` describes its errors as it sends them.

FastAPI documents a 422 ``HTTPValidationError`` on every operation with parameters; Castframe
answers those failures with Apiframe's 400 ``ValidationError`` instead (api/errors.py), so the
generated spec is rewritten to say so, and every operation lists the error body it can get.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Apiframe's error body, with Castframe's stable `code` and `details`.",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "The human message."},
        "code": {"type": "string", "description": "Stable code (docs/errors.md)."},
        "details": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "Messages keyed by the JSON path of the field they are about.",
        },
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _rewrite(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None or "requestBody" in operation:
                responses.setdefault(
                    "400",
                    {
                        "description": "The request failed validation (`details` by field).",
                        "content": {"application/json": {"schema": ERROR_REF}},
                    },
                )
    return spec


def use_apiframe_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) show 400, not 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _rewrite(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
