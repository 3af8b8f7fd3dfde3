"""The fields every Apiframe request body shares, and the factory that puts a model's params
block inside them.

Apiframe's ``GenerateImageRequest`` is a ``oneOf`` whose variants differ only in the
``model`` constant and the params block (``required`` where the model needs it); the rest is
``prompt``, ``webhookUrl`` and ``webhookEvents``, checked once here.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, create_model

WEBHOOK_EVENTS = ("progress", "completed", "failed")


def _visible(prompt: str) -> str:
    """A prompt must say something: whitespace and invisible format characters (zero-width
    spaces, joiners, BOMs) alone are refused like an empty prompt."""
    if not any(
        not char.isspace() and unicodedata.category(char) not in ("Cf", "Cc", "Zs")
        for char in prompt
    ):
        raise ValueError("prompt must not be blank")
    return prompt


def _unique_events(events: list[str]) -> list[str]:
    """Each event once, in the order given (a repeated event would only be echoed back)."""
    return list(dict.fromkeys(events))


Prompt = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_visible)]
WebhookUrl = Annotated[str, Field(max_length=2048)]
WebhookEvents = Annotated[
    list[Literal["progress", "completed", "failed"]],
    Field(min_length=1, max_length=len(WEBHOOK_EVENTS)),
    AfterValidator(_unique_events),
]
"""At most one of each event: the list is echoed in every job view, so it is bounded."""


class Envelope(BaseModel):
    """``prompt``, ``webhookUrl``, ``webhookEvents``: the part of every body that is not the
    model's own."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    prompt: Prompt
    webhookUrl: WebhookUrl | None = Field(
        default=None, validation_alias=AliasChoices("webhookUrl", "webhook_url")
    )
    webhookEvents: WebhookEvents | None = None


def request_model(
    model_id: str,
    params_key: str,
    params: type[BaseModel],
    *,
    params_required: bool = False,
    base: type[Envelope] = Envelope,
    extra_fields: dict[str, Any] | None = None,
) -> type[Envelope]:
    """The body of one Apiframe variant: ``model`` fixed to ``model_id``, the params block
    under ``params_key`` (an empty block when optional and absent)."""
    block: Any = (params, ...) if params_required else (params, Field(default_factory=params))
    fields: dict[str, Any] = {
        "model": (Literal[model_id], ...),
        params_key: block,
        **(extra_fields or {}),
    }
    name = "".join(part.capitalize() for part in model_id.replace(".", "_").split("-"))
    return create_model(f"{name}Request", __base__=base, **fields)
