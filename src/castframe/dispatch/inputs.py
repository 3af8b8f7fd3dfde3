"""Loading a job's (or a saved character's) images: media/sources.py's one resolver, with
uploads read from this server's storage and a small cache of decoded uploads."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from castframe.config import Settings
from castframe.errors import JobFailure
from castframe.jobs.uploads import Owner, get_upload
from castframe.media.images import DecodedImage
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

    def load(self, owner: Owner, source: str, what: str) -> DecodedImage:
        """The decoded image, or SourceError (its message names ``what``)."""
        return self.load_source(owner, source, what).image

    def load_source(self, owner: Owner, source: str, what: str) -> Loaded:
        """``load``, with the upload's storage key when the source is an upload."""
        settings = self.settings
        try:
            found = classify(
                source, settings.signing_key, settings.allow_private_urls, settings.trusted_host_set
            )
        except SourceError as exc:
            raise SourceError(exc.code, f"{what}: {exc.message}") from exc
        cache_key = f"{owner[0]}:{owner[1]}:{found.value}" if found.kind == "upload" else None
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
            image = self._reader.read(found, upload_bytes)
        except SourceError as exc:
            raise SourceError(exc.code, f"{what}: {exc.message}") from exc
        loaded = Loaded(image, keys[0] if keys else None)
        if cache_key:
            with self._lock:
                self._cache[cache_key] = loaded
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return loaded

    def load_for_job(self, owner: Owner, source: str, what: str) -> DecodedImage:
        """``load`` for the worker: a failure is the job's ``JobFailure``. An image over the
        limits is ``invalid_image`` there (the job error table has no size code of its own)."""
        return self.load_source_for_job(owner, source, what).image

    def load_source_for_job(self, owner: Owner, source: str, what: str) -> Loaded:
        """``load_source`` with ``load_for_job``'s failures."""
        try:
            return self.load_source(owner, source, what)
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
