"""S3-compatible storage (AWS S3, MinIO, R2, moto...): objects under one bucket and prefix.

Clients download outputs straight from the bucket with presigned GET URLs, so API processes
serve no file bytes. boto3 comes with the ``s3`` extra.

botocore's failures are turned into the storage errors of media/storage.py: an answer that
means "no room" (507 Insufficient Storage, MinIO's ``XMinioStorageFull``, a quota or an
object over the size limit) is ``StorageFull``; any other error answer (5xx after botocore's
own retries, access denied, a missing bucket) and any failure to get an answer (refused,
reset, timed out, no credentials) is ``StorageUnavailable``. Messages carry the HTTP status and
S3's error code, never the endpoint, bucket, key or credentials.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from castframe.media.storage import StorageError, StorageFull, StorageUnavailable

FULL_CODES = frozenset(
    {
        "XMinioStorageFull",
        "XMinioAdminBucketQuotaExceeded",
        "QuotaExceeded",
        "EntityTooLarge",
        "InsufficientStorage",
    }
)
"""S3 error codes that mean there is no room for the object (with HTTP 507, always full)."""
MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class S3Storage:
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        max_attempts: int = 5,
        read_timeout: float = 60.0,
    ) -> None:
        """``max_attempts`` and ``read_timeout`` (seconds a call may wait for an answer) are
        botocore's; a call that runs out of either is StorageUnavailable."""
        import boto3
        from botocore.config import Config

        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"storage URL must look like s3://bucket/prefix, not {url!r}")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(
                signature_version="s3v4",
                retries={"max_attempts": max_attempts, "mode": "standard"},
                read_timeout=read_timeout,
                s3={"addressing_style": "path"},
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )
        except Exception as exc:
            raise s3_error(exc, "write an object") from exc

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = response["Body"].read()
        except Exception as exc:
            if _is_missing(exc):
                raise FileNotFoundError("no stored object for this key") from None
            raise s3_error(exc, "read an object") from exc
        return body

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _is_missing(exc):
                return False
            raise s3_error(exc, "look up an object") from exc
        return True

    def delete(self, key: str) -> None:
        """S3 answers 204 for a key that is not there, so that is no error here either."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _is_missing(exc):
                return
            raise s3_error(exc, "delete an object") from exc

    def url(self, key: str, ttl: int) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=ttl
        )
        return url

    def check(self) -> None:
        """Fail fast at start-up if the bucket is unreachable or missing (botocore's own
        error, bucket and all: this one is for the operator)."""
        self.client.head_bucket(Bucket=self.bucket)


def _answer(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, S3 error code) of an error answer; None if there was no answer."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return None
    response: dict[str, Any] = exc.response or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(response.get("Error", {}).get("Code") or "")
    return status, code


def _is_missing(exc: BaseException) -> bool:
    answer = _answer(exc)
    return answer is not None and (answer[1] in MISSING_CODES or answer == (404, ""))


def s3_error(exc: BaseException, doing: str) -> StorageError:
    """The StorageError for a failed S3 call: full for no-room answers, unavailable for the
    rest. The message shows the status and S3's code (or the failure's class name)."""
    answer = _answer(exc)
    if answer is None:
        return StorageUnavailable(
            f"storage is unavailable: could not {doing} ({type(exc).__name__})"
        )
    status, code = answer
    shown = f"S3 {status} {_UNSAFE.sub('', code)[:64]}".rstrip()
    if status == 507 or code in FULL_CODES:
        return StorageFull(f"storage is full: could not {doing} ({shown})")
    return StorageUnavailable(f"storage is unavailable: could not {doing} ({shown})")
