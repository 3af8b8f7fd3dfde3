"""Decode untrusted image bytes into arrays, refusing anything that is not a sane image.

Pure functions: bytes in, numpy arrays out. Checks, in order: byte size, format sniffed from
the content (never the file name or a header), pixel count before decoding (decompression
bombs), then a full decode so truncated files fail here rather than inside an engine.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps

ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
DATA_URI = re.compile(
    r"^data:(image/[a-zA-Z0-9.+-]+)?(;[a-zA-Z0-9=.-]+)*;base64,(.*)$", re.S | re.IGNORECASE
)
"""RFC 2397 data URIs; the scheme and parameters are case-insensitive (``DATA:`` too)."""


class ImageRejected(ValueError):
    """The bytes are not an acceptable image; ``code`` is ``invalid_image`` or
    ``image_too_large`` (both documented API codes)."""

    def __init__(self, message: str, code: str = "invalid_image") -> None:
        super().__init__(message)
        self.code = code


def image_error_code(rejected: ImageRejected) -> str:
    """The API error code for a rejected image."""
    return "image_too_large" if rejected.code == "image_too_large" else "invalid_image"


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray
    """RGB uint8, shape (height, width, 3)."""
    content_type: str
    raw: bytes

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


DECODE_SLOTS = 4
"""Full decodes one process runs at once. A decode holds up to about 10 bytes per pixel
(Pillow's buffer, an RGBA step, the RGB array): at CASTFRAME_MAX_IMAGE_PIXELS (40 M) that is
~400 MB, so without a bound 40 request threads could hold 16 GB (docs/operations.md)."""
_DECODING = threading.BoundedSemaphore(DECODE_SLOTS)


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Validate and decode an image; raises ``ImageRejected`` with a human reason. At most
    DECODE_SLOTS decodes run at once in a process (the others wait their turn)."""
    with _DECODING:
        return _decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def downscale(image: DecodedImage, max_side: int) -> DecodedImage:
    """The image with its longer side at most ``max_side`` (area interpolation), or itself.
    For inputs whose engine works at a smaller size anyway (references, style images): a
    6000x6000 reference held 108 MB where 2048x2048 holds 12.6 MB. ``raw`` is kept as
    received (it is the picture's identity for the descriptor cache, and what an upstream
    engine is sent)."""
    height, width = image.pixels.shape[:2]
    if max(height, width) <= max_side:
        return image
    import cv2

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    pixels = cv2.resize(image.pixels, size, interpolation=cv2.INTER_AREA)
    return DecodedImage(np.ascontiguousarray(pixels, dtype=np.uint8), image.content_type, image.raw)


def _decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    if not data:
        raise ImageRejected("the image is empty")
    if len(data) > max_bytes:
        raise ImageRejected(
            f"the image is {len(data)} bytes; the limit is {max_bytes}", code="image_too_large"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            fmt = probe.format or ""
            if fmt not in ALLOWED_FORMATS:
                raise ImageRejected(f"format {fmt or 'unknown'} is not PNG, JPEG or WebP")
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageRejected(
                    f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels",
                    code="image_too_large",
                )
            if width < 16 or height < 16:
                raise ImageRejected(f"the image is {width}x{height}; at least 16x16 is needed")
            probe.load()
            rgb = _to_rgb(probe)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(
            f"the image is too large to decode safely ({exc})", code="image_too_large"
        ) from exc
    except Exception as exc:  # Pillow raises many types for corrupt data
        # The library's exception names say nothing to a client; the log has the traceback.
        raise ImageRejected(
            "the file is not a PNG, JPEG or WebP image that can be read (is it an image, and "
            "complete?)"
        ) from exc
    return DecodedImage(np.asarray(rgb, dtype=np.uint8), ALLOWED_FORMATS[fmt], data)


def tool_input_problem(data: bytes) -> str | None:
    """Why an image cannot be an image tool's input (background removal, upscaling), or None.

    An animated image would lose every frame but the first, and an image with an alpha
    channel would have its transparency flattened on white before the tool saw it: both are
    refused rather than silently changed. ``data`` has already passed ``decode_image``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                return "the image is animated; send a single still frame"
            if "A" in image.getbands() or image.has_transparency_data:
                return (
                    "the image has an alpha channel (transparency); send an opaque PNG, JPEG or "
                    "WebP"
                )
    except Exception:  # decode_image accepted it; Pillow raises many types
        return "the image could not be read"
    return None


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Pillow's modes for 16-bit greyscale (PNG); ``I`` holds the same 0..65535 values."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """The image upright and as 8-bit RGB, whatever its mode:

    - EXIF orientation applied (a phone's portrait JPEG is stored sideways with a tag);
    - 16-bit greyscale scaled from 0..65535 to 0..255 (Pillow's own conversion clips it,
      turning every mid-grey white), any transparency of it dropped;
    - every image with transparency (RGBA, LA, PA, a palette or L/RGB image with a tRNS
      colour) composited on white, so a cut-out reference keeps its subject visible and all
      transparent pixels read the same; CMYK, palette, 1-bit and L converted by Pillow.
    """
    image = _upright(image)
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.uint32)
        scaled = (np.clip(wide, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (copied only when it must turn). A
    broken EXIF block is not a broken image: it is then used as stored (Pillow raises several
    types for bad EXIF data)."""
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) in (None, 1):
            return image
        return ImageOps.exif_transpose(image)
    except Exception:  # see the docstring
        return image


def parse_data_uri(uri: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URI; raises ``ImageRejected`` if malformed."""
    match = DATA_URI.match(uri)
    if not match:
        raise ImageRejected("a data URI must look like data:image/png;base64,<data>")
    try:
        return base64.b64decode(match.group(3), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ImageRejected("the data URI's base64 payload is malformed") from exc


OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    "png": ("image/png", "png"),
    "jpeg": ("image/jpeg", "jpg"),
    "webp": ("image/webp", "webp"),
}
"""Formats a job's outputs can be stored in (the ``output_format`` extension): content type
and file extension. PNG is the default and the only lossless one."""

PNG_LEVEL = 1
"""zlib level for output PNGs, with zlib's run-length strategy: chosen by measurement
(``benchmarks/encoding.py`` on 1024x1024 engine outputs and a photo, docs/performance.md).
OpenCV's encoder at level 1 with Z_RLE was the fastest candidate on every picture, about 5-8x
faster than Pillow's old default (level 6, no strategy), for files between 2% smaller and 5%
larger than Pillow's level 6; levels 2-3 cost more time for 1-3% less. OpenCV releases the
GIL while it encodes, so encoding overlaps the other threads."""
PNG_STRATEGY_RLE = 3
"""``cv2.IMWRITE_PNG_STRATEGY_RLE`` (zlib's Z_RLE), named here so cv2 loads only when used."""
JPEG_QUALITY = 90
WEBP_QUALITY = 90
WEBP_METHOD = 2
"""libwebp's effort (0-6): 2 gave files within 6% of 4's in about half the time."""


def encode_png(pixels: np.ndarray) -> bytes:
    """Deterministic PNG bytes for an RGB (or RGBA) array (same pixels, same bytes: zlib is
    deterministic for a given level, and no timestamp or other chunk varies)."""
    import cv2

    # RGBA (a background removal's cut-out) keeps its alpha channel.
    conversion = (
        cv2.COLOR_RGBA2BGRA if pixels.ndim == 3 and pixels.shape[2] == 4 else cv2.COLOR_RGB2BGR
    )
    bgr = cv2.cvtColor(np.ascontiguousarray(pixels, dtype=np.uint8), conversion)
    params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL, cv2.IMWRITE_PNG_STRATEGY, PNG_STRATEGY_RLE]
    ok, encoded = cv2.imencode(".png", bgr, params)
    if not ok:  # pragma: no cover - OpenCV fails only on arrays it cannot represent
        raise ValueError(f"PNG encoding failed for an array of shape {pixels.shape}")
    return bytes(encoded)


def encode_image(pixels: np.ndarray, output_format: str = "png") -> bytes:
    """An output image in ``output_format`` (a key of OUTPUT_FORMATS), deterministically:
    the same pixels give the same bytes. JPEG and WebP are lossy (quality 90), without EXIF
    or other metadata."""
    if output_format == "png":
        return encode_png(pixels)
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}")
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if output_format == "jpeg":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return buffer.getvalue()


def to_gray_mask(image: DecodedImage, size: tuple[int, int]) -> np.ndarray:
    """A mask image as booleans, True where it is to be repainted (black), at ``size`` (w, h)."""
    gray = np.asarray(
        Image.fromarray(image.pixels).convert("L").resize(size, Image.Resampling.NEAREST)
    )
    return gray < 128
