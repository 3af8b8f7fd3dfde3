"""A faithful fake of Ideogram's 3.0 API, as a real HTTP server, written from its public contract.

It rejects what the real API rejects (missing fields, wrong enum spellings, a missing or wrong
``Api-Key`` header, unknown fields, more than one character reference, mask/image size
mismatch), answers the documented JSON shape, serves result images at expiring URLs, and on
demand misbehaves: 429 with Retry-After, 500, slow answers, unsafe results, 400s.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import io
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tests.support.http import trickle

TRICKLE = -1
"""``handle``'s status for a hostile answer (the payload: for how many seconds)."""
SPEEDS = {"FLASH", "TURBO", "DEFAULT", "QUALITY"}
MAGIC = {"AUTO", "ON", "OFF"}
STYLES = {"AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION"}
CHARACTER_STYLES = {"AUTO", "REALISTIC", "FICTION"}
RESOLUTIONS = {
    "1x1": (1024, 1024),
    "3x4": (864, 1152),
    "4x3": (1152, 864),
    "9x16": (736, 1312),
    "16x9": (1312, 736),
    "2x3": (832, 1248),
    "3x2": (1248, 832),
    "4x5": (896, 1120),
    "5x4": (1120, 896),
    "10x16": (800, 1280),
    "16x10": (1280, 800),
    "1x2": (704, 1408),
    "2x1": (1408, 704),
    "1x3": (512, 1536),
    "3x1": (1536, 512),
}
"""Ideogram 3.0's aspect ratios (written with x) and the size each renders at."""
SIZES = {f"{w}x{h}" for w in range(512, 1537, 16) for h in range(512, 1537, 16)}
"""Sizes the fake accepts as ``resolution``: Ideogram's are all in this grid."""
GENERATE_FIELDS = {
    "prompt",
    "seed",
    "aspect_ratio",
    "resolution",
    "rendering_speed",
    "magic_prompt",
    "num_images",
    "negative_prompt",
    "style_type",
    "character_reference_images",
    "character_reference_images_mask",
}
EDIT_FIELDS = {
    "prompt",
    "image",
    "mask",
    "seed",
    "rendering_speed",
    "magic_prompt",
    "num_images",
    "style_type",
    "character_reference_images",
    "character_reference_images_mask",
}


@dataclass
class Call:
    path: str
    fields: dict[str, str]
    files: dict[str, list[bytes]]
    at: float


