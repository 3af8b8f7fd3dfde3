"""Validating a generate request into a ``Submission``: pure, no database, no storage.

Inline images are decoded and checked here and planned as uploads; submission.py stores
their files only for jobs that are admitted, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from castframe.catalog import MAX_SEED, MODELS, ModelSpec, models_for
from castframe.config import Settings
from castframe.errors import ApiError, bounded, details_of, field_error
from castframe.jobs import sizing
from castframe.jobs.accounts import Principal
from castframe.jobs.uploads import PlannedUpload, plan_upload
from castframe.media.fetch import FetchError, check_url_syntax
from castframe.media.images import DecodedImage
from castframe.media.sources import (
    UPLOAD_SCHEME,
    ImageReader,
    Source,
    SourceError,
    account_of,
    classify,
    upload_id_of,
)


class EngineRules(Protocol):
    """Which engine runs a job, and what it cannot honour (engines/router.py's ``Routing``),
    handed in so that validation does not depend on the engines."""

    def engine_for(self, spec: ModelSpec, mode: str) -> str: ...

    def refusals(
        self, engine: str, spec: ModelSpec, params: dict[str, Any]
    ) -> list[tuple[str, str]]:
        """(field path, message naming the engine) for each parameter it cannot honour."""


@dataclass
class Submission:
    """A validated request, ready for admission."""

    spec: ModelSpec
    params: dict[str, Any]
    input_echo: dict[str, Any]
    price: int
    engine: str
    webhook_url: str | None
    webhook_events: list[str] | None
    inline_uploads: list[PlannedUpload] = field(default_factory=list)
    """Inline images as uploads to store once the job is admitted."""
    upload_refs: list[tuple[str, str]] = field(default_factory=list)
    """(field path, upload id) pairs to check inside the transaction."""
    size_limit: int | None = None
    """For a tool whose input is an upload: the output pixel limit, applied (with the size
    and the price) inside the transaction, where the upload's row is read."""
    price_overrides: dict[str, Any] | None = None
    signed_refs: dict[str, str] = field(default_factory=dict)
    """Field path -> the signed URL the client sent, for the ``upload_refs`` that came as one
    of the caller's account's upload URLs: if the upload is not the caller's own (another
    mode's), the field keeps the URL, a public URL, instead of being refused."""

    def set_source(self, path: str, source: str) -> None:
        """Put ``source`` in the params field at ``path`` (``<params key>.<field>[.<index>]``)."""
        parts = path.split(".")[1:]
        if len(parts) == 2:
            self.params[parts[0]][int(parts[1])] = source
        else:
            self.params[parts[0]] = source


def pydantic_problems(error: ValidationError, fields: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(JSON path, message) of each failure; a list index is a path part (``a.b.0``).

    A check of the whole body (a model validator) has no path, and pydantic prefixes its
    message with "Value error, ": the message is given as the validator wrote it, under the
    field it starts with when that is one of ``fields`` ("prompt must not be blank" is about
    ``prompt``), so that a form can show it beside that field; else under ``body``."""
    known = set(fields)
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"] if part not in ("body",))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "value_error" and "error" in item.get("ctx", {}):
            message = str(item["ctx"]["error"])
        if not path:
            first = message.split(" ", 1)[0]
            path = first if first in known else "body"
        problems.append((path, message))
    return bounded(problems)


def invalid(error: ValidationError, what: str = "request", fields: Iterable[str] = ()) -> ApiError:
    """A 400 validation_error whose message names the first few fields."""
    problems = pydantic_problems(error, fields)
    summary = "; ".join(
        message if message.startswith(path + " ") else f"{path}: {message}"
        for path, message in problems[:3]
    )
    return ApiError("validation_error", f"invalid {what} ({summary})", details_of(problems))


def source_error(error: SourceError, field_path: str) -> ApiError:
    """An image source's failure as the API error about its field."""
    return field_error(error.code, field_path, error.message)


def null_path(value: Any, path: str = "") -> str | None:
    """The JSON path of the first ``null`` in a request body, or None. Apiframe's request
    schemas have no nullable field: a field is given a value or left out."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, child in items:
        child_path = f"{path}.{key}" if path else str(key)
        if child is None:
            return child_path
        if (found := null_path(child, child_path)) is not None:
            return found
    return None


def validate_request(body: Any, operation: str = "generate") -> tuple[ModelSpec, BaseModel]:
    """The model a body names (one of ``operation``'s) and the body validated by its schema."""
    if not isinstance(body, dict):
        raise ApiError("invalid_json", "the body must be a JSON object")
    model_id = body.get("model")
    if model_id is None:
        raise field_error("validation_error", "model", "model is required")
    served = models_for(operation)
    if not isinstance(model_id, str) or model_id not in served:
        elsewhere = (
            f" ({model_id} is served by POST /v2/images/{MODELS[model_id].operation})"
            if isinstance(model_id, str) and model_id in MODELS
            else ""
        )
        raise field_error(
            "unknown_model",
            "model",
            f"unknown model {model_id!r} for this endpoint{elsewhere}; known: "
            f"{', '.join(sorted(served))}",
        )
    spec = served[model_id]
    if (path := null_path(body)) is not None:
        raise field_error("validation_error", path, "null is not a value here; leave the field out")
    try:
        return spec, spec.request_model.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc, fields=spec.request_model.model_fields) from exc


def prepare(
    body: Any,
    principal: Principal,
    settings: Settings,
    engines: EngineRules,
    operation: str = "generate",
) -> Submission:
    """Validate a request to ``POST /v2/images/<operation>`` and resolve what can be resolved
    before the transaction."""
    spec, request = validate_request(body, operation)
    params = spec.normalise(request)
    echo = request.model_dump(mode="json", exclude_none=True)
    submission = Submission(
        spec=spec,
        params=params,
        input_echo=echo,
        price=0,
        engine=engines.engine_for(spec, principal.mode),
        webhook_url=echo.get("webhookUrl"),
        webhook_events=echo.get("webhookEvents"),
    )
    reader = ImageReader.from_settings(settings)
    decoded: dict[str, DecodedImage] = {}
    for image_field in spec.image_fields:
        name = image_field.name
        source = params.get(name)
        if source is None:
            continue
        path = f"{spec.params_key}.{name}"
        sources, listed = (source, True) if isinstance(source, list) else ([source], False)
        resolved = [
            _resolve(
                item,
                f"{path}.{i}" if listed else path,
                principal,
                settings,
                reader,
                submission,
                decoded,
            )
            for i, item in enumerate(sources)
        ]
        params[name] = resolved if listed else resolved[0]
        # The echo keeps the URLs the client sent; inline images show as their upload.
        shown = [
            new if old[:5].lower() == "data:" else old
            for old, new in zip(sources, resolved, strict=True)
        ]
        echo[spec.params_key][name] = shown if listed else shown[0]
    if submission.webhook_url:
        try:
            check_url_syntax(
                submission.webhook_url,
                allow_private=settings.allow_private_urls,
                exempt_hosts=settings.trusted_host_set,
            )
        except FetchError as exc:
            raise field_error("url_not_allowed", "webhookUrl", exc.message) from exc
    if spec.sized_by is not None:
        _size(spec, params, decoded, settings, reader)
        if not params.get("width"):
            submission.size_limit = settings.tool_max_output_pixels
            submission.price_overrides = dict(settings.prices or {})
    problems = engines.refusals(submission.engine, spec, params)
    if problems:
        raise ApiError("unsupported_parameter", problems[0][1], details=details_of(problems))
    if params.get("seed") is None:
        params["seed"] = secrets.randbelow(MAX_SEED + 1)
    if principal.mode == "live":
        submission.price = spec.price(params, settings.prices)
    return submission


def _size(
    spec: ModelSpec,
    params: dict[str, Any],
    decoded: dict[str, DecodedImage],
    settings: Settings,
    reader: ImageReader,
) -> None:
    """A tool's output size and input checks (jobs/sizing.py), from its input image: the
    inline one as decoded, a URL read now; an upload is sized in the transaction."""
    name = sizing.input_field(spec)
    path = f"{spec.params_key}.{name}"
    source = params.get(name)
    fetch = None
    if isinstance(source, str) and not source.startswith(UPLOAD_SCHEME) and path not in decoded:

        def fetch() -> DecodedImage:
            try:
                found = classify(
                    source,
                    settings.signing_key,
                    settings.allow_private_urls,
                    settings.trusted_host_set,
                )
                return reader.read(found, _no_uploads)
            except SourceError as exc:
                raise source_error(exc, path) from exc

    sizing.probe(spec, params, decoded.get(path), fetch, settings.tool_max_output_pixels)


def _resolve(
    source: str,
    path: str,
    principal: Principal,
    settings: Settings,
    reader: ImageReader,
    submission: Submission,
    decoded: dict[str, DecodedImage] | None = None,
) -> str:
    """The source a job keeps: an inline image becomes a planned upload (jobs stay small),
    an upload (by URL or reference) its ``upload://`` reference, a URL itself."""
    try:
        found = classify(
            source, settings.signing_key, settings.allow_private_urls, settings.trusted_host_set
        )
        if found.kind == "data":
            image = reader.read(found, _no_uploads)
            if decoded is not None:
                decoded[path] = image
            planned = plan_upload(principal.account_id, principal.mode, image)
            submission.inline_uploads.append(planned)
            return UPLOAD_SCHEME + planned.row["id"]
    except SourceError as exc:
        raise source_error(exc, path) from exc
    if found.kind == "signed" and account_of(found.value) == principal.account_id:
        # Probably the caller's own upload: kept as such (so its job outlives the URL), if
        # the transaction finds it is (submission.check_references).
        submission.signed_refs[path] = source
        found = Source("upload", upload_id_of(found.value))
    if found.kind == "upload":
        submission.upload_refs.append((path, found.value))
        return UPLOAD_SCHEME + found.value
    return source  # an outside URL, or another account's upload URL: a public URL


def _no_uploads(upload_id: str) -> bytes:
    raise AssertionError("a data: source reads no upload")
