"""S3-compatible storage (AWS S3, MinIO, R2, moto...): objects under one bucket and prefix.

Clients download outputs straight from the bucket with presigned GET URLs, so API processes
serve no file bytes. boto3 comes with the ``s3`` extra.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


class S3Storage:
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
    ) -> None:
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
                retries={"max_attempts": 5, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def url(self, key: str, ttl: int) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=ttl
        )
        return url

    def check(self) -> None:
        """Fail fast at start-up if the bucket is unreachable or missing."""
        self.client.head_bucket(Bucket=self.bucket)
