"""The loopback HTTP plumbing the provider fakes (``fake_bfl``, ``fake_ideogram``) share.

A fake is a function from a ``Request`` to an ``Answer``; ``LoopbackUpstream`` runs it behind
a real HTTP server on 127.0.0.1 (its own thread, a free port), so the engines under test go
through their real HTTP clients. ``scripted_fault`` turns a queued behaviour ('429:<s>', a
5xx status) into the answer, and ``ExpiringFiles`` serves results at links that expire, as the
providers' CDNs do; a fake class takes ``ServedFake`` for its life cycle. Each fake keeps only its provider's routes, rules and error bodies.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.support.http import send_reply, trickle


@dataclass
class Request:
    """One request as received."""

    method: str
    target: str
    """The request target as sent: the path with its query."""
    headers: dict[str, str]
    """Lower-cased header names."""
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


@dataclass
class Answer:
    status: int
    data: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    trickle_for: float = 0.0
    """Hostile when set: a 200 status line, then one header byte every 0.25 s for this many
    seconds (never a read timeout for the client), cut short by ``LoopbackUpstream.close``."""


def json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps(payload).encode(), "application/json", dict(headers or {}))


def next_behaviour(script: deque[str], default: str = "ok") -> str:
    """The next queued behaviour, ``default`` when none is queued (safe across handler
    threads: one atomic pop, no check-then-pop)."""
    try:
        return script.popleft()
    except IndexError:
        return default


def scripted_fault(behaviour: str, *, busy: Any, broken: Any) -> Answer | None:
    """'429:<s>' is a 429 with ``Retry-After: <s>`` and the body ``busy``; a 5xx status is
    that status with the body ``broken``; anything else is no fault (None)."""
    if behaviour.startswith("429"):
        return json_answer(429, busy, {"Retry-After": behaviour.partition(":")[2]})
    if re.fullmatch(r"5\d\d", behaviour):
        return json_answer(int(behaviour), broken)
    return None


class ExpiringFiles:
    """Result files by token, each with the time its link expires."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str, float]] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes, content_type: str, ttl: float) -> str:
        """Store ``data`` for ``ttl`` seconds (expired already when negative); its token."""
        token = secrets.token_hex(12)
        with self._lock:
            self._files[token] = (data, content_type, time.time() + ttl)
        return token

    def answer(self, token: str, *, missing: Answer, expired: Answer) -> Answer:
        with self._lock:
            item = self._files.get(token)
        if item is None:
            return missing
        data, content_type, expires = item
        if time.time() > expires:
            return expired
        return Answer(200, data, content_type)


class LoopbackUpstream:
    """A threading HTTP server on loopback that answers every GET and POST with ``answer``."""

    def __init__(self, answer: Callable[[Request], Answer]) -> None:
        self.stopping = threading.Event()
        """Set by ``close``: hostile answers end, so their clients are let go."""
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Request(
                    self.command,
                    self.path,
                    {key.lower(): value for key, value in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                reply = answer(request)
                if reply.trickle_for:
                    self._trickle(reply.trickle_for)
                else:
                    headers = {"Content-Type": reply.content_type, **reply.headers}
                    send_reply(self, reply.status, headers, reply.data)

            do_GET = do_POST = _handle

            def _trickle(self, seconds: float) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    padding = b"X-Padding: " + b"a" * 8000 + b"\r\n\r\n"
                    trickle(self.wfile.write, padding, 0.25, seconds, upstream.stopping)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class ServedFake:
    """A provider fake's life on loopback: ``serve`` starts its server (and the result store
    and lock its handler threads share); ``base_url``, ``port`` and ``close`` come with it."""

    server: LoopbackUpstream
    port: int

    def serve(self, answer: Callable[[Request], Answer]) -> None:
        self._results = ExpiringFiles()
        self._lock = threading.Lock()
        self.server = LoopbackUpstream(answer)
        self.port = self.server.port

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def close(self) -> None:
        self.server.close()
