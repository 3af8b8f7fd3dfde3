"""A real HTTP server on loopback for tests: serves images, records webhooks, misbehaves on cue."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle_headers: float = 0.0
    """Hostile: after the status line, one header byte every this many seconds, for up to
    ``trickle_for`` seconds (each byte arrives well within any read timeout)."""
    trickle_body: float = 0.0
    """Hostile: status line and headers at once, then one body byte every this many seconds."""
    trickle_for: float = 120.0


def trickle(
    write: Callable[[bytes], Any],
    data: bytes,
    interval: float,
    limit: float,
    stop: threading.Event | None = None,
) -> bool:
    """Write ``data`` a byte at a time, ``interval`` apart, for at most ``limit`` seconds or
    until ``stop`` is set; False once the client has hung up (the write fails)."""
    deadline = time.monotonic() + limit
    stop = stop or threading.Event()
    for index in range(len(data)):
        if time.monotonic() > deadline or stop.is_set():
            return True
        try:
            write(data[index : index + 1])
        except OSError:
            return False
        stop.wait(interval)
    return True


def send_reply(
    handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """A whole answer: status, ``headers``, Content-Length and ``body``; a client that hung
    up meanwhile is no error."""
    try:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass


Route = Callable[[Recorded], Reply]


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up (the safe fetcher, once it has read enough) is no error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """Routes are functions of the request; every request is recorded."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Recorded] = []
        self.hangups: list[Recorded] = []
        """Requests whose client hung up while a hostile answer was still trickling."""
        self.stopping = threading.Event()
        """Set by ``close``: hostile answers end, so their clients are let go."""
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                record = Recorded(
                    self.command,
                    path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.time(),
                )
                with server._lock:
                    server.requests.append(record)
                    route = server.routes.get(path)
                reply = route(record) if route else Reply(404, b"not found")
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.trickle_headers or reply.trickle_body:
                    self._trickle(reply, record)
                    return
                send_reply(self, reply.status, reply.headers, reply.body)

            def _trickle(self, reply: Reply, record: Recorded) -> None:
                """A hostile answer; the client hanging up is recorded in ``hangups``."""
                self.close_connection = True
                head = f"HTTP/1.1 {reply.status} OK\r\n".encode()
                try:
                    self.wfile.write(head)
                except OSError:
                    return
                if reply.trickle_headers:
                    padding = b"X-Padding: " + b"a" * 8000 + b"\r\n\r\n"
                    finished = trickle(
                        self.wfile.write,
                        padding,
                        reply.trickle_headers,
                        reply.trickle_for,
                        server.stopping,
                    )
                else:
                    body = reply.body or b"x" * 4000
                    try:
                        self.wfile.write(f"Content-Length: {len(body)}\r\n\r\n".encode())
                    except OSError:
                        return
                    finished = trickle(
                        self.wfile.write,
                        body,
                        reply.trickle_body,
                        reply.trickle_for,
                        server.stopping,
                    )
                if not finished:
                    with server._lock:
                        server.hangups.append(record)

            do_GET = do_POST = do_PUT = _handle

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve_bytes(self, path: str, body: bytes, content_type: str = "image/png") -> str:
        self.routes[path] = lambda _r: Reply(200, body, {"Content-Type": content_type})
        return self.url(path)

    def received(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 20.0) -> list[Recorded]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"expected {count} requests to {path}, got {len(self.received(path))}")

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
