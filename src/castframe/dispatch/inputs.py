"""Loading a job's (or a saved character's) images: media/sources.py's one resolver, with
uploads read from this server's storage and a cache of decoded uploads bounded in bytes
(castframe/bytecache.py; CASTFRAME_INPUT_CACHE_BYTES)."""

from __future__ import annotations

from dataclasses import dataclass, field

from castframe.bytecache import ByteLRU, nbytes_of
from castframe.config import Settings
from castframe.errors import JobFailure
from castframe.jobs.uploads import Owner, get_upload
from castframe.media.images import DecodedImage, downscale
from castframe.media.sources import ImageReader, SourceError, classify
from castframe.media.storage import Storage, StorageError
from castframe.store.db import Database


@dataclass(frozen=True)
class Loaded:
    """A decoded image and, for an upload, its storage key (where a reference's descriptor
    sidecar is kept: dispatch/character_faces.py)."""

    image: DecodedImage
    storage_key: str | None = None


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

    def load(
        self, owner: Owner, source: str, what: str, max_side: int | None = None
    ) -> DecodedImage:
        """The decoded image, or SourceError (its message names ``what``)."""
        return self.load_source(owner, source, what, max_side).image

    def load_source(
        self, owner: Owner, source: str, what: str, max_side: int | None = None
    ) -> Loaded:
        """``load``, with the upload's storage key when the source is an upload."""
        settings = self.settings
        try:
            found = classify(
                source, settings.signing_key, settings.allow_private_urls, settings.trusted_host_set
            )
        except SourceError as exc:
            raise SourceError(exc.code, f"{what}: {exc.message}") from exc
        cache_key = (
            f"{owner[0]}:{owner[1]}:{max_side or 0}:{found.value}"
            if found.kind == "upload"
            else None
        )
        if cache_key and (cached := self._cache.get(cache_key)) is not None:
            return cached
        keys: list[str] = []

        def upload_bytes(upload_id: str) -> bytes:
            data, key = self._upload(owner, upload_id)
            keys.append(key)
            return data

        try:
            image = self._reader.read(found, upload_bytes)
        except SourceError as exc:
            raise SourceError(exc.code, f"{what}: {exc.message}") from exc
        if max_side:
            image = downscale(image, max_side)
        loaded = Loaded(image, keys[0] if keys else None)
        if cache_key:
            self._cache.put(cache_key, loaded)
        return loaded

    def load_for_job(
        self, owner: Owner, source: str, what: str, max_side: int | None = None
    ) -> DecodedImage:
        """``load`` for the worker: a failure is the job's ``JobFailure``. An image over the
        limits is ``invalid_image`` there (the job error table has no size code of its own)."""
        return self.load_source_for_job(owner, source, what, max_side).image

    def load_source_for_job(
        self, owner: Owner, source: str, what: str, max_side: int | None = None
    ) -> Loaded:
        """``load_source`` with ``load_for_job``'s failures."""
        try:
            return self.load_source(owner, source, what, max_side)
        except SourceError as exc:
            code = "invalid_image" if exc.code == "image_too_large" else exc.code
            raise JobFailure(code, exc.message) from exc

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
