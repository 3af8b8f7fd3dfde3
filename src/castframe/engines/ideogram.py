"""``IdeogramEngine``: Ideogram's official API (3.0) behind Castframe's contract.

What Apiframe sells: the operator holds the Ideogram key; users only see Castframe. Per job:
one multipart request (generate, or edit when an image and mask are given) with the character
reference as a file part, then every result image is downloaded at once (Ideogram's links
expire) and returned as pixels, with the upstream's seed, rewritten prompt, safety flag and
latency in the metadata.

Error policy (the operator pays Ideogram per image, so retries are careful):
- 400, or 422 that is not a safety refusal -> ``upstream_rejected`` with the upstream message;
- a safety refusal (422 naming safety, or every image ``is_image_safe: false``) ->
  ``content_filtered``; unsafe images among safe ones are dropped (only delivered ones are paid);
- 401/403 -> ``engine_misconfigured`` and an ERROR log line for the operator;
- 429, 5xx and connection errors (the request never ran) -> retried with exponential backoff,
  honouring ``Retry-After``; a timeout (a read timeout, or the call's one wall-clock deadline,
  ``timeout`` seconds for connect, upload and the whole answer: the upstream may have
  generated and billed) is retried at most once and logged; then ``upstream_unavailable``.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from PIL import Image

from castframe.engines.base import EngineRequest, EngineResult, GeneratedImage, RunHooks
from castframe.engines.prompt import expand_prompt
from castframe.errors import JobFailure
from castframe.media.deadline import Deadline
from castframe.media.images import ImageRejected, decode_image, encode_png

log = logging.getLogger("castframe.engines.ideogram")

GENERATE_PATH = "/v1/ideogram-v3/generate"
EDIT_PATH = "/v1/ideogram-v3/edit"
CHARACTER_STYLES = ("AUTO", "REALISTIC", "FICTION")
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
SAFETY_WORDS = re.compile(r"safety|unsafe|policy|moderat|nsfw|inappropriate", re.I)

Downloader = Callable[[str], bytes]


def check_params(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Submission-time checks for jobs routed here: (field, message) for each problem."""
    problems = []
    if params["style_type"] not in CHARACTER_STYLES:
        problems.append(
            (
                "ideogramParams.style_type",
                f"the ideogram engine does not take style_type {params['style_type']} with a "
                f"character reference; use one of {', '.join(CHARACTER_STYLES)}",
            )
        )
    for name in ("style_preset", "style_reference_images"):
        if params.get(name):
            problems.append(
                (
                    f"ideogramParams.{name}",
                    f"the ideogram engine cannot use {name} with a character reference "
                    "(Ideogram refuses the pair)",
                )
            )
    return problems


def form_fields(request: EngineRequest, editing: bool) -> dict[str, str]:
    """Pure: Castframe params -> Ideogram's form fields (names and spellings)."""
    fields = {
        "prompt": request.prompt,
        "rendering_speed": request.rendering_speed.upper(),
        "magic_prompt": request.magic_prompt_option.upper(),
        "style_type": request.style_type,
        "seed": str(request.seed),
        "num_images": str(request.num_images),
    }
    if not editing:
        if request.resolution:
            fields["resolution"] = request.resolution
        else:
            fields["aspect_ratio"] = request.aspect_ratio.replace(":", "x")
        if request.negative_prompt:
            fields["negative_prompt"] = request.negative_prompt
    return fields


def _png_file(name: str, pixels: np.ndarray) -> tuple[str, bytes, str]:
    return (f"{name}.png", encode_png(pixels), "image/png")


def _reference_file(request: EngineRequest) -> tuple[str, bytes, str]:
    raw = request.reference_bytes
    if raw and len(raw) <= MAX_REFERENCE_BYTES:
        kind = Image.open(io.BytesIO(raw)).format or "PNG"
        content_type = {"JPEG": "image/jpeg", "WEBP": "image/webp"}.get(kind, "image/png")
        return (f"reference.{kind.lower()}", raw, content_type)
    buffer = io.BytesIO()
    Image.fromarray(request.reference).save(buffer, format="JPEG", quality=90)
    return ("reference.jpg", buffer.getvalue(), "image/jpeg")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return min(float(value), 300.0) if value.replace(".", "", 1).isdigit() else None


def _upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
    return str(body)[:300]


