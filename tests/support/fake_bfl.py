"""A fake of Black Forest Labs' API, as a real HTTP server, written from BFL's API reference.

Routes: ``POST /v1/flux-pro-1.1``, ``/v1/flux-pro-1.1-ultra``, ``/v1/flux-2-pro``,
``/v1/flux-2-flex``, ``/v1/flux-2-max``, ``/v1/flux-pro-1.0-fill`` (JSON bodies, ``x-key``
header) answer ``{"id", "polling_url"}``; ``GET /v1/get_result?id=`` (and the polling URL)
answers ``{"id", "status", "result": {"sample"}, "progress", "details"}`` with BFL's statuses
(``Pending``, ``Ready``, ``Request Moderated``, ``Content Moderated``, ``Error``, ``Task not
found``); results are served at signed URLs that expire (403 after ``url_ttl``).

It rejects what the real API rejects (a missing or wrong key, fields a route does not have,
sizes off the route's grid, undecodable base64 images, a mask of another size: 422 with
FastAPI's ``detail``) and misbehaves on demand: ``submit_script`` ('429:<s>', '500', '402',
'422', 'slow:<s>' for a read timeout), ``poll_script`` ('500', '429:<s>') and per-task
``outcomes`` ('ready', 'request-moderated', 'content-moderated', 'error', 'lost',
'expired-url', 'always-expired', 'hold').
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image, ImageDraw

COMMON = {"prompt", "seed", "safety_tolerance", "output_format", "webhook_url", "webhook_secret"}
FLUX_2_IMAGES = {"input_image", *(f"input_image_{n}" for n in range(2, 9))}
ROUTES: dict[str, set[str]] = {
    "/v1/flux-pro-1.1": COMMON | {"width", "height", "prompt_upsampling", "image_prompt"},
    "/v1/flux-pro-1.1-ultra": COMMON
    | {"aspect_ratio", "raw", "image_prompt", "image_prompt_strength", "prompt_upsampling"},
    "/v1/flux-2-pro": COMMON | {"width", "height", "disable_pup"} | FLUX_2_IMAGES,
    "/v1/flux-2-max": COMMON | {"width", "height", "disable_pup"} | FLUX_2_IMAGES,
    "/v1/flux-2-flex": COMMON
    | {"width", "height", "steps", "guidance", "prompt_upsampling"}
    | FLUX_2_IMAGES,
    "/v1/flux-pro-1.0-fill": COMMON | {"image", "mask", "steps", "guidance", "prompt_upsampling"},
}
GRID = {"/v1/flux-pro-1.1": (32, 256, 1440)}
"""(multiple, min, max) of width/height; FLUX.2 routes: multiples of 16, 64 to 2048."""
FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class FakeTask:
    id: str
    route: str
    body: dict[str, Any]
    outcome: str
    polls: int = 0
    urls_issued: int = 0


@dataclass
class FakeBfl:
    api_key: str = "bfl-test-key"
    url_ttl: float = 600.0
    pending_polls: int = 2
    """``Pending`` answers before ``Ready``."""
    calls: list[Call] = field(default_factory=list)
    submit_script: deque[str] = field(default_factory=deque)
    poll_script: deque[str] = field(default_factory=deque)
    outcomes: deque[str] = field(default_factory=deque)
    """The next submitted tasks' outcomes (default 'ready')."""
    polling_host: str | None = None
    """Answer polling URLs on this host instead of the fake's (to test where the key goes)."""

    def __post_init__(self) -> None:
        self.tasks: dict[str, FakeTask] = {}
        self._images: dict[str, tuple[bytes, float, str]] = {}
        self._lock = threading.Lock()
        self.release = threading.Event()
        """Set to let 'hold' tasks finish."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                fake._dispatch(self, "GET", None)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                fake._dispatch(self, "POST", self.rfile.read(length))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def submits(self, route: str | None = None) -> list[Call]:
        return [
            call
            for call in self.calls
            if call.method == "POST" and (route is None or call.path == route)
        ]

    def polls(self) -> list[Call]:
        return [call for call in self.calls if call.path.startswith("/v1/get_result")]

    # -- HTTP ------------------------------------------------------------------------------
    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str, raw: bytes | None) -> None:
        headers = {key.lower(): value for key, value in handler.headers.items()}
        path = handler.path
        if path.startswith("/results/"):
            return self._serve_result(handler, path)
        body: dict[str, Any] | None = None
        if method == "POST":
            try:
                parsed = json.loads(raw or b"")
            except ValueError:
                return _send(handler, 422, {"detail": [{"loc": ["body"], "msg": "invalid JSON"}]})
            body = parsed if isinstance(parsed, dict) else None
        self.calls.append(Call(method, urlsplit(path).path, headers, body))
        if headers.get("x-key") != self.api_key:
            return _send(handler, 403, {"detail": "Not authenticated - Invalid Authentication"})
        if method == "GET" and urlsplit(path).path == "/v1/get_result":
            return self._poll(handler, parse_qs(urlsplit(path).query).get("id", [""])[0])
        if method != "POST" or path not in ROUTES:
            return _send(handler, 404, {"detail": "Not Found"})
        if not headers.get("content-type", "").startswith("application/json") or body is None:
            return _send(handler, 422, {"detail": [{"loc": ["body"], "msg": "expected JSON"}]})
        behaviour = self.submit_script.popleft() if self.submit_script else "ok"
        if behaviour.startswith("429"):
            return _send(
                handler,
                429,
                {"detail": "You have exceeded the number of active tasks"},
                {"Retry-After": behaviour.split(":")[1]},
            )
        if behaviour in ("500", "502", "503"):
            return _send(handler, int(behaviour), {"detail": "Internal Server Error"})
        if behaviour == "402":
            return _send(handler, 402, {"detail": "Insufficient credits"})
        error = validate(path, body)
        if behaviour == "422":
            error = error or "prompt: the prompt is too long"
        if error:
            where, _, message = error.partition(": ")
            return _send(handler, 422, {"detail": [{"loc": ["body", where], "msg": message}]})
        task = FakeTask(
            id=secrets.token_hex(8),
            route=path,
            body=body,
            outcome=self.outcomes.popleft() if self.outcomes else "ready",
        )
        with self._lock:
            self.tasks[task.id] = task
        if behaviour.startswith("slow"):
            time.sleep(float(behaviour.split(":")[1]))  # accepted, but answered too late
        host = self.polling_host or f"127.0.0.1:{self.port}"
        _send(
            handler,
            200,
            {"id": task.id, "polling_url": f"http://{host}/v1/get_result?id={task.id}"},
        )

    def _poll(self, handler: BaseHTTPRequestHandler, task_id: str) -> None:
        behaviour = self.poll_script.popleft() if self.poll_script else "ok"
        if behaviour.startswith("429"):
            return _send(handler, 429, {"detail": "slow down"}, {"Retry-After": behaviour[4:]})
        if behaviour in ("500", "502", "503"):
            return _send(handler, int(behaviour), {"detail": "Internal Server Error"})
        with self._lock:
            task = self.tasks.get(task_id)
        if task is None or task.outcome == "lost":
            return _send(handler, 200, {"id": task_id, "status": "Task not found"})
        task.polls += 1
        if task.outcome == "hold" and not self.release.is_set():
            return _send(handler, 200, {"id": task.id, "status": "Pending", "progress": 0.1})
        if task.polls <= self.pending_polls:
            progress = task.polls / (self.pending_polls + 1)
            return _send(handler, 200, {"id": task.id, "status": "Pending", "progress": progress})
        if task.outcome in ("request-moderated", "content-moderated"):
            status = (
                "Request Moderated" if task.outcome.startswith("request") else "Content Moderated"
            )
            return _send(
                handler,
                200,
                {
                    "id": task.id,
                    "status": status,
                    "details": {"Moderation Reasons": ["Derivative Works Filter"]},
                },
            )
        if task.outcome == "error":
            return _send(
                handler, 200, {"id": task.id, "status": "Error", "details": "generation failed"}
            )
        task.urls_issued += 1
        expired = task.outcome == "always-expired" or (
            task.outcome == "expired-url" and task.urls_issued == 1
        )
        token = self._store_result(task, expired)
        _send(
            handler,
            200,
            {
                "id": task.id,
                "status": "Ready",
                "result": {
                    "sample": f"{self.base_url}/results/{token}",
                    "prompt": task.body.get("prompt"),
                    "seed": task.body.get("seed"),
                },
                "progress": None,
            },
        )

    def _store_result(self, task: FakeTask, expired: bool) -> str:
        width, height = output_size(task.route, task.body)
        fmt = task.body.get("output_format", "jpeg")
        data = picture(width, height, int(task.body.get("seed") or 0), FORMATS[fmt])
        token = secrets.token_hex(12)
        expires = time.time() - 1 if expired else time.time() + self.url_ttl
        with self._lock:
            self._images[token] = (data, expires, f"image/{fmt}")
        return token

    def _serve_result(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        token = path.split("?")[0].rsplit("/", 1)[-1]
        with self._lock:
            item = self._images.get(token)
        if item is None:
            return _raw(handler, 404, b"<Error>NoSuchKey</Error>", "application/xml")
        data, expires, content_type = item
        if time.time() > expires:
            return _raw(handler, 403, b"<Error>Request has expired</Error>", "application/xml")
        _raw(handler, 200, data, content_type)


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: Any,
    headers: dict[str, str] | None = None,
) -> None:
    _raw(handler, status, json.dumps(payload).encode(), "application/json", headers)


def _raw(
    handler: BaseHTTPRequestHandler,
    status: int,
    data: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def decode_b64_image(value: Any) -> Image.Image | None:
    if not isinstance(value, str):
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
        image.load()
    except (binascii.Error, ValueError, OSError):
        return None
    return image


def validate(route: str, body: dict[str, Any]) -> str | None:
    """What BFL's request models would refuse, as 'field: message'; None when valid."""
    allowed = ROUTES[route]
    unknown = sorted(set(body) - allowed)
    if unknown:
        return f"{unknown[0]}: extra inputs are not permitted"
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return "prompt: field required"
    if "seed" in body and not isinstance(body["seed"], int):
        return "seed: not an integer"
    formats = {"jpeg", "png"} if route.endswith("fill") else set(FORMATS)
    if "output_format" in body and body["output_format"] not in formats:
        return f"output_format: must be one of {sorted(formats)}"
    if "width" in body or "height" in body:
        multiple, low, high = GRID.get(route, (16, 64, 2048))
        for name in ("width", "height"):
            side = body.get(name)
            if not isinstance(side, int) or side % multiple or not low <= side <= high:
                return f"{name}: must be a multiple of {multiple} from {low} to {high}"
    if "aspect_ratio" in body:
        across, _, down = str(body["aspect_ratio"]).partition(":")
        if (
            not (across.isdigit() and down.isdigit())
            or not 9 / 21 <= int(across) / max(int(down), 1) <= 21 / 9
        ):
            return "aspect_ratio: must be between 21:9 and 9:21"
    for name in ("raw", "prompt_upsampling", "disable_pup"):
        if name in body and not isinstance(body[name], bool):
            return f"{name}: not a boolean"
    low_steps = 15 if route.endswith("fill") else 1
    if "steps" in body and not (
        isinstance(body["steps"], int) and low_steps <= body["steps"] <= 50
    ):
        return f"steps: must be {low_steps} to 50"
    if "guidance" in body:
        low, high = (1.5, 100) if route.endswith("fill") else (1.5, 10)
        if not isinstance(body["guidance"], int | float) or not low <= body["guidance"] <= high:
            return f"guidance: must be {low} to {high}"
    if "image_prompt_strength" in body and not 0 <= body["image_prompt_strength"] <= 1:
        return "image_prompt_strength: must be 0 to 1"
    for name in ("image_prompt", "image", "mask", *FLUX_2_IMAGES):
        if name in body and decode_b64_image(body[name]) is None:
            return f"{name}: not a base64-encoded image"
    if route.endswith("fill"):
        if "image" not in body:
            return "image: field required"
        image, mask = decode_b64_image(body["image"]), decode_b64_image(body.get("mask"))
        if mask is not None and image is not None and mask.size != image.size:
            return "mask: must be the size of the image"
    images = [name for name in FLUX_2_IMAGES if name in body]
    if images and "input_image" not in images:
        return "input_image: the first input image is input_image"
    return None


def output_size(route: str, body: dict[str, Any]) -> tuple[int, int]:
    if route.endswith("fill"):
        image = decode_b64_image(body["image"])
        assert image is not None
        return image.size
    if route.endswith("ultra"):
        across, _, down = str(body.get("aspect_ratio", "16:9")).partition(":")
        ratio = int(across) / int(down)
        width = math.sqrt(4 * 1024 * 1024 * ratio)
        return round(width / 32) * 32, round(width / ratio / 32) * 32
    if "width" in body:
        return int(body["width"]), int(body["height"])
    if "input_image" in body:
        image = decode_b64_image(body["input_image"])
        assert image is not None
        return image.size
    return (1024, 768) if route == "/v1/flux-pro-1.1" else (1024, 1024)


def picture(width: int, height: int, seed: int, fmt: str) -> bytes:
    """A deterministic picture: a gradient and a disc, different per seed."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    image = Image.fromarray(np.broadcast_to(pixels, (height, width, 3)).copy())
    draw = ImageDraw.Draw(image)
    radius = min(width, height) // 4
    draw.ellipse(
        (width // 2 - radius, height // 2 - radius, width // 2 + radius, height // 2 + radius),
        fill=tuple(int(v) for v in rng.integers(0, 255, 3)),
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()
