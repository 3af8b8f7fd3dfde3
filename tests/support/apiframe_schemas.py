"""Apiframe v2's response shapes as JSON Schemas (draft 2020-12), for contract tests.

Transcribed by hand from Apiframe's published OpenAPI 3.1 spec (``components.schemas`` of the
``openapi.json`` in Apiframe's Node SDK repository: ErrorResponse, ValidationError,
InsufficientCredits, Job, JobAccepted, JobList, Me, ModelCatalog, ModelCatalogEntry, Upload)
and from its docs (the image ``result`` format, the webhook body and signature). The spec file
itself is not read at test time: these dicts are the repository's own copy of the contract.

Where the spec allows extra properties (it never sets ``additionalProperties: false`` on a
response), so do these schemas: Castframe's extension fields (``code``, ``errorCode``,
``imageDetails``, ...) are allowed; no field the spec defines may change type or meaning.

``format`` is checked by ``FORMAT_CHECKER``, which has its own checkers for every format used
here (jsonschema checks ``uri`` only with optional packages installed, and ``email`` only for
an ``@``), so a malformed id, time, URL or address fails validation wherever this runs.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker

Schema = dict[str, Any]

# -- formats -------------------------------------------------------------------------------

FORMAT_CHECKER = FormatChecker(formats=())
"""Only the checkers below: no format silently passes because a package is missing."""

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")


@FORMAT_CHECKER.checks("uuid")
def is_uuid(value: object) -> bool:
    """RFC 9562's hyphenated 8-4-4-4-12 hex form."""
    return not isinstance(value, str) or bool(_UUID.match(value))


@FORMAT_CHECKER.checks("date-time")
def is_date_time(value: object) -> bool:
    """ISO-8601 / RFC 3339 in UTC with a ``Z`` (what Zod's ``.datetime()``, behind Apiframe's
    schemas, accepts by default), and a real calendar date and time."""
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(value[:19])
    except ValueError:
        return False
    return True


@FORMAT_CHECKER.checks("uri")
def is_uri(value: object) -> bool:
    """An absolute http(s) URL with a host and no whitespace."""
    if not isinstance(value, str):
        return True
    if any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok


@FORMAT_CHECKER.checks("email")
def is_email(value: object) -> bool:
    """``local@domain.tld``: one ``@``, a dotted domain, no whitespace."""
    return not isinstance(value, str) or bool(_EMAIL.match(value))


# -- building blocks -----------------------------------------------------------------------

