"""Loading a job's (or a saved character's) images: media/sources.py's one resolver, with
uploads read from this server's storage and a cache of decoded uploads bounded in bytes
(castframe/bytecache.py; CASTFRAME_INPUT_CACHE_BYTES). ``for_job`` is the one way a job's
image fields (named by its catalog model) become an engine's inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from castframe.bytecache import ByteLRU, nbytes_of
from castframe.catalog import ModelSpec
from castframe.config import Settings
from castframe.engines.base import EngineInputs, InputImage
from castframe.errors import JobFailure
from castframe.jobs.record import Job
from castframe.jobs.uploads import Owner, get_upload
from castframe.media.images import DecodedImage, downscale, to_gray_mask
from castframe.media.sources import ImageReader, SourceError, classify
from castframe.media.storage import Storage, StorageError
from castframe.store.db import Database


@dataclass(frozen=True)
class Loaded:
    """A decoded image and, for an upload, its storage key (where a reference's descriptor
    sidecar is kept: dispatch/character_faces.py)."""

    image: DecodedImage
    storage_key: str | None = None


@dataclass(frozen=True)
class JobInputs:
    """A job's engine inputs, and its character reference as read (its bytes key the face
    descriptor cache; its upload holds the descriptor sidecar)."""

    engine: EngineInputs
    character: Loaded | None = None


def _input(loaded: Loaded) -> InputImage:
    return InputImage(loaded.image.pixels, loaded.image.raw)


def assemble(loaded: dict[str, list[Loaded]]) -> JobInputs:
    """Pure: decoded images by role -> the engine's inputs. A mask must match its image's
    size; it becomes a bool array, True where the engine may paint."""
    image = loaded.get("image", [None])[0]
    mask_image = loaded.get("mask", [None])[0]
    mask = None
    if image is not None and mask_image is not None:
        edit, given = image.image, mask_image.image
        if (given.width, given.height) != (edit.width, edit.height):
            raise JobFailure(
                "invalid_image",
                f"mask is {given.width}x{given.height} but image is "
                f"{edit.width}x{edit.height}; they must match",
            )
        mask = to_gray_mask(given, (edit.width, edit.height))
    character = loaded.get("character", [None])[0]
    return JobInputs(
        EngineInputs(
            character=_input(character) if character else None,
            image=_input(image) if image else None,
            mask=mask,
            style_references=tuple(_input(item) for item in loaded.get("style", [])),
            references=tuple(_input(item) for item in loaded.get("reference", [])),
        ),
        character,
    )


@dataclass
class InputLoader:
    """Loads image sources. Uploads are immutable, so decoded uploads are kept in an LRU
    bounded in bytes: repeated references (saved characters, SDK uploads) skip the read and
    the decode. An image loaded with ``max_side`` (references and style images, which no
    engine needs at full size) is downscaled before it is cached."""

    db: Database
    storage: Storage
    settings: Settings
    _reader: ImageReader = field(init=False)
    _cache: ByteLRU[str, Loaded] = field(init=False)

    def __post_init__(self) -> None:
        self._reader = ImageReader.from_settings(self.settings)
        self._cache = ByteLRU(
            self.settings.input_cache_bytes,
            lambda loaded: nbytes_of(loaded.image.pixels, loaded.image.raw),
        )

    def forget_upload(self, upload_id: str) -> None:
        """Drop an upload's decoded images (a deleted character's: unusable at once)."""
        self._cache.discard_where(lambda key: key.split(":", 3)[-1] == upload_id)

    def load(self, owner: Owner, source: str, what: str, max_side: int | None = None) -> Loaded:
        """The decoded image (with its upload's storage key when it is an upload; downscaled
        to ``max_side`` when given), or SourceError whose message names ``what``."""
        settings = self.settings
        try:
            found = classify(
                source, settings.signing_key, settings.allow_private_urls, settings.trusted_host_set
            )
        except SourceError as exc:
            raise SourceError(exc.code, f"{what}: {exc.message}") from exc
        cache_key = {
            "upload": f"{owner[0]}:{owner[1]}:{max_side or 0}:{found.value}",
            "signed": f"signed:{max_side or 0}:{found.value}",
        }.get(found.kind)
        if cache_key and (cached := self._cache.get(cache_key)) is not None:
            return cached
        keys: list[str] = []

        def upload_bytes(upload_id: str) -> bytes:
            data, key = self._upload(owner, upload_id)
            keys.append(key)
            return data

        try:
            image = self._reader.read(found, upload_bytes, self._stored)
        except SourceError as exc:
            raise SourceError(exc.code, f"{what}: {exc.message}") from exc
        if max_side:
            image = downscale(image, max_side)
        stored_key = found.value if found.kind == "signed" else None
        loaded = Loaded(image, keys[0] if keys else stored_key)
        if cache_key:
            self._cache.put(cache_key, loaded)
        return loaded

    def for_job(self, job: Job, spec: ModelSpec, reference_side: int | None = None) -> JobInputs:
        """Every input image of a job, by the role its model gives each image field: the one
        way a job's params become an engine's named inputs. A failure is the job's
        ``JobFailure`` (an image over the limits is ``invalid_image`` there: the job error
        table has no size code of its own). References (character, style, content) are
        downscaled to ``reference_side``: no engine needs them at full size; an image to edit
        and its mask keep theirs."""
        owner: Owner = (job.account_id, job.mode)
        loaded: dict[str, list[Loaded]] = {}
        for image_field in spec.image_fields:
            source = job.params.get(image_field.name)
            if not source:
                continue
            sources = source if isinstance(source, list) else [source]
            loaded[image_field.role] = [
                self._for_job(
                    owner,
                    item,
                    f"{image_field.name}[{index}]" if image_field.many else image_field.name,
                    None if image_field.role in ("image", "mask") else reference_side,
                )
                for index, item in enumerate(sources)
            ]
        return assemble(loaded)

    def _for_job(self, owner: Owner, source: str, what: str, max_side: int | None) -> Loaded:
        try:
            return self.load(owner, source, what, max_side)
        except SourceError as exc:
            code = "invalid_image" if exc.code == "image_too_large" else exc.code
            raise JobFailure(code, exc.message) from exc

    def _stored(self, key: str) -> bytes:
        """The file behind one of this server's signed upload URLs (a public URL: whoever
        holds it may use it, as with Apiframe's)."""
        try:
            return self.storage.get(key)
        except StorageError:
            raise
        except Exception as exc:
            raise SourceError("upload_not_found", "the file of this upload URL is gone") from exc

    def _upload(self, owner: Owner, upload_id: str) -> tuple[bytes, str]:
        with self.db.read() as conn:
            row = get_upload(conn, owner, upload_id)
        if row is None:
            raise SourceError("upload_not_found", f"upload {upload_id} is gone")
        try:
            return self.storage.get(row["storage_key"]), row["storage_key"]
        except StorageError:  # the backend failed: a 503 or a retried job, not a 400
            raise
        except Exception as exc:  # missing file or object: storage not shared?
            raise SourceError(
                "upload_not_found",
                f"the stored file of {upload_id} cannot be read ({type(exc).__name__}); is "
                "storage shared between API and worker machines?",
            ) from exc
