"""Encoding outputs: fast, lossless PNG by default, JPEG and WebP on request, and always the
same bytes for the same pixels (the same request and seed give byte-identical files)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from castframe.engines.base import NullHooks
from castframe.engines.sandbox import SandboxEngine
from castframe.media.images import OUTPUT_FORMATS, decode_image, encode_image, encode_png
from tests.support.images import astronaut
from tests.support.requests import engine_request

LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 40_000_000}


def sandbox_output(seed: int) -> np.ndarray:
    request = engine_request(seed=seed, reference=astronaut(), aspect_ratio="1:1")
    return SandboxEngine().generate(request, NullHooks()).images[0].pixels


def test_png_is_lossless_and_decodes_as_png() -> None:
    pixels = sandbox_output(3)
    decoded = decode_image(encode_png(pixels), **LIMITS)
    assert decoded.content_type == "image/png"
    assert np.array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("output_format", sorted(OUTPUT_FORMATS))
def test_each_format_decodes_with_its_content_type(output_format: str) -> None:
    pixels = sandbox_output(4)
    data = encode_image(pixels, output_format)
    decoded = decode_image(data, **LIMITS)
    assert decoded.content_type == OUTPUT_FORMATS[output_format][0]
    assert decoded.pixels.shape == pixels.shape
    # Lossy formats stay close to the picture (quality 90), not merely the right size.
    error = np.abs(decoded.pixels.astype(int) - pixels.astype(int)).mean()
    assert error < (0.01 if output_format == "png" else 6.0), error


@pytest.mark.parametrize("output_format", sorted(OUTPUT_FORMATS))
def test_the_same_seed_gives_byte_identical_files(output_format: str) -> None:
    """Two engine runs of one request and seed, encoded separately (fresh engines, so no
    cache shares state): the files are the same bytes; another seed's are not."""
    first = encode_image(sandbox_output(11), output_format)
    again = encode_image(sandbox_output(11), output_format)
    other = encode_image(sandbox_output(12), output_format)
    assert first == again
    assert first != other


def test_png_carries_no_varying_metadata() -> None:
    """No time chunk or text: nothing in the file depends on when it was written."""
    image = Image.open(io.BytesIO(encode_png(sandbox_output(5))))
    assert image.info.get("tIME") is None and not getattr(image, "text", {})


def test_non_contiguous_and_unknown_inputs() -> None:
    pixels = sandbox_output(6)
    flipped = pixels[:, ::-1]  # a view with negative strides, as numpy slicing makes
    assert np.array_equal(decode_image(encode_png(flipped), **LIMITS).pixels, flipped)
    with pytest.raises(ValueError, match="unknown output format"):
        encode_image(pixels, "gif")
