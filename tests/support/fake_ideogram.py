"""A faithful fake of Ideogram's API, as a real HTTP server, written from Ideogram's published
API reference (its OpenAPI document and the generate-v4 page) for the routes Castframe uses:

======================================  ==================  ===================================
Route                                   Body                Used for
======================================  ==================  ===================================
``POST /v1/ideogram-v3/generate``       multipart           Ideogram 3.0 and ideogram-character
``POST /v1/ideogram-v3/inpaint``        multipart           their mask edits
``POST /v1/ideogram-v4/generate``       multipart           Ideogram 4.0, one image per request
``POST /generate``                      JSON image_request  the legacy 2.x models
``POST /edit``                          multipart           legacy mask edits, V_2/V_2_TURBO only
======================================  ==================  ===================================

Every other path answers 404, the legacy ``/v1/ideogram-v3/edit`` included: Ideogram marks it
legacy and to be removed, and Castframe must not use it.

It rejects what the real API rejects: a missing or wrong ``Api-Key`` header (401), the wrong
body type, fields a route does not take, a text field sent as a file (or the reverse), missing
required fields, each route's enum spellings (``16x9`` on 3.0, ``ASPECT_16_9`` on the legacy
API, 2K sizes only on 4.0), out-of-range counts and seeds, more than one character reference,
a character reference with a style the API refuses, a negative prompt on a legacy model that
has none, an edit on a model the legacy edit route lacks, a mask of another size than its image.
It answers the documented JSON shape, serves result images at expiring URLs, and on demand
misbehaves (``script``). The HTTP plumbing (server thread, scripted faults, expiring links,
the trickling answer) is ``fake_upstream``'s.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from tests.support.fake_upstream import (
    Answer,
    Request,
    ServedFake,
    json_answer,
    next_behaviour,
    scripted_fault,
)

V3_GENERATE = "/v1/ideogram-v3/generate"
V3_INPAINT = "/v1/ideogram-v3/inpaint"
V4_GENERATE = "/v1/ideogram-v4/generate"
LEGACY_GENERATE = "/generate"
LEGACY_EDIT = "/edit"
ROUTES = (V3_GENERATE, V3_INPAINT, V4_GENERATE, LEGACY_GENERATE, LEGACY_EDIT)

MAX_SEED = 2147483647
MAX_FILE_BYTES = 10 * 1024 * 1024
"""Each image or mask, and all style (or all character) references together."""
IMAGE_FORMATS = {"JPEG", "PNG", "WEBP"}


def _words(text: str) -> set[str]:
    """An enum written as the reference lists it, separated by white space."""
    return set(text.split())


# -- Ideogram 3.0 (RenderingSpeed, MagicPromptOption, StyleTypeV3, StylePresetV3, ...) ------
SPEEDS = {"FLASH", "TURBO", "DEFAULT", "QUALITY"}
MAGIC = {"AUTO", "ON", "OFF"}
STYLES = {"AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION"}
CHARACTER_STYLES = {"AUTO", "REALISTIC", "FICTION"}
STYLE_PRESETS = _words(
    """80S_ILLUSTRATION 90S_NOSTALGIA ABSTRACT_ORGANIC ANALOG_NOSTALGIA ART_BRUT ART_DECO
    ART_POSTER AURA AVANT_GARDE BAUHAUS BLUEPRINT BLURRY_MOTION BRIGHT_ART C4D_CARTOON
    CHILDRENS_BOOK COLLAGE COLORING_BOOK_I COLORING_BOOK_II CUBISM DARK_AURA DOODLE
    DOUBLE_EXPOSURE DRAMATIC_CINEMA EDITORIAL EMOTIONAL_MINIMAL ETHEREAL_PARTY EXPIRED_FILM
    FLAT_ART FLAT_VECTOR FOREST_REVERIE GEO_MINIMALIST GLASS_PRISM GOLDEN_HOUR GRAFFITI_I
    GRAFFITI_II HALFTONE_PRINT HIGH_CONTRAST HIPPIE_ERA ICONIC JAPANDI_FUSION JAZZY
    LONG_EXPOSURE MAGAZINE_EDITORIAL MINIMAL_ILLUSTRATION MIXED_MEDIA MONOCHROME NIGHTLIFE
    OIL_PAINTING OLD_CARTOONS PAINT_GESTURE POP_ART RETRO_ETCHING RIVIERA_POP SPOTLIGHT_80S
    STYLIZED_RED SURREAL_COLLAGE TRAVEL_POSTER VINTAGE_GEO VINTAGE_POSTER WATERCOLOR WEIRD
    WOODBLOCK_PRINT"""
)
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
"""Ideogram 3.0's aspect ratios (``AspectRatioV3``, written with x) and the size of each."""
SIZES = _words(
    """512x1536 576x1408 576x1472 576x1536 640x1344 640x1408 640x1472 640x1536 704x1152
    704x1216 704x1280 704x1344 704x1408 704x1472 736x1312 768x1088 768x1216 768x1280 768x1344
    800x1280 832x960 832x1024 832x1088 832x1152 832x1216 832x1248 864x1152 896x960 896x1024
    896x1088 896x1120 896x1152 960x832 960x896 960x1024 960x1088 1024x832 1024x896 1024x960
    1024x1024 1088x768 1088x832 1088x896 1088x960 1120x896 1152x704 1152x832 1152x864
    1152x896 1216x704 1216x768 1216x832 1248x832 1280x704 1280x768 1280x800 1312x736
    1344x640 1344x704 1344x768 1408x576 1408x640 1408x704 1472x576 1472x640 1472x704
    1536x512 1536x576 1536x640"""
)
"""Ideogram 3.0's ``resolution`` values (``ResolutionV3``)."""

