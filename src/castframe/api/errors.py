"""Every error leaves as Apiframe's error body (``error``, plus ``code`` and ``details``):
ours, FastAPI's, a database that cannot be reached or is out of space, file storage that
failed (media/storage.py's two errors), and unexpected ones."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from castframe.errors import ApiError, bounded, details_of
from castframe.media.storage import StorageError, StorageFull
from castframe.store.db import is_database_full, is_transient

log = logging.getLogger("castframe.api")

_STATUS_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "api_key_inactive",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def error_response(error: ApiError, request: Request | None = None) -> JSONResponse:
    headers = dict(error.headers)
    if request is not None:
        headers.update(getattr(request.state, "rate_headers", {}) or {})
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


DATABASE_RETRY_AFTER = "2"
"""Seconds a client is told to wait while the database cannot be reached."""


STORAGE_RETRY_AFTER = "5"
"""Seconds a client is told to wait while file storage is unavailable."""


def storage_api_error(exc: StorageError) -> ApiError:
    """507 storage_full or 503 storage_unavailable (with Retry-After), with the storage
    error's message, which names the failure but no path or bucket."""
    if isinstance(exc, StorageFull):
        return ApiError("storage_full", str(exc))
    return ApiError("storage_unavailable", str(exc), headers={"Retry-After": STORAGE_RETRY_AFTER})


def _query_problems(exc: RequestValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in exc.errors():
        path = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "path", "body"))
        problems.append((path or "request", str(item.get("msg", "invalid"))))
    return bounded(problems)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _query_problems(exc)
        summary = "; ".join(f"{path}: {message}" for path, message in problems[:3])
        return error_response(
            ApiError("invalid_request", f"invalid request ({summary})", details_of(problems)),
            request,
        )

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client hung up before its body was complete: nothing to answer and nothing
        # wrong with the server, so an INFO line rather than an unhandled error and a 500.
        log.info(
            "client disconnected before sending the whole body of %s %s",
            request.method,
            request.url.path,
        )
        return error_response(
            ApiError("invalid_request", "the client disconnected before the body was complete"),
            request,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "invalid_request")
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else ""
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        # Starlette's own headers stay (a 405's Allow lists the methods the path takes).
        headers = dict(getattr(exc, "headers", None) or {})
        return error_response(ApiError(code, message, headers=headers), request)

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError) -> JSONResponse:
        # The operator's line names the backend's own error (paths included); the client's
        # answer only the kind of failure.
        log.error(
            "storage failed on %s %s: %s (%s)",
            request.method,
            request.url.path,
            exc,
            exc.__cause__,
        )
        return error_response(storage_api_error(exc), request)

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def _database(request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        # Handled here rather than by the catch-all below, so an outage is an answer (and a
        # warning line) instead of an unhandled error with its traceback.
        if is_database_full(exc):
            log.error(
                "database out of space on %s %s: %s",
                request.method,
                request.url.path,
                str(exc).splitlines()[0],
            )
            return error_response(
                ApiError("storage_full", "the server's database is out of space"), request
            )
        if not is_transient(exc):
            return await _unexpected(request, exc)
        log.warning(
            "database unreachable on %s %s: %s",
            request.method,
            request.url.path,
            str(exc).splitlines()[0],
        )
        return error_response(
            ApiError("not_ready", headers={"Retry-After": DATABASE_RETRY_AFTER}), request
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ApiError("internal_error"), request)
