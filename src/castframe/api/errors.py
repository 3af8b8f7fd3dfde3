"""Every error leaves as JSON ``{code, message, details}``: ours, FastAPI's and unexpected ones."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from castframe.errors import ApiError

log = logging.getLogger("castframe.api")

_STATUS_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "api_key_inactive",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def error_response(error: ApiError, request: Request | None = None) -> JSONResponse:
    headers = dict(error.headers)
    if request is not None:
        headers.update(getattr(request.state, "rate_headers", {}) or {})
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _query_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for item in exc.errors():
        path = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "path", "body"))
        details.append({"field": path or "request", "message": str(item.get("msg", "invalid"))})
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _query_details(exc)
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        return error_response(
            ApiError("invalid_request", f"invalid request ({summary})", details), request
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "invalid_request")
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else ""
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return error_response(ApiError(code, message), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ApiError("internal_error"), request)