# -- Ideogram 4.0 (generate-v4) --------------------------------------------------------------
V4_SPEEDS = {"TURBO", "DEFAULT", "QUALITY"}
"""FLASH is "coming soon" on 4.0: requests with it answer 400."""
V4_SIZES = _words(
    """2048x2048 1440x2880 2880x1440 1664x2496 2496x1664 1792x2240 2240x1792 1440x2560
    2560x1440 1600x2560 2560x1600 1728x2304 2304x1728 1296x3168 3168x1296 1152x2944 2944x1152
    1248x3328 3328x1248 1280x3072 3072x1280"""
)
"""Ideogram 4.0's 2K ``resolution`` values; omitted, the model picks (the fake: 2048x2048)."""

# -- The legacy API (ImageRequest, ModelEnum, AspectRatio, Resolution, StyleType) ------------
LEGACY_MODELS = {"V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO", "AUTO"}
LEGACY_EDIT_MODELS = {"V_2", "V_2_TURBO"}
"""``ModelEnum``: "/edit is only supported for V_2 and V_2_TURBO"."""
LEGACY_NEGATIVE_MODELS = {"V_1", "V_1_TURBO", "V_2", "V_2_TURBO"}
"""``ImageRequest.negative_prompt``: "Only available for model versions V_1, V_1_TURBO, V_2
and V_2_TURBO"."""
LEGACY_STYLES = {"AUTO", "GENERAL", "FICTION", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME"}
LEGACY_ASPECTS = {
    "ASPECT_" + ratio.replace("x", "_"): size
    for ratio, size in RESOLUTIONS.items()
    if ratio not in ("4x5", "5x4", "1x2", "2x1")
}
"""The legacy ``aspect_ratio`` values (11: no 4:5, 5:4, 1:2 or 2:1) and their sizes."""
LEGACY_SIZES = {
    "RESOLUTION_" + size
    for size in _words(
        """512_1536 576_1408 576_1472 576_1536 640_1024 640_1344 640_1408 640_1472
    640_1536 704_1152 704_1216 704_1280 704_1344 704_1408 704_1472 720_1280 736_1312 768_1024
    768_1088 768_1152 768_1216 768_1232 768_1280 768_1344 832_960 832_1024 832_1088 832_1152
    832_1216 832_1248 864_1152 896_960 896_1024 896_1088 896_1120 896_1152 960_832 960_896
    960_1024 960_1088 1024_640 1024_768 1024_832 1024_896 1024_960 1024_1024 1088_768 1088_832
    1088_896 1088_960 1120_896 1152_704 1152_768 1152_832 1152_864 1152_896 1216_704 1216_768
    1216_832 1232_768 1248_832 1280_704 1280_720 1280_768 1280_800 1312_736 1344_640 1344_704
    1344_768 1408_576 1408_640 1408_704 1472_576 1472_640 1472_704 1536_512 1536_576
    1536_640"""
    )
}
"""The legacy ``resolution`` values (``Resolution``): not Ideogram 3.0's list (no 800x1280,
but 1280x720 and others)."""


@dataclass(frozen=True)
class Form:
    """What one multipart route takes: its text fields, its file fields, the required ones."""

    texts: frozenset[str]
    files: frozenset[str]
    required: frozenset[str]


def _form(texts: str, files: str, required: str) -> Form:
    return Form(frozenset(texts.split()), frozenset(files.split()), frozenset(required.split()))


FORMS = {
    V3_GENERATE: _form(
        "prompt seed resolution aspect_ratio rendering_speed magic_prompt negative_prompt "
        "num_images color_palette style_codes style_type style_preset custom_model_uri",
        "style_reference_images character_reference_images character_reference_images_mask",
        "prompt",
    ),
    V3_INPAINT: _form(
        "prompt magic_prompt num_images seed rendering_speed style_type style_preset "
        "color_palette style_codes",
        "image mask style_reference_images character_reference_images "
        "character_reference_images_mask",
        "image mask prompt",
    ),
    V4_GENERATE: _form(
        "text_prompt json_prompt resolution rendering_speed enable_copyright_detection", "", ""
    ),
    LEGACY_EDIT: _form(
        "prompt model magic_prompt_option num_images seed style_type",
        "image_file mask",
        "image_file mask prompt model",
    ),
}
IMAGE_REQUEST_FIELDS = {
    "prompt",
    "aspect_ratio",
    "model",
    "magic_prompt_option",
    "seed",
    "style_type",
    "negative_prompt",
    "num_images",
    "resolution",
    "color_palette",
}
"""The legacy ``ImageRequest`` (the body is ``{"image_request": ImageRequest}``)."""


class Rejected(Exception):
    """A request the real API would answer 400."""


@dataclass
class Call:
    """One authenticated request to a known route, as received."""

    path: str
    fields: dict[str, Any]
    """The multipart text fields, or the legacy JSON ``image_request`` object."""
    files: dict[str, list[bytes]]
    at: float
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-cased header names."""
    file_types: dict[str, list[str]] = field(default_factory=dict)
    """The content type of each file part, in order."""
    json: Any = None
    """The whole JSON body (legacy generate), else None."""
    rejected: str | None = None
    """The 400 message when the fake refused the request as invalid."""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


@dataclass
class FakeIdeogram(ServedFake):
    api_key: str = "ideo-test-key"
    url_ttl: float = 60.0
    calls: list[Call] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)
    """Queued behaviours for the next valid calls, on any route: 'ok', '429:<s>' (Retry-After),
    any 5xx status ('500', '502', '503'...), '400', 'unsafe', 'half-unsafe', 'slow:<s>',
    '422-safety', 'trickle:<s>' (200, then one header byte every 0.25 s for <s> seconds: never
    a read timeout)."""

    def __post_init__(self) -> None:
        self.serve(self.handle)

    def settings(self) -> dict[str, Any]:
        """Castframe settings that point the ideogram engine here, with fast retries."""
        return {
            "ideogram_api_key": self.api_key,
            "ideogram_base_url": self.base_url,
            "ideogram_retry_base": 0.1,
            "ideogram_timeout": 3.0,
        }

    # -- the API ---------------------------------------------------------------------------
    def handle(self, request: Request) -> Answer:
        if request.method == "GET":  # a result link (any path: its last part is the token)
            return self._results.answer(
                request.target.split("?")[0].rsplit("/", 1)[-1].removesuffix(".png"),
                missing=json_answer(404, {"message": "not found"}),
                expired=json_answer(403, {"message": "link expired"}),
            )
        if request.headers.get("api-key") != self.api_key:
            return json_answer(401, {"message": "Invalid or missing Api-Key header"})
        path = request.target.split("?")[0]
        if path not in ROUTES:
            return json_answer(404, {"message": "Not Found"})
        call = Call(path, {}, {}, time.time(), headers=request.headers)
        with self._lock:
            self.calls.append(call)
        try:
            read_body(call, request.body)
            validate(call)
        except Rejected as exc:
            call.rejected = str(exc)
            return json_answer(400, {"message": str(exc)})
        behaviour = next_behaviour(self.script)
        fault = scripted_fault(
            behaviour, busy={"message": "Too many requests"}, broken={"message": "Internal error"}
        )
        if fault:
            return fault
        if behaviour == "400":
            return json_answer(400, {"message": "Prompt is too long for this model"})
        if behaviour == "422-safety":
            return json_answer(422, {"error": "Prompt failed the safety check"})
        if behaviour.startswith("trickle"):
            return Answer(200, trickle_for=float(behaviour.split(":")[1]))
        if behaviour.startswith("slow"):
            time.sleep(float(behaviour.split(":")[1]))
        return json_answer(200, self._result(call, behaviour))

    def _result(self, call: Call, behaviour: str) -> dict[str, Any]:
        values = call.fields
        count = 1 if call.path == V4_GENERATE else int(values.get("num_images", 1))
        seed = int(values.get("seed", secrets.randbelow(MAX_SEED)))
        width, height = output_size(call)
        prompt = str(values.get("prompt") or values.get("text_prompt"))
        magic = values.get("magic_prompt", values.get("magic_prompt_option", "AUTO"))
        if call.path == V4_GENERATE or magic != "OFF":  # 4.0's text prompts always use it
            prompt = f"{prompt}, rewritten by magic prompt with cinematic light"
        data = []
        for index in range(count):
            unsafe = behaviour == "unsafe" or (behaviour == "half-unsafe" and index % 2 == 1)
            item: dict[str, Any] = {
                "prompt": prompt,
                "resolution": f"{width}x{height}",
                "is_image_safe": not unsafe,
                "seed": min(seed + index, MAX_SEED),
            }
            if call.path != V4_GENERATE:
                item["style_type"] = values.get("style_type", "GENERAL")  # the default
            if unsafe:
                item["url"] = None
            else:
                token = self._results.put(
                    picture(width, height, seed + index), "image/png", self.url_ttl
                )
                expires = int(time.time() + self.url_ttl)
                item["url"] = f"{self.base_url}/ephemeral/{token}.png?exp={expires}"
            data.append(item)
        return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": data}


def output_size(call: Call) -> tuple[int, int]:
    values = call.fields
    if call.path in (V3_INPAINT, LEGACY_EDIT):
        image = call.files["image" if call.path == V3_INPAINT else "image_file"][0]
        size: tuple[int, int] = Image.open(io.BytesIO(image)).size
        return size
    if call.path == V4_GENERATE:
        resolution = str(values.get("resolution", "2048x2048"))
    elif call.path == LEGACY_GENERATE:
        if "resolution" in values:
            resolution = str(values["resolution"]).removeprefix("RESOLUTION_").replace("_", "x")
        else:
            width, height = LEGACY_ASPECTS[str(values.get("aspect_ratio", "ASPECT_1_1"))]
            return width, height
    elif "resolution" in values:
        resolution = str(values["resolution"])
    else:
        return RESOLUTIONS[str(values.get("aspect_ratio", "1x1"))]
    width, height = (int(side) for side in resolution.split("x"))
    return width, height


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
) -> tuple[dict[str, str], dict[str, list[bytes]], dict[str, list[str]]]:
    """A multipart body -> its text fields, its file parts (a part with a filename) by name,
    and each file part's content type."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise Rejected("the body is not a valid multipart/form-data body")
    fields: dict[str, str] = {}
    files: dict[str, list[bytes]] = {}
    types: dict[str, list[str]] = {}
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition"))
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise Rejected(f"{name}: a part that is not a plain value")
        if part.get_filename():
            files.setdefault(name, []).append(payload)
            types.setdefault(name, []).append(part.get_content_type())
        elif name in fields:
            raise Rejected(f"{name} is given twice")
        else:
            fields[name] = payload.decode()
    return fields, files, types


def read_body(call: Call, body: bytes) -> None:
    """Fill ``call`` from the body in the route's body type, or refuse it."""
    content_type = call.headers.get("content-type", "")
    if call.path == LEGACY_GENERATE:
        if call.content_type != "application/json":
            raise Rejected("expected application/json with an image_request object")
        try:
            call.json = json.loads(body)
        except ValueError:
            raise Rejected("the body is not valid JSON") from None
        if not isinstance(call.json, dict) or set(call.json) != {"image_request"}:
            raise Rejected("the body must be exactly {'image_request': {...}}")
        if not isinstance(call.json["image_request"], dict):
            raise Rejected("image_request must be an object")
        call.fields = dict(call.json["image_request"])
        return
    if call.content_type != "multipart/form-data":
        raise Rejected("expected multipart/form-data")
    call.fields, call.files, call.file_types = parse_multipart(content_type, body)


def validate(call: Call) -> None:
    if call.path == LEGACY_GENERATE:
        _legacy_generate(call.fields)
        return
    form = FORMS[call.path]
    fields, files = call.fields, call.files
    for name in fields:
        if name in form.files:
            raise Rejected(f"{name} must be sent as a file")
        if name not in form.texts:
            raise Rejected(f"Unknown field: {name}")
    for name in files:
        if name in form.texts:
            raise Rejected(f"{name} must be a form field, not a file")
        if name not in form.files:
            raise Rejected(f"Unknown field: {name}")
    for name in sorted(form.required):
        if not (fields.get(name) or files.get(name)):
            raise Rejected(f"{name} is required")
    for name, parts in files.items():
        for part in parts:
            _image(name, part)
    if call.path == V4_GENERATE:
        _v4(fields)
    elif call.path == LEGACY_EDIT:
        _legacy_edit(fields, files)
    else:
        _v3(call.path, fields, files)


def _image(name: str, data: bytes) -> tuple[int, int]:
    if len(data) > MAX_FILE_BYTES:
        raise Rejected(f"{name} is over 10MB")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError):
        raise Rejected(f"{name} is not a readable image") from None
    if image.format not in IMAGE_FORMATS:
        raise Rejected(f"{name}: only JPEG, WebP and PNG formats are supported")
    size: tuple[int, int] = image.size
    return size


