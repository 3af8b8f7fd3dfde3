"""Loading a job's (or a saved character's) images: media/sources.py's one resolver, with
uploads read from this server's storage and a small cache of decoded uploads. ``for_job`` is
the one way a job's image fields (named by its catalog model) become an engine's inputs."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from castframe.catalog import ModelSpec
from castframe.config import Settings
from castframe.engines.base import EngineInputs, InputImage
from castframe.errors import JobFailure
from castframe.jobs.record import Job
from castframe.jobs.uploads import Owner, get_upload
from castframe.media.images import DecodedImage, to_gray_mask
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
    """Loads image sources. Uploads are immutable, so decoded uploads are kept in a small LRU:
    repeated references (saved characters, SDK uploads) skip the read and the decode."""

    db: Database
    storage: Storage
    settings: Settings
    cache_size: int = 16
    _reader: ImageReader = field(init=False)
    _cache: OrderedDict[str, Loaded] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._reader = ImageReader.from_settings(self.settings)

    def load(self, owner: Owner, source: str, what: str) -> Loaded:
        """The decoded image (with its upload's storage key when it is an upload), or
        SourceError whose message names ``what``."""
        settings = self.settings
        try:
            found = classify(
                source, settings.signing_key, settings.allow_private_urls, settings.trusted_host_set
            )
        except SourceError as exc:
            raise SourceError(exc.code, f"{what}: {exc.message}") from exc
        cache_key = {
            "upload": f"{owner[0]}:{owner[1]}:{found.value}",
            "signed": f"signed:{found.value}",
        }.get(found.kind)
        if cache_key:
            with self._lock:
                if cache_key in self._cache:
                    self._cache.move_to_end(cache_key)
                    return self._cache[cache_key]
        keys: list[str] = []

        def upload_bytes(upload_id: str) -> bytes:
            data, key = self._upload(owner, upload_id)
            keys.append(key)
            return data

        try:
            image = self._reader.read(found, upload_bytes, self._stored)
        except SourceError as exc:
            raise SourceError(exc.code, f"{what}: {exc.message}") from exc
        stored_key = found.value if found.kind == "signed" else None
        loaded = Loaded(image, keys[0] if keys else stored_key)
        if cache_key:
            with self._lock:
                self._cache[cache_key] = loaded
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return loaded

    def for_job(self, job: Job, spec: ModelSpec) -> JobInputs:
        """Every input image of a job, by the role its model gives each image field: the one
        way a job's params become an engine's named inputs. A failure is the job's
        ``JobFailure`` (an image over the limits is ``invalid_image`` there: the job error
        table has no size code of its own)."""
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
                )
                for index, item in enumerate(sources)
            ]
        return assemble(loaded)

    def _for_job(self, owner: Owner, source: str, what: str) -> Loaded:
        try:
            return self.load(owner, source, what)
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