@dataclass
class IdeogramEngine:
    api_key: str
    base_url: str
    download: Downloader
    timeout: float = 120.0
    max_retries: int = 3
    retry_base: float = 2.0
    concurrency: int = 8
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000

    name = "ideogram"

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.concurrency)

    def generate(self, request: EngineRequest, hooks: RunHooks) -> EngineResult:
        editing = request.edit_image is not None and request.edit_mask is not None
        files: list[tuple[str, tuple[str, bytes, str]]] = [
            ("character_reference_images", _reference_file(request))
        ]
        if editing:
            assert request.edit_image is not None and request.edit_mask is not None
            mask = np.where(request.edit_mask, 0, 255).astype(np.uint8)
            files += [
                ("image", _png_file("image", request.edit_image)),
                ("mask", _png_file("mask", np.stack([mask] * 3, axis=-1))),
            ]
        fields = form_fields(request, editing)
        hooks.progress(5)
        while not self._slots.acquire(timeout=0.5):
            hooks.check_canceled()  # waiting for an upstream slot: a cancel wins
        try:
            hooks.check_canceled()  # never start a call for a canceled job
            body, latency = self._call(
                EDIT_PATH if editing else GENERATE_PATH, fields, files, hooks
            )
        finally:
            self._slots.release()
        hooks.progress(80)
        return self._collect(request, body, latency, hooks)

    def _call(
        self,
        path: str,
        fields: dict[str, str],
        files: list[tuple[str, tuple[str, bytes, str]]],
        hooks: RunHooks,
    ) -> tuple[dict[str, Any], float]:
        url = self.base_url.rstrip("/") + path
        read_timeouts = 0
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            wait: float | None = None
            reason = ""
            # One wall-clock limit on the whole call (media/deadline.py): httpx's read timeout
            # is per recv(), so an upstream trickling its headers would never trip it.
            deadline = Deadline(self.timeout)
            timeout = httpx.Timeout(self.timeout, connect=min(10.0, self.timeout))
            try:
                with deadline, httpx.Client(timeout=timeout) as client:
                    response = client.post(
                        url,
                        data=fields,
                        files=files,
                        headers={"Api-Key": self.api_key},
                        extensions=deadline.extensions,
                    )
            except httpx.TransportError as exc:
                if not (isinstance(exc, httpx.ReadTimeout) or deadline.expired):
                    reason = f"{type(exc).__name__}"
                else:
                    read_timeouts += 1
                    log.warning(
                        "Ideogram did not answer within %.0fs on %s: it may have generated "
                        "and billed; %s",
                        self.timeout,
                        path,
                        "retrying once" if read_timeouts == 1 else "giving up",
                    )
                    if read_timeouts > 1:
                        raise JobFailure(
                            "upstream_unavailable", "Ideogram timed out twice"
                        ) from None
                    reason = "timeout"
            else:
                latency = (time.monotonic() - started) * 1000
                status = response.status_code
                if status == 200:
                    try:
                        return response.json(), latency
                    except ValueError:
                        raise JobFailure(
                            "upstream_unavailable",
                            "Ideogram answered 200 with a body that is not JSON",
                        ) from None
                message = _upstream_message(response)
                if status in (401, 403):
                    log.error(
                        "IDEOGRAM REJECTED THE OPERATOR'S API KEY (HTTP %s): %s. Check "
                        "CASTFRAME_IDEOGRAM_API_KEY.",
                        status,
                        message,
                    )
                    raise JobFailure(
                        "engine_misconfigured", "the server's Ideogram credentials were refused"
                    )
                if status == 422 and SAFETY_WORDS.search(message):
                    raise JobFailure("content_filtered", f"Ideogram refused: {message}")
                if status in (400, 404, 413, 415, 422):
                    raise JobFailure(
                        "upstream_rejected", f"Ideogram rejected the request: {message}"
                    )
                wait = _retry_after(response)
                reason = f"HTTP {status}"
            if attempt > self.max_retries:
                raise JobFailure(
                    "upstream_unavailable",
                    f"Ideogram kept failing ({reason}) after {attempt} attempts",
                )
            delay = max(wait or 0.0, self.retry_base * 2 ** (attempt - 1))
            log.info("Ideogram %s; retry %d in %.1fs", reason, attempt, delay)
            self._sleep(delay, hooks)

    @staticmethod
    def _sleep(seconds: float, hooks: RunHooks) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))
            hooks.check_canceled()

    def _collect(
        self, request: EngineRequest, body: dict[str, Any], latency: float, hooks: RunHooks
    ) -> EngineResult:
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise JobFailure("upstream_unavailable", "Ideogram returned no images")
        safe = [item for item in items if item.get("is_image_safe", True) and item.get("url")]
        if not safe:
            raise JobFailure("content_filtered", "Ideogram's safety check withheld every image")
        images = []
        for index, item in enumerate(safe):
            hooks.check_canceled()
            try:
                raw = self.download(str(item["url"]))
                decoded = decode_image(
                    raw, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels
                )
            except ImageRejected as exc:
                raise JobFailure(
                    "upstream_unavailable", f"an Ideogram image is unusable: {exc}"
                ) from exc
            seed = int(item.get("seed", request.seed + index))
            prompt = str(item.get("prompt") or expand_prompt(request.prompt, "Off", request.seed))
            images.append(
                GeneratedImage(
                    pixels=decoded.pixels,
                    seed=seed,
                    prompt=prompt,
                    metadata={
                        "upstreamSeed": item.get("seed"),
                        "isImageSafe": True,
                        "resolution": item.get("resolution"),
                        "styleType": item.get("style_type"),
                    },
                )
            )
            hooks.progress(80 + int(20 * (index + 1) / len(safe)))
        return EngineResult(
            images=images,
            metadata={
                "engine": self.name,
                "upstreamLatencyMs": round(latency, 1),
                "requested": len(items),
                "withheldUnsafe": len(items) - len(safe),
            },
        )
