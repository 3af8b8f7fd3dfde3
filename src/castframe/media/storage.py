"""Where output images and uploads live. Local directory by default.

A storage maps a key (``outputs/<day>/<job>-a<attempt>-<n>-<seed>.png``) to bytes and hands out a URL
a client can fetch for a limited time. ``LocalStorage`` serves its files through the API's
signed ``/v2/files/...`` route.

Every backend fails the same two ways, whatever its own errors look like, so the API and the
worker need to know no backend: ``StorageFull`` (no space or quota left; a 507, or a job
retried later) and ``StorageUnavailable`` (the backend cannot be read or written: I/O errors,
permissions, a read-only volume, S3 answering 5xx or not at all; a 503). Their messages name
the kind of failure (an errno name, an S3 status and code), never a path, a bucket or a
credential: they end up in API answers and job errors. The backend's own exception stays
chained (``__cause__``) for the logs. A key that is not there is ``FileNotFoundError`` from
``get`` on every backend (what readers of uploads expect), ``False`` from ``exists``, and no
error for ``delete``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Protocol

from castframe.config import Settings
from castframe.media.signing import signed_url

log = logging.getLogger("castframe.storage")


class StorageError(Exception):
    """The storage backend failed; ``code`` is the API error code it answers with."""

    code: ClassVar[str] = "storage_unavailable"


class StorageFull(StorageError):
    """No space (or quota) left on the backend: retrying helps only once someone frees some."""

    code: ClassVar[str] = "storage_full"


class StorageUnavailable(StorageError):
    """The backend cannot be read or written right now (I/O error, permissions, read-only,
    unreachable, 5xx): worth retrying later."""

    code: ClassVar[str] = "storage_unavailable"


FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Errors that mean "no room": the disk, the user's quota, or the largest file allowed."""
MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})


def storage_error(exc: OSError, doing: str) -> StorageError:
    """The StorageError for an OSError of a local file operation, with a message that names
    the errno (``ENOSPC``) and what was being done, never the path ``exc`` carries."""
    name = errno.errorcode.get(exc.errno or 0, "unknown error")
    if exc.errno in FULL_ERRNOS:
        return StorageFull(f"storage is full: could not {doing} ({name})")
    return StorageUnavailable(f"storage is unavailable: could not {doing} ({name})")


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` whole or not at all; StorageError if the backend fails."""
        ...

    def get(self, key: str) -> bytes:
        """The key's bytes; FileNotFoundError if it is not there, StorageError if the backend
        fails."""
        ...

    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None:
        """Remove the key's file or object; a key that is not there is not an error."""
        ...

    def url(self, key: str, ttl: int) -> str: ...


def put_all(storage: Storage, files: Sequence[tuple[str, bytes, str]]) -> None:
    """Store every (key, data, content type) or none: if one fails, those already stored are
    removed (best effort) before its StorageError is raised, so a job that could store only
    some of its images leaves none behind."""
    stored: list[str] = []
    try:
        for key, data, content_type in files:
            storage.put(key, data, content_type)
            stored.append(key)
    except StorageError:
        discard(storage, stored)
        raise


def discard(storage: Storage, keys: Sequence[str]) -> None:
    """Delete ``keys``, ignoring failures: cleaning up after a failure must not hide it (a
    file left behind is an orphan, not an error anyone can act on)."""
    for key in keys:
        try:
            storage.delete(key)
        except (StorageError, ValueError) as exc:
            log.warning("could not remove %s after a failed write: %s", key, exc)


class LocalStorage:
    """Files under ``root``; writes are atomic (temp file + rename) so readers never see halves.

    A write that fails at any step (creating the temp file, writing it, syncing it, renaming
    it) removes its temp file before raising, so a full disk leaves no ``.tmp-*`` behind.
    Writes are fsync'ed, the file before its rename and the folder after it: a job's
    COMPLETED row is committed (and made durable by the database) right after its outputs
    are stored, so without the syncs a power cut could leave a finished, charged job whose
    images are empty or missing. Measured (``benchmarks/storage_fsync.py``, same run): about
    +5 ms per 1024x1024 image (put 4 -> 9 ms, 1-3% of encoding plus storing it) and +1 ms per
    16x16 one, next to seconds of generation per image, so it stays on. ``fsync=False`` is
    for benchmarks that want the disk out of the picture.
    """

    def __init__(self, root: Path, base_url: str, secret: bytes, fsync: bool = True) -> None:
        self.root = root.resolve()
        self.base_url = base_url
        self.secret = secret
        self.fsync = fsync

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
        renamed = False
        try:
            try:
                _write_new(tmp, data, self.fsync)
            except FileNotFoundError:  # the key's first file in its folder: only then mkdir
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_new(tmp, data, self.fsync)
            os.replace(tmp, path)
            renamed = True
            if self.fsync:
                _sync_folder(path.parent)
        except BaseException as exc:
            # Whatever failed, nothing of this write stays: not the temp file, and not the
            # renamed file whose folder could not be synced (the caller was told it failed).
            _remove_quietly(path if renamed else tmp)
            if isinstance(exc, OSError):
                raise storage_error(exc, "write a file") from exc
            raise

    def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except OSError as exc:
            if exc.errno in MISSING_ERRNOS:
                raise FileNotFoundError(errno.ENOENT, "no stored file for this key") from None
            raise storage_error(exc, "read a file") from exc

    def exists(self, key: str) -> bool:
        try:
            return self.path_for(key).is_file()
        except ValueError:
            return False
        except OSError as exc:  # is_file() answers False for a missing file on its own
            raise storage_error(exc, "look up a file") from exc

    def stat(self, key: str) -> os.stat_result | None:
        """The file's ``os.stat`` (None if it is not there), for serving it: one system call
        whose failure is a StorageError here rather than an error inside the response."""
        try:
            return os.stat(self.path_for(key))
        except ValueError:
            return None
        except OSError as exc:
            if exc.errno in MISSING_ERRNOS:
                return None
            raise storage_error(exc, "look up a file") from exc

    def delete(self, key: str) -> None:
        try:
            self.path_for(key).unlink(missing_ok=True)
        except NotADirectoryError:
            return
        except OSError as exc:
            raise storage_error(exc, "delete a file") from exc

    def url(self, key: str, ttl: int) -> str:
        return signed_url(self.base_url, self.secret, key, ttl)


def _write_new(path: Path, data: bytes, fsync: bool) -> None:
    """Write a file that must not exist yet (``FileNotFoundError`` if its folder is missing),
    through ``os.write`` until every byte is in (a short write is not an error)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so the rename that put a file in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Remove a temp file after a failed write (it may never have been created)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


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
