"""Turn a job's image sources (URL, upload reference) into decoded images, or a JobFailure."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from castframe.config import Settings
from castframe.errors import JobFailure
from castframe.jobs.uploads import UPLOAD_SCHEME, get_upload
from castframe.media.fetch import FetchError, FetchPolicy, fetch
from castframe.media.images import DecodedImage, ImageRejected, decode_image
from castframe.media.storage import Storage
from castframe.store.db import Database


@dataclass
class InputLoader:
    """Loads job inputs. Uploads are immutable, so decoded uploads are kept in a small LRU:
    repeated references (saved characters, SDK uploads) skip the read and the decode."""

    db: Database
    storage: Storage
    settings: Settings
    cache_size: int = 16
    _cache: OrderedDict[str, DecodedImage] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def policy(self) -> FetchPolicy:
        return FetchPolicy(
            allow_private=self.settings.allow_private_urls,
            read_timeout=self.settings.fetch_timeout,
            total_timeout=self.settings.fetch_timeout * 3,
            max_bytes=self.settings.max_image_bytes,
            exempt_hosts=self.settings.trusted_host_set,
        )

    def load(self, account_id: str, source: str, what: str) -> DecodedImage:
        cache_key = f"{account_id}:{source}" if source.startswith(UPLOAD_SCHEME) else None
        if cache_key:
            with self._lock:
                if cache_key in self._cache:
                    self._cache.move_to_end(cache_key)
                    return self._cache[cache_key]
        image = self._decode(account_id, source, what)
        if cache_key:
            with self._lock:
                self._cache[cache_key] = image
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return image

    def _decode(self, account_id: str, source: str, what: str) -> DecodedImage:
        data = self._bytes(account_id, source, what)
        try:
            return decode_image(
                data,
                max_bytes=self.settings.max_image_bytes,
                max_pixels=self.settings.max_image_pixels,
            )
        except ImageRejected as exc:
            raise JobFailure("invalid_image", f"{what}: {exc}") from exc

    def _bytes(self, account_id: str, source: str, what: str) -> bytes:
        if source.startswith(UPLOAD_SCHEME):
            upload_id = source[len(UPLOAD_SCHEME) :]
            with self.db.read() as conn:
                row = get_upload(conn, account_id, upload_id)
            if row is None:
                raise JobFailure("upload_not_found", f"{what}: upload {upload_id} is gone")
            try:
                return self.storage.get(row["storage_key"])
            except Exception as exc:  # missing file or object: storage not shared?
                raise JobFailure(
                    "upload_not_found",
                    f"{what}: the stored file of {upload_id} cannot be read "
                    f"({type(exc).__name__}); is storage shared between "
                    "API and worker machines?",
                ) from exc
        try:
            response = fetch(source, self.policy, headers={"Accept": "image/*"})
        except FetchError as exc:
            if exc.code == "url_not_allowed":
                raise JobFailure("url_not_allowed", f"{what}: {exc.message}") from exc
            if exc.code == "too_large":
                raise JobFailure("invalid_image", f"{what}: {exc.message}") from exc
            raise JobFailure("reference_fetch_failed", f"{what}: {exc.message}") from exc
        if response.status_code != 200:
            raise JobFailure(
                "reference_fetch_failed", f"{what}: the URL answered HTTP {response.status_code}"
            )
        return response.body
