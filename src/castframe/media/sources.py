"""Image sources, resolved one way for submissions, saved characters and the worker.

A client names an image by an http(s) URL, a ``data:image/...;base64,`` URI, one of this
server's upload URLs, or ``upload://<id>``. ``classify`` (pure, at submission) says which, and
refuses a URL that may not be fetched; ``ImageReader.read`` turns a source into a decoded image,
fetching only real outside URLs (uploads come from storage through the caller's ``uploads``
function). Every failure is one ``SourceError`` whose ``code`` is documented both as an API
error code and as a job error code, so each caller only says where it happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from castframe.media.fetch import FetchError, FetchPolicy, check_url_syntax, fetch
from castframe.media.images import DecodedImage, ImageRejected, decode_image, parse_data_uri
from castframe.media.signing import own_file

if TYPE_CHECKING:
    from castframe.config import Settings

UPLOAD_SCHEME = "upload://"
UPLOADS_PREFIX = "uploads/"
"""Storage keys of uploads start with this (``uploads/<account>/<id>.<ext>``)."""


class SourceError(Exception):
    """Why an image source cannot be used. ``code``: invalid_image, image_too_large,
    url_not_allowed, upload_not_found, upload_expired or reference_fetch_failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Source:
    kind: str
    """``data``, ``upload`` (value: the upload id, account-bound), ``signed`` (value: the
    storage key of a file behind one of this server's signed URLs) or ``url``."""
    value: str


def classify(
    source: str, signing_key: bytes, allow_private: bool, exempt_hosts: frozenset[str]
) -> Source:
    """What a client's image source is. This server's upload URLs are recognised by their
    signature and read from storage, never fetched; like Apiframe's upload URLs they are
    public URLs, usable by whoever holds one (``upload://id`` stays bound to its account). An
    expired one, or an outside URL that may not be fetched, is refused here, before any work
    is done."""
    if source.startswith("data:"):
        return Source("data", source)
    if source.startswith(UPLOAD_SCHEME):
        return Source("upload", source[len(UPLOAD_SCHEME) :])
    found = own_file(source, signing_key)
    if found is not None and found.key.startswith(UPLOADS_PREFIX):
        if found.verdict == "expired":
            raise SourceError(
                "upload_expired", "this upload URL has expired; upload the file again"
            )
        return Source("signed", found.key)
    try:
        check_url_syntax(source, allow_private=allow_private, exempt_hosts=exempt_hosts)
    except FetchError as exc:
        raise SourceError("url_not_allowed", exc.message) from exc
    return Source("url", source)


@dataclass(frozen=True)
class ImageReader:
    """Reads and decodes image sources within the limits."""

    policy: FetchPolicy
    max_bytes: int
    max_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageReader:
        """The operator's limits, and its fetch policy for image downloads."""
        return cls(
            FetchPolicy.from_settings(settings), settings.max_image_bytes, settings.max_image_pixels
        )

    def decode(self, data: bytes) -> DecodedImage:
        try:
            return decode_image(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        except ImageRejected as exc:
            code = "image_too_large" if exc.code == "image_too_large" else "invalid_image"
            raise SourceError(code, str(exc)) from exc

    def read(
        self,
        source: Source,
        uploads: Callable[[str], bytes],
        stored: Callable[[str], bytes] | None = None,
    ) -> DecodedImage:
        """The decoded image; ``uploads(id)`` returns an upload's bytes and ``stored(key)`` a
        signed URL's file (either raises SourceError ``upload_not_found``)."""
        if source.kind == "data":
            try:
                return self.decode(parse_data_uri(source.value))
            except ImageRejected as exc:
                raise SourceError("invalid_image", str(exc)) from exc
        if source.kind == "upload":
            return self.decode(uploads(source.value))
        if source.kind == "signed":
            if stored is None:
                raise SourceError("upload_not_found", "this upload URL cannot be read here")
            return self.decode(stored(source.value))
        return self.decode(self._fetch(source.value))

    def _fetch(self, url: str) -> bytes:
        try:
            response = fetch(url, self.policy, headers={"Accept": "image/*"})
        except FetchError as exc:
            code = {"url_not_allowed": "url_not_allowed", "too_large": "image_too_large"}.get(
                exc.code, "reference_fetch_failed"
            )
            raise SourceError(code, exc.message) from exc
        if response.status_code != 200:
            raise SourceError(
                "reference_fetch_failed", f"the URL answered HTTP {response.status_code}"
            )
        return response.body


def upload_id_of(key: str) -> str:
    """The upload id in an upload's storage key (``uploads/<account>/<id>.<ext>``)."""
    return key.rsplit("/", 1)[-1].split(".", 1)[0]


def account_of(key: str) -> str | None:
    """The account in an upload's storage key, or None for another kind of key."""
    parts = key.split("/")
    return parts[1] if len(parts) == 3 and key.startswith(UPLOADS_PREFIX) else None
