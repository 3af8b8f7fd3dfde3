"""Where output images and uploads live. Local directory by default.

A storage maps a key (``outputs/<day>/<job>-<n>-<seed>.png``) to bytes and hands out a URL
a client can fetch for a limited time. ``LocalStorage`` serves its files through the API's
signed ``/v2/files/...`` route.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from castframe.config import Settings
from castframe.media.signing import signed_url


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None:
        """Remove the key's file or object; a key that is not there is not an error."""
        ...

    def url(self, key: str, ttl: int) -> str: ...


class LocalStorage:
    """Files under ``root``; writes are atomic (temp file + rename) so readers never see halves."""

    def __init__(self, root: Path, base_url: str, secret: bytes) -> None:
        self.root = root.resolve()
        self.base_url = base_url
        self.secret = secret

    def path_for(self, key: str) -> Path:
        """The file of ``key``; ValueError for a key that could leave the root.

        Checked on the key's text, not by resolving the path (a system call per component
        on every write): no empty, ``.`` or ``..`` segment, no absolute path, no backslash or
        NUL. Links placed inside the root by the operator are theirs to vouch for.
        """
        parts = key.split("/")
        if (
            not key
            or "\\" in key
            or "\x00" in key
            or any(part in ("", ".", "..") for part in parts)
        ):
            raise ValueError("storage key escapes the storage root")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path_for(key)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        try:
            _write_new(tmp, data)
        except FileNotFoundError:  # the key's first file in its folder: only then mkdir
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_new(tmp, data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        return self.path_for(key).read_bytes()

    def exists(self, key: str) -> bool:
        try:
            return self.path_for(key).is_file()
        except ValueError:
            return False

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def url(self, key: str, ttl: int) -> str:
        return signed_url(self.base_url, self.secret, key, ttl)


def _write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet (``FileNotFoundError`` if its folder is missing)."""
    with open(path, "xb") as handle:
        handle.write(data)


def make_storage(settings: Settings) -> Storage:
    """Local files by default; ``CASTFRAME_STORAGE_URL=s3://...`` for S3-compatible storage."""
    url = settings.storage_url
    if url.startswith("s3://"):
        from castframe.media.s3 import S3Storage

        storage = S3Storage(
            url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
        storage.check()
        return storage
    root = Path(url.removeprefix("file://")) if url else settings.outputs_dir
    return LocalStorage(root, settings.resolved_public_url, settings.signing_key)
