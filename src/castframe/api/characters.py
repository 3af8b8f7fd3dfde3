"""Saved characters: ``POST/GET /v2/characters``, ``GET/DELETE /v2/characters/{id}``."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from castframe.api.deps import authenticate, get_services
from castframe.api.generate import read_json_body
from castframe.dispatch.character_faces import check_single_face
from castframe.errors import ApiError
from castframe.faces import face_model
from castframe.jobs import characters
from castframe.jobs.accounts import Principal
from castframe.jobs.uploads import insert_upload, plan_upload, stored_upload
from castframe.jobs.validation import invalid, source_error
from castframe.media.images import DecodedImage
from castframe.media.sources import SourceError
from castframe.services import Services

router = APIRouter(tags=["characters"])


class CharacterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    image: Annotated[
        str, Field(min_length=1, description="URL (an upload's url too), data URI or upload://id")
    ]


def load_image(services: Services, principal: Principal, source: str) -> DecodedImage:
    """The character image from any source, with the same rules as job inputs."""
    try:
        return services.inputs.load(principal.owner, source, "image").image
    except SourceError as exc:
        raise source_error(exc, "image") from exc


BUSY_RETRY_AFTER = 5
"""Retry-After of ``characters_busy``."""


def character_slots(app: FastAPI, concurrency: int) -> anyio.CapacityLimiter:
    """The process's slots for saving characters (made on the event loop, on first use).

    A save fetches a URL (up to CASTFRAME_FETCH_DEADLINE), decodes and looks for a face: in
    the request thread pool, 45 saves of images on a host that trickles its headers held
    every thread, and /healthz and every other route waited. Saves run on threads of their
    own, at most ``concurrency`` at once; the requests waiting for one hold no thread."""
    slots: anyio.CapacityLimiter | None = getattr(app.state, "character_slots", None)
    if slots is None:
        slots = app.state.character_slots = anyio.CapacityLimiter(concurrency)
    return slots


@router.post(
    "/v2/characters",
    status_code=201,
    summary="Save a character (one clear face)",
    responses={503: {"description": "`characters_busy`: every save slot is taken, Retry-After"}},
)
async def create_character(
    request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    services = get_services(request)
    settings = services.settings
    body, _ = await read_json_body(request, settings.max_body_bytes, settings.body_read_timeout)
    try:
        payload = CharacterRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc, "character") from exc

    def save() -> dict[str, Any]:
        image = load_image(services, principal, payload.image)
        model = face_model() if services.settings.faces_enabled else None
        check = check_single_face(image, model)
        planned = plan_upload(principal.account_id, principal.mode, image)
        # A storage failure is a 507/503 (api/errors.py); the file goes if the rows fail.
        with stored_upload(services.storage, planned) as upload, services.db.write() as conn:
            insert_upload(conn, upload)
            return characters.insert_character(
                conn, principal.owner, payload.name, upload["id"], check
            )

    slots = character_slots(request.app, settings.character_concurrency)
    if slots.available_tokens < 1 and slots.statistics().tasks_waiting >= slots.total_tokens:
        raise ApiError(
            "characters_busy",
            f"this server is saving {int(slots.total_tokens)} characters and as many wait; "
            f"retry in {BUSY_RETRY_AFTER}s",
            headers={"Retry-After": str(BUSY_RETRY_AFTER)},
        )
    return characters.character_view(await anyio.to_thread.run_sync(save, limiter=slots))


@router.get("/v2/characters", summary="List saved characters")
def list_characters(
    request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    with get_services(request).db.read() as conn:
        rows = characters.list_characters(conn, principal.owner)
    return {"characters": [characters.character_view(row) for row in rows]}


@router.get("/v2/characters/{character_id}", summary="Get a saved character")
def get_character(
    character_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    with get_services(request).db.read() as conn:
        row = characters.get_character(conn, principal.owner, character_id)
    if row is None:
        raise ApiError("not_found", f"no character {character_id!r}")
    return characters.character_view(row)


@router.delete(
    "/v2/characters/{character_id}",
    status_code=204,
    summary="Delete a saved character (finished jobs are kept)",
)
def delete_character(
    character_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> None:
    with get_services(request).db.write() as conn:
        if not characters.delete_character(conn, principal.owner, character_id):
            raise ApiError("not_found", f"no character {character_id!r}")