def _integer(values: Mapping[str, Any], name: str, low: int, high: int, *, text: bool) -> None:
    if name not in values:
        return
    value = values[name]
    if text:
        if not re.fullmatch(r"-?\d+", str(value)):
            raise Rejected(f"{name} must be an integer")
        value = int(value)
    elif not isinstance(value, int) or isinstance(value, bool):
        raise Rejected(f"{name} must be an integer")
    if not low <= value <= high:
        raise Rejected(f"{name} must be between {low} and {high}")


def _choice(values: Mapping[str, Any], name: str, choices: set[str]) -> None:
    if name in values and values[name] not in choices:
        raise Rejected(f"{name} must be one of {sorted(choices)}; got {values[name]!r}")


def _same_size(files: Mapping[str, list[bytes]], image_name: str) -> None:
    if len(files[image_name]) != 1 or len(files["mask"]) != 1:
        raise Rejected("exactly one image and one mask")
    image = Image.open(io.BytesIO(files[image_name][0]))
    mask = Image.open(io.BytesIO(files["mask"][0]))
    if image.size != mask.size:
        raise Rejected("mask must have the same size as image")


def _v3(path: str, fields: dict[str, str], files: dict[str, list[bytes]]) -> None:
    _choice(fields, "rendering_speed", SPEEDS)
    _choice(fields, "magic_prompt", MAGIC)
    _choice(fields, "style_type", STYLES)
    _choice(fields, "style_preset", STYLE_PRESETS)
    _integer(fields, "num_images", 1, 8, text=True)
    _integer(fields, "seed", 0, MAX_SEED, text=True)
    refs = files.get("character_reference_images", [])
    ref_masks = files.get("character_reference_images_mask", [])
    styles = files.get("style_reference_images", [])
    if len(refs) > 1:
        raise Rejected("only one character reference image is supported")
    if ref_masks and len(ref_masks) != len(refs):
        raise Rejected("character_reference_images_mask must match character_reference_images")
    if sum(len(ref) for ref in refs) > MAX_FILE_BYTES:
        raise Rejected("character references are over 10MB in total")
    if sum(len(style) for style in styles) > MAX_FILE_BYTES:
        raise Rejected("style references are over 10MB in total")
    if "style_codes" in fields and (styles or "style_type" in fields):
        raise Rejected("style_codes cannot be used with style_reference_images or style_type")
    if refs:
        # GENERAL (the default) and DESIGN are not taken with a character reference.
        if fields.get("style_type", "GENERAL") not in CHARACTER_STYLES:
            raise Rejected(
                "style_type must be AUTO, REALISTIC or FICTION with character references"
            )
        if fields.get("rendering_speed") == "FLASH":
            raise Rejected("FLASH is not supported with character references")
        for name in ("style_preset", "style_codes", "color_palette"):
            if name in fields:
                raise Rejected(f"{name} cannot be used with character references")
        if styles:
            raise Rejected("style_reference_images cannot be used with character references")
    if path == V3_INPAINT:
        _same_size(files, "image")
        return
    if "resolution" in fields and "aspect_ratio" in fields:
        raise Rejected("resolution and aspect_ratio cannot be used together")
    _choice(fields, "resolution", SIZES)
    _choice(fields, "aspect_ratio", set(RESOLUTIONS))


