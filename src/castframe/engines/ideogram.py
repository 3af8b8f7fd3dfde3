"""``IdeogramEngine``: Ideogram's official API behind Castframe's contract, for the whole
family: Ideogram 3.0 (``ideogram-v3-*`` and ``ideogram-character``), 4.0 (``ideogram-v4-*``)
and the legacy 2.x API (``ideogram-v2*``).

What Apiframe sells: the operator holds the Ideogram key; users only see Castframe. Per job:
one request to the model's route (generate, or its edit route when an image and mask are
given) with the reference images as file parts, then every result image is downloaded at
once (Ideogram's links expire) and returned as pixels, with the upstream's seed, rewritten
prompt, safety flag and latency in the metadata. Which route each model takes, and how each
of Castframe's params maps onto it, is the table ``ROUTES`` and the pure ``build_call``; what
a route cannot take is refused at submission (``check_params``), never silently dropped.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np
from PIL import Image

from castframe.catalog.ideogram_params import V4_RESOLUTIONS
from castframe.engines.base import (
    EngineRequest,
    EngineResult,
    GeneratedImage,
    InputImage,
    RunHooks,
)
from castframe.engines.prompt import expand_prompt
from castframe.errors import JobFailure
from castframe.media.deadline import Deadline
from castframe.media.images import ImageRejected, decode_image, encode_png

log = logging.getLogger("castframe.engines.ideogram")

V3_GENERATE = "/v1/ideogram-v3/generate"
V3_INPAINT = "/v1/ideogram-v3/inpaint"
"""Ideogram 3.0's mask edit. Its older ``/v1/ideogram-v3/edit`` is marked legacy, to be
removed, in Ideogram's own API reference."""
V4_GENERATE = "/v1/ideogram-v4/generate"
LEGACY_GENERATE = "/generate"
LEGACY_EDIT = "/edit"
CHARACTER_STYLES = ("AUTO", "REALISTIC", "FICTION")
MAX_REFERENCE_BYTES = 10 * 1024 * 1024
SAFETY_WORDS = re.compile(r"safety|unsafe|policy|moderat|nsfw|inappropriate", re.I)

Downloader = Callable[[str], bytes]
Version = Literal["v3", "v4", "legacy"]


@dataclass(frozen=True)
class Route:
    """How one Ideogram model is reached."""

    version: Version
    speed: str | None = None
    """The rendering speed the model id fixes (None: the request's)."""
    legacy_model: str | None = None
    """``image_request.model`` on the legacy API (V_2, V_2_TURBO, V_2A, V_2A_TURBO)."""


ROUTES: dict[str, Route] = {
    "ideogram-character": Route("v3"),
    "ideogram-v3-turbo": Route("v3", "turbo"),
    "ideogram-v3-balanced": Route("v3", "default"),
    "ideogram-v3-quality": Route("v3", "quality"),
    "ideogram-v4-turbo": Route("v4", "turbo"),
    "ideogram-v4-balanced": Route("v4", "default"),
    "ideogram-v4-quality": Route("v4", "quality"),
    "ideogram-v2": Route("legacy", legacy_model="V_2"),
    "ideogram-v2-turbo": Route("legacy", legacy_model="V_2_TURBO"),
    "ideogram-v2a": Route("legacy", legacy_model="V_2A"),
    "ideogram-v2a-turbo": Route("legacy", legacy_model="V_2A_TURBO"),
}


def serves(model_id: str) -> bool:
    return model_id in ROUTES


