"""``flux-fill-pro`` on ``POST /v2/images/edit``: FLUX.1 Fill [pro], inpainting and outpainting.

Apiframe's ``ImageEditRequest`` has no top-level ``prompt``: the prompt is in
``fluxFillParams`` with the image, and ``mode`` says what to do:

- ``inpaint``: ``image`` + ``mask`` (same size; white = repaint, black = keep: BFL's and
  Replicate's convention, the opposite of Ideogram's);
- ``outpaint``: ``image`` + one of the seven ``outpaint`` choices; the new canvas and its
  mask are computed when the job runs (engines/fill_canvas.py), so the output is larger than
  the image.

Priced flat per image, as BFL prices FLUX.1 Fill [pro] ($0.05: 5 credits).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from castframe.catalog.base import MAX_SEED, ImageField, ModelSpec
from castframe.catalog.envelope import Prompt, WebhookEvents, WebhookUrl
from castframe.catalog.flux_params import OUTPUT_FORMATS

MODEL_ID = "flux-fill-pro"
OUTPAINT_CHOICES = (
    "Zoom out 1.5x",
    "Zoom out 2x",
    "Make square",
    "Left outpaint",
    "Right outpaint",
    "Top outpaint",
    "Bottom outpaint",
)
Source = Annotated[str, Field(min_length=1, max_length=30 * 1024 * 1024)]


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class FluxFillParams(BaseModel):
    """``fluxFillParams``: Apiframe's 11 fields, its types and ranges."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    mode: Literal["inpaint", "outpaint"]
    image: Source = Field(
        description="The image: an http(s) URL, a data:image/...;base64 URI, or upload://id."
    )
    mask: Source | None = Field(
        default=None, description="inpaint: same size as image, white = repaint, black = keep."
    )
    outpaint: Literal[OUTPAINT_CHOICES] | None = Field(  # type: ignore[valid-type]
        default=None, description="outpaint: how to extend the canvas."
    )
    guidance: Annotated[float, Field(ge=2, le=5)] | None = Field(
        default=None, description="Prompt adherence, 2 to 5."
    )
    steps: Annotated[StrictInt, Field(ge=1, le=50)] | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] | None = None
    prompt_upsampling: StrictBool | None = None
    safety_tolerance: Annotated[StrictInt, Field(ge=1, le=6)] | None = Field(
        default=None, description="1 (strictest) to 6 (most permissive); BFL's default is 2."
    )
    output_format: Annotated[Literal["jpg", "png"], BeforeValidator(_lower)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _number(cls, data: Any) -> Any:
        if isinstance(data, dict):
            value = data.get("guidance")
            if isinstance(value, bool) or (
                value is not None and not isinstance(value, int | float)
            ):
                raise ValueError("guidance must be a number")
        return data

    @model_validator(mode="after")
    def _mode(self) -> FluxFillParams:
        if self.mode == "inpaint":
            if self.mask is None:
                raise ValueError("mode inpaint needs a mask")
            if self.outpaint is not None:
                raise ValueError("outpaint applies to mode outpaint only")
        else:
            if self.outpaint is None:
                raise ValueError(
                    f"mode outpaint needs outpaint: one of {', '.join(OUTPAINT_CHOICES)}"
                )
            if self.mask is not None:
                raise ValueError("mode outpaint computes its own mask: omit mask")
        return self


class FluxFillRequest(BaseModel):
    """The ``flux-fill-pro`` variant of Apiframe's ``ImageEditRequest``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: Literal["flux-fill-pro"]
    fluxFillParams: FluxFillParams
    webhookUrl: WebhookUrl | None = None
    webhookEvents: WebhookEvents | None = None

    @property
    def prompt(self) -> str:
        """The job's prompt (it lives in the params block in this variant)."""
        return self.fluxFillParams.prompt


def _normalise(request: BaseModel) -> dict[str, Any]:
    assert isinstance(request, FluxFillRequest)
    params = request.fluxFillParams
    return {
        "prompt": params.prompt,
        "negative_prompt": None,
        "seed": params.seed,
        "num_images": 1,
        # An edit keeps its image's size (an outpaint grows it): both are known when the
        # job runs; these are placeholders for the job row.
        "width": 1024,
        "height": 1024,
        "output_format": OUTPUT_FORMATS[params.output_format or "jpg"],
        "image": params.image,
        "mask": params.mask,
        "mode": params.mode,
        "outpaint": params.outpaint,
        "mask_paints": "white",
        "guidance": params.guidance,
        "steps": params.steps,
        "prompt_upsampling": params.prompt_upsampling,
        "safety_tolerance": params.safety_tolerance,
    }


FLUX_FILL_PRO = ModelSpec(
    id=MODEL_ID,
    label="FLUX.1 Fill [pro]",
    description="Inpaint a masked region or outpaint beyond the image's borders (zoom out, "
    "make square, extend one side), with FLUX.1 Fill [pro].",
    family="flux",
    params_key="fluxFillParams",
    request_model=FluxFillRequest,
    normalise=_normalise,
    prices={"standard": 5},
    image_fields=(ImageField("image", "image", required=True), ImageField("mask", "mask")),
    operation="edit",
    max_outputs=1,
    upstream="bfl",
    example={
        "model": MODEL_ID,
        "fluxFillParams": {
            "mode": "outpaint",
            "outpaint": "Zoom out 1.5x",
            "prompt": "a wide mountain valley",
            "image": "https://example.com/photo.jpg",
        },
    },
)
