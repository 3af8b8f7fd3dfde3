"""Expiring signed URLs for stored files (HMAC-SHA256 over path and expiry)."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

FILES_PATH = "/v2/files/"


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
    if not sig.isascii():
        return "invalid"
    if not hmac.compare_digest(signature(secret, key, expires), sig):
        return "invalid"
    if expires < (now if now is not None else time.time()):
        return "expired"
    return "ok"


@dataclass(frozen=True)
class OwnFile:
    """A URL this server signed: the storage key it names and whether it is still valid."""

    key: str
    verdict: str
    """'ok' or 'expired' (a URL whose signature does not match is not ours)."""


def own_file(url: str, secret: bytes, now: float | None = None) -> OwnFile | None:
    """The stored file behind one of this server's signed URLs, or None for any other URL.

    The host is not compared: the signature proves the URL was made here, whatever name the
    client reached the server by (a proxy, a private address, a public one). So such a URL is
    read from storage, never fetched over the network.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.path.startswith(FILES_PATH):
        return None
    query = parse_qs(parts.query)
    expires, sig = query.get("expires", [""])[0], query.get("signature", [""])[0]
    if not expires.isdigit() or not sig.isascii():
        return None
    key = unquote(parts.path[len(FILES_PATH) :])
    verdict = check_signature(secret, key, int(expires), sig, now)
    return None if verdict == "invalid" else OwnFile(key, verdict)


EXPIRED_PREFIX = "expired/"
"""Signed links of an expired job's outputs name their key under this prefix: the files route
answers them 410 output_expired, whether retention has deleted the file yet or not."""