def _given(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    return value is not None and value != [] and value != ""


def _refuse(name: str, why: str) -> tuple[str, str]:
    return (name, f"the ideogram engine cannot use {name} {why}")


def check_params(model_id: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Submission-time refusals for a job of ``model_id`` routed here: (params field, message
    naming the engine) for each field the model's Ideogram route lacks."""
    route = ROUTES[model_id]
    editing = _given(params, "image")
    character = _given(params, "character_reference_image") or _given(params, "character_id")
    problems: list[tuple[str, str]] = []
    if route.version == "v4":
        why = "with Ideogram 4.0 (its API takes a prompt, a size and the speed only)"
        for name in ("character_reference_image", "character_id", "style_reference_images",
                     "style_preset", "style_type", "negative_prompt", "seed"):  # fmt: skip
            if _given(params, name):
                problems.append(_refuse(name, why))
        if params.get("magic_prompt_option") == "Off":
            problems.append(
                (
                    "magic_prompt_option",
                    "the ideogram engine cannot turn Magic Prompt off for "
                    "Ideogram 4.0 (its text prompts always use it)",
                )
            )
        return problems
    if route.version == "legacy":
        why = "with Ideogram 2.x (its legacy API has no such input)"
        for name in ("character_reference_image", "character_id", "style_reference_images",
                     "style_preset"):  # fmt: skip
            if _given(params, name):
                problems.append(_refuse(name, why))
        if route.legacy_model in ("V_2A", "V_2A_TURBO") and _given(params, "negative_prompt"):
            problems.append(_refuse("negative_prompt", "with Ideogram 2a (V_2 and V_2_TURBO only)"))
    elif character:
        style = params.get("style_type")
        if style is not None and style not in CHARACTER_STYLES:
            problems.append(
                (
                    "style_type",
                    f"the ideogram engine does not take style_type {style} with a "
                    f"character reference; use one of {', '.join(CHARACTER_STYLES)}",
                )
            )
        for name in ("style_preset", "style_reference_images"):
            if _given(params, name):
                problems.append(
                    _refuse(name, "with a character reference (Ideogram refuses the pair)")
                )
    if editing:
        for name in ("negative_prompt", "aspect_ratio"):
            if _given(params, name):
                problems.append(_refuse(name, "in a mask edit (the output keeps the image's size)"))
    return problems


@dataclass
class Call:
    """One request to Ideogram: its route and its multipart fields and files, or its JSON."""

    path: str
    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, tuple[str, bytes, str]]] = field(default_factory=list)
    json: dict[str, Any] | None = None


def build_call(request: EngineRequest) -> Call:
    """Pure: a job of one Ideogram model -> the request to its route, in Ideogram's names
    and spellings for that API version."""
    route = ROUTES[request.model]
    if route.version == "v4":
        return _v4_call(request, route)
    if route.version == "legacy":
        return _legacy_call(request, route)
    return _v3_call(request, route)


def _speed(request: EngineRequest, route: Route) -> str:
    return str(route.speed or request.param("rendering_speed", "default")).upper()


def _v3_call(request: EngineRequest, route: Route) -> Call:
    inputs = request.inputs
    editing = inputs.editing
    call = Call(V3_INPAINT if editing else V3_GENERATE)
    fields = call.fields
    fields["prompt"] = request.prompt
    fields["rendering_speed"] = _speed(request, route)
    if request.param("magic_prompt_option"):
        fields["magic_prompt"] = str(request.params["magic_prompt_option"]).upper()
    style = request.param("style_type")
    if style is None and inputs.character is not None:
        style = "AUTO"  # Ideogram's default (GENERAL) is not allowed with a character
    if style is not None:
        fields["style_type"] = str(style)
    fields["seed"] = str(request.seed)
    fields["num_images"] = str(request.num_images)
    if request.param("style_preset"):
        fields["style_preset"] = str(request.params["style_preset"])
    if not editing:
        if request.param("resolution"):
            fields["resolution"] = str(request.params["resolution"])
        elif request.param("aspect_ratio"):
            fields["aspect_ratio"] = str(request.params["aspect_ratio"]).replace(":", "x")
        if request.negative_prompt:
            fields["negative_prompt"] = request.negative_prompt
    if inputs.character is not None:
        call.files.append(("character_reference_images", _file("reference", inputs.character)))
    for index, style_image in enumerate(inputs.style_references):
        call.files.append(("style_reference_images", _file(f"style{index}", style_image)))
    if editing:
        call.files += _edit_parts(request, "image")
    return call


def _v4_call(request: EngineRequest, route: Route) -> Call:
    call = Call(V4_GENERATE)
    call.fields["text_prompt"] = request.prompt
    call.fields["rendering_speed"] = _speed(request, route)
    # Ideogram 4.0 takes a 2K ``resolution``, not a ratio: the catalog's size of the ratio.
    resolution = request.param("resolution") or V4_RESOLUTIONS.get(
        str(request.param("aspect_ratio", ""))
    )
    if resolution:
        call.fields["resolution"] = str(resolution)
    return call


def _legacy_call(request: EngineRequest, route: Route) -> Call:
    assert route.legacy_model is not None
    magic = request.param("magic_prompt_option")
    style = request.param("style_type")
    if request.inputs.editing:
        call = Call(LEGACY_EDIT)
        call.fields.update(
            {
                "prompt": request.prompt,
                "model": route.legacy_model,
                "seed": str(request.seed),
                "num_images": str(request.num_images),
            }
        )
        if magic:
            call.fields["magic_prompt_option"] = str(magic).upper()
        if style:
            call.fields["style_type"] = str(style)
        call.files = _edit_parts(request, "image_file")
        return call
    image_request: dict[str, Any] = {
        "prompt": request.prompt,
        "model": route.legacy_model,
        "seed": request.seed,
        "num_images": request.num_images,
    }
    if request.param("resolution"):
        image_request["resolution"] = "RESOLUTION_" + str(request.params["resolution"]).replace(
            "x", "_"
        )
    elif request.param("aspect_ratio"):
        image_request["aspect_ratio"] = "ASPECT_" + str(request.params["aspect_ratio"]).replace(
            ":", "_"
        )
    if magic:
        image_request["magic_prompt_option"] = str(magic).upper()
    if style:
        image_request["style_type"] = str(style)
    if request.negative_prompt:
        image_request["negative_prompt"] = request.negative_prompt
    return Call(LEGACY_GENERATE, json={"image_request": image_request})


