"""Expiring signed URLs for stored files (HMAC-SHA256 over path and expiry)."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote


def signature(secret: bytes, key: str, expires: int) -> str:
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_url(base_url: str, secret: bytes, key: str, ttl: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl)
    sig = signature(secret, key, expires)
    return f"{base_url}/v2/files/{quote(key)}?expires={expires}&signature={sig}"


def check_signature(
    secret: bytes, key: str, expires: int, sig: str, now: float | None = None
) -> str:
    """'ok', 'invalid' or 'expired'. The signature is checked first so expiry leaks nothing."""
    if not hmac.compare_digest(signature(secret, key, expires), sig):
        return "invalid"
    if expires < (now if now is not None else time.time()):
        return "expired"
    return "ok"
