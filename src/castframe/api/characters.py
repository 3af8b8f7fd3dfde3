"""Saved characters: ``POST/GET /v2/characters``, ``GET/DELETE /v2/characters/{id}``."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from castframe.api.account_limits import take_account_token
from castframe.api.deps import authenticate, get_services
from castframe.api.generate import read_json_body
from castframe.dispatch.character_faces import MIN_FACE_SIDE, check_single_face
from castframe.errors import ApiError, field_error, public_message
from castframe.faces import face_model
from castframe.jobs import character_deletion, characters, file_deletions
from castframe.jobs.accounts import Principal
from castframe.jobs.quota import check_quota
from castframe.jobs.uploads import insert_upload, plan_upload, stored_upload, usable_upload
from castframe.jobs.validation import invalid, source_error
from castframe.media.images import DecodedImage
from castframe.media.sources import SourceError, classify
from castframe.services import Services

router = APIRouter(tags=["characters"])
log = logging.getLogger("castframe.api")


class CharacterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    image: Annotated[
        str, Field(min_length=1, description="URL (an upload's url too), data URI or upload://id")
    ]


def load_image(services: Services, principal: Principal, source: str) -> DecodedImage:
    """The character image from any source, with the same rules as job inputs: an upload
    must still be usable (a deleted character's image is not)."""
    settings = services.settings
    try:
        found = classify(
            source, settings.signing_key, settings.allow_private_urls, settings.trusted_host_set
        )
        if found.kind == "upload":
            with services.db.read() as conn:
                if not usable_upload(conn, principal.owner, found.value):
                    raise SourceError("upload_not_found", f"image: no upload {found.value!r}")
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


def checked_face(image: DecodedImage, services: Services) -> characters.FaceCheck:
    """The one clear face, or a 400 that says why not. An image too thin to hold a face of
    MIN_FACE_SIDE pixels (an 8200x16 strip) is refused before any detector sees it, and a
    detector's own failure is a 400 without its library's text, never a 500."""
    if min(image.width, image.height) < MIN_FACE_SIDE:
        raise field_error(
            "face_too_small",
            "image",
            f"the image is {image.width}x{image.height}; a character image needs at least "
            f"{MIN_FACE_SIDE} pixels on each side to show a recognisable face",
        )
    model = face_model() if services.settings.faces_enabled else None
    try:
        return check_single_face(image, model)
    except ApiError:
        raise
    except Exception as exc:
        log.warning("face check failed: %s", exc)
        raise field_error(
            "invalid_image",
            "image",
            "faces could not be analysed in this image "
            f"({public_message(type(exc).__name__)}); use an ordinary photo",
        ) from exc


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
    # The account's token before the body is read (and the image fetched and decoded).
    take_account_token(request, principal, "character_limiter", "character creations")
    body, _ = await read_json_body(request, settings.max_body_bytes, settings.body_read_timeout)
    try:
        payload = CharacterRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc, "character") from exc

    def save() -> dict[str, Any]:
        image = load_image(services, principal, payload.image)
        check = checked_face(image, services)
        planned = plan_upload(principal.account_id, principal.mode, image)
        with services.db.read() as conn:
            check_quota(
                conn, principal.account_id, planned.row["size"], settings.upload_quota_bytes
            )
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
    summary="Delete a saved character: its image and face descriptor go as soon as no "
    "unfinished job needs them (finished jobs are kept)",
)
def delete_character(
    character_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> None:
    services = get_services(request)
    with services.db.write() as conn:
        deletion = character_deletion.delete_character(conn, principal.owner, character_id)
    if not deletion.found:
        raise ApiError("not_found", f"no character {character_id!r}")
    if deletion.upload_id:
        services.inputs.forget_upload(deletion.upload_id)
    done = character_deletion.delete_files_now(services.storage, deletion)
    if done:
        with services.db.write() as conn:
            file_deletions.forget(conn, done)