def _edit_parts(
    request: EngineRequest, image_name: str
) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The image and its mask as PNG parts; the mask in Ideogram's convention (black =
    repaint, white = keep), which is Castframe's."""
    inputs = request.inputs
    assert inputs.image is not None and inputs.mask is not None
    mask = np.where(inputs.mask, 0, 255).astype(np.uint8)
    return [
        (image_name, _png_file("image", inputs.image.pixels)),
        ("mask", _png_file("mask", np.stack([mask] * 3, axis=-1))),
    ]


def _png_file(name: str, pixels: np.ndarray) -> tuple[str, bytes, str]:
    return (f"{name}.png", encode_png(pixels), "image/png")


def _file(name: str, image: InputImage) -> tuple[str, bytes, str]:
    """An input as received when Ideogram takes it (JPEG, PNG or WebP under 10 MB), else
    re-encoded as JPEG."""
    raw = image.raw
    if raw and len(raw) <= MAX_REFERENCE_BYTES:
        kind = Image.open(io.BytesIO(raw)).format or "PNG"
        if kind in ("JPEG", "PNG", "WEBP"):
            content_type = {"JPEG": "image/jpeg", "WEBP": "image/webp"}.get(kind, "image/png")
            return (f"{name}.{kind.lower()}", raw, content_type)
    buffer = io.BytesIO()
    Image.fromarray(image.pixels).save(buffer, format="JPEG", quality=90)
    return (f"{name}.jpg", buffer.getvalue(), "image/jpeg")


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
        call = build_call(request)
        # Ideogram 4.0 makes one image per request: a job's images are that many requests.
        calls = request.num_images if call.path == V4_GENERATE else 1
        hooks.progress(5)
        bodies: list[dict[str, Any]] = []
        latency = 0.0
        for _ in range(calls):
            while not self._slots.acquire(timeout=0.5):
                hooks.check_cancelled()  # waiting for an upstream slot: a cancel wins
            try:
                hooks.check_cancelled()  # never start a call for a cancelled job
                body, took = self._call(call, hooks)
            finally:
                self._slots.release()
            bodies.append(body)
            latency += took
        hooks.progress(80)
        merged = {"data": [item for body in bodies for item in _items(body)]}
        return self._collect(request, merged, latency, hooks)

    def _call(self, call: Call, hooks: RunHooks) -> tuple[dict[str, Any], float]:
        path = call.path
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
                    headers = {"Api-Key": self.api_key}
                    if call.json is not None:
                        response = client.post(
                            url, json=call.json, headers=headers, extensions=deadline.extensions
                        )
                    else:
                        # Always multipart, as Ideogram documents, even with no file part
                        # (httpx would send a form without files URL-encoded).
                        parts: list[tuple[str, tuple[str | None, str | bytes, str | None]]]
                        parts = [(k, (None, v, None)) for k, v in call.fields.items()]
                        parts += call.files
                        response = client.post(
                            url, files=parts, headers=headers, extensions=deadline.extensions
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
            hooks.check_cancelled()

    def _collect(
        self, request: EngineRequest, body: dict[str, Any], latency: float, hooks: RunHooks
    ) -> EngineResult:
        items = body["data"]
        if not items:
            raise JobFailure("upstream_unavailable", "Ideogram returned no images")
        safe = [item for item in items if item.get("is_image_safe", True) and item.get("url")]
        if not safe:
            raise JobFailure("content_filtered", "Ideogram's safety check withheld every image")
        images = []
        for index, item in enumerate(safe):
            hooks.check_cancelled()
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
                "model": request.model,
                "upstreamLatencyMs": round(latency, 1),
                "requested": len(items),
                "withheldUnsafe": len(items) - len(safe),
            },
        )


def _items(body: Any) -> list[dict[str, Any]]:
    """The ``data`` list of an Ideogram answer (its one shape on every route)."""
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise JobFailure("upstream_unavailable", "Ideogram answered without a data list")
    return [item for item in items if isinstance(item, dict)]
