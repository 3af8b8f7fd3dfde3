"""The input image of a model whose output follows it (the image tools: ``ModelSpec.sized_by``),
read at submission: its size gives the job's output size (and so its price), the output pixel
limit is enforced, and inputs a tool cannot take (animated, with an alpha channel) are
refused, all before anything is queued or held.

An inline image was decoded by validation already; a URL is fetched here through the safe
fetcher (as Apiframe's upscale route probes its input to price it), and the worker fetches it
again to run the job; an upload's size comes from its row, inside the submission's
transaction (``apply_upload_size``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from castframe.catalog import ModelSpec
from castframe.errors import ApiError, field_error
from castframe.media.images import DecodedImage, tool_input_problem


def input_field(spec: ModelSpec) -> str:
    """The tool's input image field (``image``)."""
    found = spec.field_for("image")
    if found is None:  # pragma: no cover - every sized model declares one (tests check it)
        raise ValueError(f"{spec.id} has sized_by but no image field")
    return found.name


def check_input(spec: ModelSpec, image: DecodedImage) -> None:
    """400 ``invalid_image`` for an input the tool cannot take."""
    problem = tool_input_problem(image.raw)
    if problem:
        raise field_error("invalid_image", f"{spec.params_key}.{input_field(spec)}", problem)


def apply_size(
    spec: ModelSpec, params: dict[str, Any], width: int, height: int, max_pixels: int
) -> None:
    """The job's output size from its input's, or 400 ``image_too_large`` over the limit."""
    assert spec.sized_by is not None
    out_width, out_height = spec.sized_by(params, width, height)
    if out_width * out_height > max_pixels:
        raise field_error(
            "image_too_large",
            f"{spec.params_key}.{input_field(spec)}",
            f"the output would be {out_width}x{out_height} = {out_width * out_height:,} pixels; "
            f"the limit is {max_pixels:,} pixels ({max_pixels / 1e6:g} MP)",
        )
    params["width"], params["height"] = out_width, out_height


def probe(
    spec: ModelSpec,
    params: dict[str, Any],
    decoded: DecodedImage | None,
    fetch: Callable[[], DecodedImage] | None,
    max_pixels: int,
) -> None:
    """Size and check a sized job from its inline image (``decoded``) or by reading its URL
    (``fetch``); an upload (neither given) is sized in the transaction."""
    image = decoded if decoded is not None else (fetch() if fetch is not None else None)
    if image is None:
        return
    check_input(spec, image)
    apply_size(spec, params, image.width, image.height, max_pixels)


def apply_upload_size(
    spec: ModelSpec, params: dict[str, Any], row: dict[str, Any] | None, max_pixels: int
) -> None:
    """Size a sized job whose input is an upload, from the upload's row."""
    if spec.sized_by is None or row is None or params.get("width"):
        return
    apply_size(spec, params, int(row["width"]), int(row["height"]), max_pixels)


__all__ = ["ApiError", "apply_size", "apply_upload_size", "check_input", "probe"]
