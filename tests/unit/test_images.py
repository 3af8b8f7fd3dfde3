"""Decoding untrusted images: formats, sizes, bombs, truncation, transparency."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from castframe.media.images import ImageRejected, decode_image, parse_data_uri
from tests.support.images import astronaut, astronaut_png, data_uri, jpeg_bytes

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (astronaut_png(), "image/png"),
        (jpeg_bytes(astronaut()), "image/jpeg"),
        (encode(Image.fromarray(astronaut()), "WEBP"), "image/webp"),
    ],
)
def test_png_jpeg_webp_decode_to_rgb(raw: bytes, content_type: str) -> None:
    image = decode_image(raw, **LIMITS)
    assert image.content_type == content_type
    assert image.pixels.shape == (512, 512, 3) and image.pixels.dtype == np.uint8


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"hello world", "not a PNG, JPEG or WebP image that can be read"),
        (encode(Image.new("RGB", (64, 64)), "GIF"), "not PNG, JPEG or WebP"),
        (encode(Image.new("RGB", (64, 64)), "BMP"), "not PNG, JPEG or WebP"),
        (astronaut_png()[:3000], "not a PNG, JPEG or WebP image that can be read"),
        (encode(Image.new("RGB", (8, 8)), "PNG"), "at least 16x16"),
    ],
)
def test_bad_images_are_rejected_with_reasons(raw: bytes, fragment: str) -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(raw, **LIMITS)
    assert fragment in str(info.value)
    assert "Error" not in str(info.value)  # no library exception names (UnidentifiedImageError)


def test_byte_cap() -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(astronaut_png(), max_bytes=1000, max_pixels=10**8)
    assert info.value.code == "image_too_large"


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("L", (12000, 12000)), "PNG")  # ~140 kB, 144 megapixels
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageRejected) as info:
        decode_image(bomb, **LIMITS)
    assert "pixels" in str(info.value) or "too large" in str(info.value)


def test_transparent_png_is_flattened_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    image = decode_image(encode(rgba, "PNG"), **LIMITS)
    assert image.pixels[0, 0].tolist() == [255, 255, 255]


def test_data_uri_round_trip_and_errors() -> None:
    assert parse_data_uri(data_uri(b"abc")) == b"abc"
    for bad in ("data:text/plain,hello", "data:image/png;base64", "image/png;base64,AAA"):
        with pytest.raises(ImageRejected):
            parse_data_uri(bad)
