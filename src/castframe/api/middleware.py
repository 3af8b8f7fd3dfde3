"""Per-request context as plain ASGI middleware: request id, metrics, response headers.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs the
rest of the app in a separate task with memory streams between them, which cost more than the
whole of a cheap endpoint. Here the response is untouched except for the headers added to its
``http.response.start`` message.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from castframe import logs
from castframe.api.errors import error_response
from castframe.errors import ApiError
from castframe.metrics import HTTP_REQUESTS, HTTP_SECONDS


class RequestContextMiddleware:
    """``X-Request-Id`` (taken from the request when it is short and plain, else made), the
    request id in every log line, the route's ``RateLimit-*`` headers, the HTTP request
    metrics, a 400 for a NUL in the path or query, and ``HEAD`` on every ``GET`` resource."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = usable_request_id(_header(scope, b"x-request-id")) or uuid.uuid4().hex
        head = scope["method"] == "HEAD"
        if head:  # every GET resource answers HEAD: the GET's status and headers, no body
            scope = {**scope, "method": "GET"}
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _value in headers}
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                for name, value in (state.get("rate_headers") or {}).items():
                    if name.lower().encode("latin-1") not in present:
                        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                message = {**message, "headers": headers}
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the body is not sent; only its last (empty) part
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        token = logs.request_id.set(request_id)
        try:
            if has_nul(scope):
                await error_response(
                    ApiError("invalid_request", "the path or query contains a NUL character")
                )(scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        finally:
            logs.request_id.reset(token)
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_SECONDS.labels(scope["method"], template).observe(time.perf_counter() - started)


MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1," + str(MAX_REQUEST_ID) + "}")


def usable_request_id(value: str | None) -> str | None:
    """A client's ``X-Request-Id`` if it is at most 128 characters of a safe set (letters,
    digits, ``._:@/+=-``), else None (a fresh id is made): it is echoed in a header and
    written to every log line of the request, so no log injection, no header of megabytes."""
    if value is None or not _REQUEST_ID.fullmatch(value):
        return None
    return value


def has_nul(scope: Scope) -> bool:
    """Whether the path or query string carries a NUL (``%00``): no route means one, and
    PostgreSQL refuses it in any text parameter, so it is a 400 before any route runs."""
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None