JOB_STATUSES = ["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]
WEBHOOK_STATUSES = ["pending", "delivered", "failed", None]
WEBHOOK_EVENTS = ["progress", "completed", "failed"]

UUID: Schema = {"type": "string", "format": "uuid"}
DATE_TIME: Schema = {"type": "string", "format": "date-time"}
URI: Schema = {"type": "string", "format": "uri"}

IMAGE_RESULT: Schema = {
    "description": "Apiframe's image result (docs, jobs/get): `images` is a list of URLs.",
    "type": ["object", "null"],
    "properties": {"images": {"type": "array", "items": URI}},
}

_JOB_PROPERTIES: Schema = {
    "id": UUID,
    "status": {"type": "string", "enum": JOB_STATUSES},
    "model": {"type": "string"},
    "progress": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
    # The spec leaves `result` open ({}); its docs give the image result's shape.
    "result": IMAGE_RESULT,
    "error": {"type": ["string", "null"]},
    "creditCost": {"type": ["integer", "null"]},
    "webhookStatus": {"type": ["string", "null"], "enum": WEBHOOK_STATUSES},
    "createdAt": DATE_TIME,
    "completedAt": {"type": ["string", "null"], "format": "date-time"},
    "expired": {"type": "boolean"},
    "input": {"type": ["object", "null"], "additionalProperties": {}},
}

_JOB_REQUIRED = [
    "id",
    "status",
    "model",
    "progress",
    "error",
    "creditCost",
    "webhookStatus",
    "createdAt",
    "completedAt",
]

# -- the spec's components -----------------------------------------------------------------

ERROR_RESPONSE: Schema = {
    "description": "Generic error envelope returned for most failure cases.",
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}

VALIDATION_ERROR: Schema = {
    "description": "Returned by every job-creating route when the request fails validation.",
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "details": {
            "description": "Per-field validation errors keyed by JSON path.",
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["error"],
}

INSUFFICIENT_CREDITS: Schema = {
    "description": "The team does not have enough credits to run this job.",
    "type": "object",
    "properties": {
        "error": {"type": "string", "enum": ["Insufficient credits"]},
        "creditsRequired": {"type": "integer", "minimum": 0},
        "creditsAvailable": {"type": "integer", "minimum": 0},
    },
    "required": ["error", "creditsRequired", "creditsAvailable"],
}

JOB: Schema = {
    "description": "Generation job returned by GET /v2/jobs and GET /v2/jobs/:id.",
    "type": "object",
    "properties": _JOB_PROPERTIES,
    "required": _JOB_REQUIRED,
}

JOB_ACCEPTED: Schema = {
    "description": "Returned by every successful job submission.",
    "type": "object",
    "properties": {
        "jobId": UUID,
        "status": {"type": "string", "enum": ["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]},
    },
    "required": ["jobId", "status"],
}

JOB_LIST: Schema = {
    "description": "Paginated list of jobs scoped to the caller.",
    "type": "object",
    "properties": {
        "jobs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": _JOB_PROPERTIES,
                "required": [*_JOB_REQUIRED, "expired"],
            },
        },
        "nextCursor": {"type": ["string", "null"]},
        "hasMore": {"type": "boolean"},
        "models": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["jobs", "nextCursor", "hasMore"],
}

ME: Schema = {
    "description": "The caller: user, team and (with API-key auth) the key making the request.",
    "type": "object",
    "properties": {
        "user": {
            "type": "object",
            "properties": {
                "id": UUID,
                "email": {"type": "string", "format": "email"},
                "role": {
                    "anyOf": [
                        {"type": "string", "enum": ["ADMIN", "MEMBER", "OWNER"]},
                        {"type": "string"},
                    ]
                },
            },
            "required": ["id", "email", "role"],
        },
        "team": {
            "type": ["object", "null"],
            "properties": {
                "id": UUID,
                "name": {"type": "string"},
                "credits": {"type": "integer", "minimum": 0},
                "plan": {"type": "string"},
                "customerId": {"type": ["string", "null"]},
            },
            "required": ["id", "name", "credits", "plan", "customerId"],
        },
        "apiKey": {
            "type": ["object", "null"],
            "properties": {
                "id": UUID,
                "name": {"type": "string"},
                "prefix": {"type": "string"},
            },
            "required": ["id", "name", "prefix"],
        },
    },
    "required": ["user", "team", "apiKey"],
}

MODEL_CATALOG_ENTRY: Schema = {
    "description": "Curated model entry; intentionally loose, extra fields are allowed.",
    "type": "object",
    "additionalProperties": {},
    "properties": {
        "id": {"type": "string"},
        "label": {"type": "string"},
        "modality": {"type": "string", "enum": ["image", "video", "music"]},
        "description": {"type": "string"},
        "costMin": {"type": "number"},
        "costMax": {"type": "number"},
        "pricingMode": {"type": "string", "enum": ["flat", "per-second", "per-output"]},
    },
    "required": ["id", "label", "modality"],
}

MODEL_CATALOG: Schema = {
    "type": "object",
    "properties": {"models": {"type": "array", "items": MODEL_CATALOG_ENTRY}},
    "required": ["models"],
}

UPLOAD: Schema = {
    "description": "Short-lived upload; its URL drops into any image field of a request.",
    "type": "object",
    "properties": {
        "id": UUID,
        "url": URI,
        "kind": {"type": "string", "enum": ["image", "video", "audio"]},
        "contentType": {"type": "string"},
        "byteSize": {"type": "integer", "minimum": 0},
        "expiresAt": DATE_TIME,
    },
    "required": ["id", "url", "kind", "contentType", "byteSize", "expiresAt"],
}

WEBHOOK_PAYLOAD: Schema = {
    "description": "A webhook delivery's JSON body (SDK webhooks.ts / README: jobId and type).",
    "type": "object",
    "properties": {
        "jobId": UUID,
        "status": {"type": "string", "enum": JOB_STATUSES},
        "event": {"type": "string", "enum": WEBHOOK_EVENTS},
        "type": {"type": "string", "enum": WEBHOOK_EVENTS},
        "model": {"type": "string"},
        "progress": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
        "result": {
            "type": "object",
            "properties": {"images": {"type": "array", "items": URI}},
            "required": ["images"],
        },
        "error": {"type": "string"},
        "creditCost": {"type": ["integer", "null"]},
        "completedAt": {"type": ["string", "null"], "format": "date-time"},
    },
    "required": ["jobId", "status", "event", "type"],
}

# -- query parameters (the spec's `parameters`, for requests the tests build) ---------------

LIST_JOBS_QUERY: Schema = {
    "description": "GET /v2/jobs query parameters; a value outside them must be a 400.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "status": {"type": "string", "enum": JOB_STATUSES},
        "model": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        "cursor": {"type": "string"},
        "scope": {"type": "string", "enum": ["user", "team"], "default": "user"},
        "search": UUID,
        "include_models": {"type": "string", "enum": ["true", "false"], "default": "false"},
    },
}

MODELS_QUERY: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"modality": {"type": "string", "enum": ["image", "video", "music"]}},
}

ALL: dict[str, Schema] = {
    "ErrorResponse": ERROR_RESPONSE,
    "ValidationError": VALIDATION_ERROR,
    "InsufficientCredits": INSUFFICIENT_CREDITS,
    "Job": JOB,
    "JobAccepted": JOB_ACCEPTED,
    "JobList": JOB_LIST,
    "Me": ME,
    "ModelCatalog": MODEL_CATALOG,
    "ModelCatalogEntry": MODEL_CATALOG_ENTRY,
    "Upload": UPLOAD,
    "WebhookPayload": WEBHOOK_PAYLOAD,
    "ListJobsQuery": LIST_JOBS_QUERY,
    "ModelsQuery": MODELS_QUERY,
}


def violations(schema: Schema, instance: Any) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (formats included), as ``path: message``."""
    validator = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]