@dataclass
class FakeIdeogram:
    api_key: str = "ideo-test-key"
    url_ttl: float = 60.0
    calls: list[Call] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)
    """Queued behaviours for the next generate/edit calls: 'ok', '429:<s>', '500', '400',
    'unsafe', 'half-unsafe', 'slow:<s>', '422-safety', 'trickle:<s>' (200, then one header
    byte every 0.25 s for <s> seconds: never a read timeout)."""

    def __post_init__(self) -> None:
        self._images: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                token = self.path.split("?")[0].rsplit("/", 1)[-1].removesuffix(".png")
                with fake._lock:
                    item = fake._images.get(token)
                if item is None:
                    return self._send(404, {"message": "not found"})
                data, expires = item
                if time.time() > expires:
                    return self._send(403, {"message": "link expired"})
                self._raw(200, data, "image/png")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                status, payload, headers = fake.handle(
                    self.path, dict(self.headers), body, f"http://127.0.0.1:{fake.port}"
                )
                if status == TRICKLE:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        padding = b"X-Padding: " + b"a" * 8000 + b"\r\n\r\n"
                        trickle(self.wfile.write, padding, 0.25, float(payload), fake.stopping)
                    return
                self._send(status, payload, headers)

            def _send(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                self._raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _raw(
                self,
                status: int,
                data: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

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

    # -- the API ---------------------------------------------------------------------------
    def handle(
        self, path: str, headers: dict[str, str], body: bytes, base: str
    ) -> tuple[int, Any, dict[str, str]]:
        lowered = {k.lower(): v for k, v in headers.items()}
        if lowered.get("api-key") != self.api_key:
            return 401, {"message": "Invalid or missing Api-Key header"}, {}
        if path not in ("/v1/ideogram-v3/generate", "/v1/ideogram-v3/edit"):
            return 404, {"message": "Not Found"}, {}
        if not lowered.get("content-type", "").startswith("multipart/form-data"):
            return 400, {"message": "expected multipart/form-data"}, {}
        fields, files = parse_multipart(lowered["content-type"], body)
        self.calls.append(Call(path, fields, files, time.time()))
        error = validate(path, fields, files)
        if error:
            return 400, {"message": error}, {}
        behaviour = self.script.popleft() if self.script else "ok"
        if behaviour.startswith("429"):
            return 429, {"message": "Too many requests"}, {"Retry-After": behaviour.split(":")[1]}
        if behaviour == "500":
            return 500, {"message": "Internal error"}, {}
        if behaviour == "400":
            return 400, {"message": "Prompt is too long for this model"}, {}
        if behaviour == "422-safety":
            return 422, {"message": "Prompt failed the safety check"}, {}
        if behaviour.startswith("trickle"):
            return TRICKLE, float(behaviour.split(":")[1]), {}
        if behaviour.startswith("slow"):
            time.sleep(float(behaviour.split(":")[1]))
        return 200, self._result(path, fields, files, behaviour, base), {}

    def _result(
        self,
        path: str,
        fields: dict[str, str],
        files: dict[str, list[bytes]],
        behaviour: str,
        base: str,
    ) -> dict[str, Any]:
        count = int(fields.get("num_images", "1"))
        seed = int(fields.get("seed", secrets.randbelow(2**31)))
        if path.endswith("/edit"):
            width, height = Image.open(io.BytesIO(files["image"][0])).size
        elif "resolution" in fields:
            width, height = (int(side) for side in fields["resolution"].split("x"))
        else:
            width, height = RESOLUTIONS[fields.get("aspect_ratio", "1x1")]
        prompt = fields["prompt"]
        if fields.get("magic_prompt", "AUTO") != "OFF":
            prompt = f"{prompt}, rewritten by magic prompt with cinematic light"
        data = []
        for index in range(count):
            unsafe = behaviour == "unsafe" or (behaviour == "half-unsafe" and index % 2 == 1)
            item: dict[str, Any] = {
                "prompt": prompt,
                "resolution": f"{width}x{height}",
                "is_image_safe": not unsafe,
                "seed": seed + index,
                "style_type": fields.get("style_type", "AUTO"),
            }
            if unsafe:
                item["url"] = None
            else:
                token = secrets.token_hex(8)
                with self._lock:
                    self._images[token] = (
                        picture(width, height, seed + index),
                        time.time() + self.url_ttl,
                    )
                item["url"] = f"{base}/ephemeral/{token}.png?exp={int(time.time() + self.url_ttl)}"
            data.append(item)
        return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data}


def picture(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 255, 3)))
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(240, 200, 170)
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, list[bytes]]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    files: dict[str, list[bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            files.setdefault(str(name), []).append(payload)
        else:
            fields[str(name)] = payload.decode()
    return fields, files


def validate(path: str, fields: dict[str, str], files: dict[str, list[bytes]]) -> str | None:
    editing = path.endswith("/edit")
    allowed = EDIT_FIELDS if editing else GENERATE_FIELDS
    unknown = (set(fields) | set(files)) - allowed
    if unknown:
        return f"Unknown fields: {sorted(unknown)}"
    if not fields.get("prompt"):
        return "prompt is required"
    if fields.get("rendering_speed", "DEFAULT") not in SPEEDS:
        return f"rendering_speed must be one of {sorted(SPEEDS)}"
    if fields.get("magic_prompt", "AUTO") not in MAGIC:
        return f"magic_prompt must be one of {sorted(MAGIC)}"
    style = fields.get("style_type", "AUTO")
    if style not in STYLES:
        return f"style_type must be one of {sorted(STYLES)}"
    refs = files.get("character_reference_images", [])
    if len(refs) > 1:
        return "only one character reference image is supported"
    if refs and style not in CHARACTER_STYLES:
        return "style_type must be AUTO, REALISTIC or FICTION with character references"
    if refs and fields.get("rendering_speed") == "FLASH":
        return "FLASH is not supported with character references"
    if not 1 <= int(fields.get("num_images", "1")) <= 8:
        return "num_images must be between 1 and 8"
    if not 0 <= int(fields.get("seed", "0")) <= 2147483647:
        return "seed out of range"
    for ref in refs:
        if len(ref) > 10 * 1024 * 1024:
            return "character reference over 10MB"
        Image.open(io.BytesIO(ref)).verify()
    if editing:
        if "image" not in files or "mask" not in files:
            return "image and mask are required"
        image = Image.open(io.BytesIO(files["image"][0]))
        mask = Image.open(io.BytesIO(files["mask"][0]))
        if image.size != mask.size:
            return "mask must have the same size as image"
    elif "resolution" in fields and "aspect_ratio" in fields:
        return "resolution and aspect_ratio cannot be used together"
    elif "resolution" in fields and fields["resolution"] not in SIZES:
        return f"resolution {fields['resolution']} is not supported"
    elif fields.get("aspect_ratio", "1x1") not in RESOLUTIONS:
        return f"aspect_ratio must be written like 1x1; got {fields.get('aspect_ratio')}"
    return None
