"""Webhook signatures: Apiframe's and Standard Webhooks', on every delivery.

- Apiframe: ``X-Webhook-Signature: sha256=<hex>``, the HMAC-SHA256 of the raw body keyed by
  the raw 32-byte SHA-256 digest of the API key that submitted the job (what Apiframe's SDK
  ``verifyWebhook`` checks). Castframe stores only that digest (as hex), which is all it needs.
- Standard Webhooks (standardwebhooks.com): ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature`` = space-separated ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``,
  keyed by the base64-decoded part of the account's ``whsec_`` secret; during a rotation both
  the new and the previous secret sign.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

TOLERANCE_SECONDS = 5 * 60


class WebhookVerificationError(ValueError):
    """The delivery's signature or timestamp does not check out."""


def apiframe_signature(body: bytes, key_hash: str) -> str:
    """``sha256=<hex>``; ``key_hash`` is the hex SHA-256 of the API key, the key its bytes."""
    return "sha256=" + hmac.new(bytes.fromhex(key_hash), body, hashlib.sha256).hexdigest()


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    body: bytes,
    message_id: str,
    event: str,
    secrets: Sequence[str],
    key_hash: str | None,
    timestamp: int | None = None,
) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Event": event,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(secret, message_id, timestamp, body) for secret in secrets
        ),
    }
    if key_hash:
        headers["X-Webhook-Signature"] = apiframe_signature(body, key_hash)
    return headers


def verify(
    payload: bytes | str, headers: Mapping[str, str], secret: str, now: float | None = None
) -> None:
    """Verify a Standard Webhooks delivery (for receivers); raises WebhookVerificationError."""
    body = payload.encode() if isinstance(payload, str) else payload
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise WebhookVerificationError("missing or malformed webhook headers") from exc
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise WebhookVerificationError("timestamp outside the tolerance window")
    expected = standard_signature(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookVerificationError("no matching signature")