def _v4(fields: dict[str, str]) -> None:
    if ("text_prompt" in fields) == ("json_prompt" in fields):
        raise Rejected("supply exactly one of text_prompt or json_prompt")
    if "text_prompt" in fields and not fields["text_prompt"]:
        raise Rejected("text_prompt is empty")
    if fields.get("rendering_speed") == "FLASH":
        raise Rejected("rendering_speed=FLASH is coming soon for Ideogram 4.0")
    _choice(fields, "rendering_speed", V4_SPEEDS)
    _choice(fields, "resolution", V4_SIZES)
    _choice(fields, "enable_copyright_detection", {"true", "false"})


def _legacy_edit(fields: dict[str, str], files: dict[str, list[bytes]]) -> None:
    if fields["model"] not in LEGACY_EDIT_MODELS:
        raise Rejected("/edit is only supported for V_2 and V_2_TURBO")
    _choice(fields, "magic_prompt_option", MAGIC)
    _choice(fields, "style_type", LEGACY_STYLES)
    _integer(fields, "num_images", 1, 8, text=True)
    _integer(fields, "seed", 0, MAX_SEED, text=True)
    _same_size(files, "image_file")


def _legacy_generate(request: dict[str, Any]) -> None:
    unknown = set(request) - IMAGE_REQUEST_FIELDS
    if unknown:
        raise Rejected(f"Unknown fields in image_request: {sorted(unknown)}")
    if not isinstance(request.get("prompt"), str) or not request["prompt"]:
        raise Rejected("image_request.prompt is required")
    model = request.get("model", "V_2")
    _choice(request, "model", LEGACY_MODELS)
    _choice(request, "aspect_ratio", set(LEGACY_ASPECTS))
    _choice(request, "resolution", LEGACY_SIZES)
    _choice(request, "magic_prompt_option", MAGIC)
    _choice(request, "style_type", LEGACY_STYLES)
    _integer(request, "num_images", 1, 8, text=False)
    _integer(request, "seed", 0, MAX_SEED, text=False)
    if "aspect_ratio" in request and "resolution" in request:
        raise Rejected("resolution cannot be used in conjunction with aspect_ratio")
    if "negative_prompt" in request:
        if not isinstance(request["negative_prompt"], str):
            raise Rejected("negative_prompt must be a string")
        if model not in LEGACY_NEGATIVE_MODELS:
            raise Rejected(f"negative_prompt is not available for model {model}")
