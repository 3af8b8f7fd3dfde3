"""Castframe's own ``/openapi.json`` describes its errors as it sends them.

FastAPI documents a 422 ``HTTPValidationError`` on every operation with parameters; Castframe
answers those failures with Apiframe's 400 ``ValidationError`` instead (api/errors.py), so the
generated spec is rewritten to say so, and every operation lists the error body it can get.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from castframe.catalog import models_for, operations

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


REF = "#/components/schemas/{model}"


def model_request_bodies(schemas: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each image endpoint's request body, from the registry: a ``oneOf`` over its models'
    request schemas (discriminated by ``model``, as Apiframe's spec is), whose schemas and
    their parts are added to ``schemas`` (the document's components)."""
    bodies: dict[str, dict[str, Any]] = {}
    for operation in operations():
        refs: dict[str, str] = {}
        example: dict[str, Any] = {}
        for model_id, spec in models_for(operation).items():
            schema = spec.request_model.model_json_schema(by_alias=True, ref_template=REF)
            schemas.update(schema.pop("$defs", {}))
            name = spec.request_model.__name__
            schemas[name] = schema
            refs[model_id] = f"#/components/schemas/{name}"
            example = example or dict(spec.example)
        bodies[f"/v2/images/{operation}"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [{"$ref": ref} for ref in refs.values()],
                        "discriminator": {"propertyName": "model", "mapping": refs},
                    },
                    "example": example,
                }
            },
        }
    return bodies


def _rewrite(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for path, body in model_request_bodies(schemas).items():
        if "post" in spec.get("paths", {}).get(path, {}):
            spec["paths"][path]["post"]["requestBody"] = body
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
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
