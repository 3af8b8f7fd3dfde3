"""A fake of Black Forest Labs' API, as a real HTTP server, written from BFL's API reference.

Routes: ``POST /v1/flux-pro-1.1``, ``/v1/flux-pro-1.1-ultra``, ``/v1/flux-2-pro``,
``/v1/flux-2-flex``, ``/v1/flux-2-max``, ``/v1/flux-pro-1.0-fill`` (JSON bodies, ``x-key``
header) answer ``{"id", "polling_url"}``; ``GET /v1/get_result?id=`` (and the polling URL)
answers ``{"id", "status", "result": {"sample"}, "progress", "details"}`` with BFL's statuses
(``Pending``, ``Ready``, ``Request Moderated``, ``Content Moderated``, ``Error``, ``Task not
found``); results are served at signed URLs that expire (403 after ``url_ttl``). The HTTP
plumbing (server thread, scripted faults, expiring links) is ``fake_upstream``'s.

It rejects what the real API rejects (a missing or wrong key, fields a route does not have,
sizes off the route's grid, undecodable base64 images, a mask of another size: 422 with
FastAPI's ``detail``) and misbehaves on demand: ``submit_script`` ('429:<s>', a 5xx status
such as '500', '402', '422', 'slow:<s>' for a read timeout), ``poll_script`` ('429:<s>', a
5xx status) and per-task ``outcomes`` ('ready', 'request-moderated', 'content-moderated',
'error', 'lost', 'expired-url', 'always-expired', 'hold').
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
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from PIL import Image, ImageDraw

from tests.support.fake_upstream import (
    Answer,
    Request,
    ServedFake,
    json_answer,
    next_behaviour,
    scripted_fault,
)

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
class FakeBfl(ServedFake):
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
        self.release = threading.Event()
        """Set to let 'hold' tasks finish."""
        self.serve(self._answer)

    def close(self) -> None:
        self.release.set()
        super().close()

    def submits(self, route: str | None = None) -> list[Call]:
        return [
            call
            for call in self.calls
            if call.method == "POST" and (route is None or call.path == route)
        ]

    def polls(self) -> list[Call]:
        return [call for call in self.calls if call.path.startswith("/v1/get_result")]

    # -- HTTP ------------------------------------------------------------------------------
    def _answer(self, request: Request) -> Answer:
        headers, method, path = request.headers, request.method, request.target
        if path.startswith("/results/"):
            return self._serve_result(path)
        body: dict[str, Any] | None = None
        if method == "POST":
            try:
                parsed = json.loads(request.body)
            except ValueError:
                return json_answer(422, {"detail": [{"loc": ["body"], "msg": "invalid JSON"}]})
            body = parsed if isinstance(parsed, dict) else None
        self.calls.append(Call(method, request.path, headers, body))
        if headers.get("x-key") != self.api_key:
            return json_answer(403, {"detail": "Not authenticated - Invalid Authentication"})
        if method == "GET" and request.path == "/v1/get_result":
            return self._poll(parse_qs(request.query).get("id", [""])[0])
        if method != "POST" or path not in ROUTES:
            return json_answer(404, {"detail": "Not Found"})
        if not headers.get("content-type", "").startswith("application/json") or body is None:
            return json_answer(422, {"detail": [{"loc": ["body"], "msg": "expected JSON"}]})
        behaviour = next_behaviour(self.submit_script)
        fault = scripted_fault(
            behaviour,
            busy={"detail": "You have exceeded the number of active tasks"},
            broken={"detail": "Internal Server Error"},
        )
        if fault:
            return fault
        if behaviour == "402":
            return json_answer(402, {"detail": "Insufficient credits"})
        error = validate(path, body)
        if behaviour == "422":
            error = error or "prompt: the prompt is too long"
        if error:
            where, _, message = error.partition(": ")
            return json_answer(422, {"detail": [{"loc": ["body", where], "msg": message}]})
        task = FakeTask(
            id=secrets.token_hex(8),
            route=path,
            body=body,
            outcome=next_behaviour(self.outcomes, default="ready"),
        )
        with self._lock:
            self.tasks[task.id] = task
        if behaviour.startswith("slow"):
            time.sleep(float(behaviour.split(":")[1]))  # accepted, but answered too late
        host = self.polling_host or f"127.0.0.1:{self.port}"
        return json_answer(
            200, {"id": task.id, "polling_url": f"http://{host}/v1/get_result?id={task.id}"}
        )

    def _poll(self, task_id: str) -> Answer:
        fault = scripted_fault(
            next_behaviour(self.poll_script),
            busy={"detail": "slow down"},
            broken={"detail": "Internal Server Error"},
        )
        if fault:
            return fault
        with self._lock:
            task = self.tasks.get(task_id)
        if task is None or task.outcome == "lost":
            return json_answer(200, {"id": task_id, "status": "Task not found"})
        task.polls += 1
        if task.outcome == "hold" and not self.release.is_set():
            return json_answer(200, {"id": task.id, "status": "Pending", "progress": 0.1})
        if task.polls <= self.pending_polls:
            progress = task.polls / (self.pending_polls + 1)
            return json_answer(200, {"id": task.id, "status": "Pending", "progress": progress})
        if task.outcome in ("request-moderated", "content-moderated"):
            status = (
                "Request Moderated" if task.outcome.startswith("request") else "Content Moderated"
            )
            return json_answer(
                200,
                {
                    "id": task.id,
                    "status": status,
                    "details": {"Moderation Reasons": ["Derivative Works Filter"]},
                },
            )
        if task.outcome == "error":
            return json_answer(
                200, {"id": task.id, "status": "Error", "details": "generation failed"}
            )
        task.urls_issued += 1
        expired = task.outcome == "always-expired" or (
            task.outcome == "expired-url" and task.urls_issued == 1
        )
        token = self._store_result(task, expired)
        return json_answer(
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
        return self._results.put(data, f"image/{fmt}", -1 if expired else self.url_ttl)

    def _serve_result(self, path: str) -> Answer:
        return self._results.answer(
            path.split("?")[0].rsplit("/", 1)[-1],
            missing=Answer(404, b"<Error>NoSuchKey</Error>", "application/xml"),
            expired=Answer(403, b"<Error>Request has expired</Error>", "application/xml"),
        )


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
