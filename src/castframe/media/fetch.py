"""The one safe way out: every outbound URL (input images, webhooks) goes through here.

Rules, checked on the first URL and again on every redirect:
- well formed: at most 2048 characters, no control characters or spaces, a host DNS can
  carry (or a bracketed IPv6 literal) and a port of 1-65535;
- only ``http`` and ``https``, no user:password part;
- the host is resolved once, every address it resolves to must be public (no private,
  loopback, link-local, CGNAT, multicast, reserved, unspecified or cloud-metadata ranges, in
  IPv4, IPv6 or IPv4-mapped IPv6), and the connection is pinned to that checked address
  (the URL is rewritten to the IP; ``Host`` and TLS SNI keep the name), so a DNS answer that
  changes between check and connect (rebinding) cannot reach a private address;
- at most ``max_redirects`` redirects, connect/read timeouts and a byte cap;
- one wall-clock deadline (``total_timeout``) over the whole exchange, redirects included:
  connect, status line, headers and body. httpx's read timeout applies per ``recv()``, so a
  host trickling one header byte a second would never trip it; the deadline is enforced from
  outside the socket (media/deadline.py: a watchdog shuts the connection down).

``allow_private`` lifts only the address rule, for local development and tests.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import time
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from castframe.media.deadline import Deadline

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EXTRA_BLOCKED = [
    ipaddress.ip_network("100.64.0.0/10"),  # CGNAT (shared address space)
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64 can embed private IPv4
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
]

if TYPE_CHECKING:
    from castframe.config import Settings

# Said with every private-address refusal: the operator's way out, for local development.
PRIVATE_HINT = (
    " (private addresses are refused; for local development set "
    "CASTFRAME_ALLOW_PRIVATE_URLS=1, or name the host in CASTFRAME_TRUSTED_HOSTS)"
)


class FetchError(Exception):
    """Why a URL was not fetched. ``code``: url_not_allowed, fetch_failed or too_large."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class FetchPolicy:
    allow_private: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    follow_redirects: bool = True
    exempt_hosts: frozenset[str] = frozenset()
    """Host names (as written in URLs) the operator trusts even on private addresses."""
    truncate_body: bool = False
    """Keep only the first ``max_bytes`` of the answer and stop reading, instead of failing
    with too_large."""
    read_body: bool = True
    """False: the answer ends with its status line and headers (the body is left unread and
    the connection closed): for webhooks, whose receiver's status is all that counts, so a
    2xx is a delivery whatever its body does."""

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> FetchPolicy:
        """The operator's policy for image downloads; ``overrides`` adapt it to another use
        (webhooks: their own timeouts, small answers, no redirects)."""
        values: dict[str, Any] = {
            "allow_private": settings.allow_private_urls,
            "read_timeout": settings.fetch_timeout,
            "total_timeout": settings.fetch_deadline,
            "max_bytes": settings.max_image_bytes,
            "exempt_hosts": settings.trusted_host_set,
        }
        return cls(**(values | overrides))


@dataclass
class FetchResponse:
    status_code: int
    headers: httpx.Headers
    body: bytes
    url: str
    elapsed_ms: float = 0.0
    history: list[str] = field(default_factory=list)


def address_block_reason(address: IPAddress) -> str | None:
    """Why an address must not be contacted, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            inner = address_block_reason(mapped)
            return f"maps to {mapped}: {inner}" if inner else None
    checks = (
        ("loopback", address.is_loopback),
        ("private", address.is_private),
        ("link-local (cloud metadata)", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
    )
    for reason, hit in checks:
        if hit:
            return reason
    for network in _EXTRA_BLOCKED:
        if address.version == network.version and address in network:
            return f"reserved range {network}"
    if not address.is_global:
        return "not a global address"
    return None


def parse_host_literal(host: str) -> IPAddress | None:
    """An IP written in any form a resolver accepts (``0x7f000001``, ``127.1``) or None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


MAX_URL_LENGTH = 2048
"""Longest URL accepted (as ``webhookUrl``'s schema, and what browsers and CDNs reliably take)."""
MAX_HOST_LENGTH = 253
"""Longest host name DNS can carry (RFC 1035), in its ASCII (IDNA) form."""
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
"""Controls, invisible format characters, lone surrogates and every kind of space."""
_FORBIDDEN_HOST_CHARACTERS = frozenset('<>[]\\^|%"{}`')
"""Characters no host name may contain (WHATWG's forbidden host code points, and ``%``:
a percent-encoded host means something else to each parser)."""
_BRACKETED_HOST = re.compile(r"^\[([^\[\]]*)\](?::[^:]*)?$")


def check_url_syntax(
    url: str, *, allow_private: bool, exempt_hosts: frozenset[str] = frozenset()
) -> None:
    """Cheap checks without DNS, for submission time: the URL is complete and well formed
    (length, characters, host, port), http(s), without credentials, and not a literal private
    address. Raises only ``FetchError`` (url_not_allowed), so that whatever a client sends is a
    400 naming its field here, rather than a job that fails later or a 500 from a parser."""
    check_url_form(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(
            "url_not_allowed", f"only http and https URLs are allowed, not {url[:40]!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise FetchError("url_not_allowed", "URLs with credentials are not allowed")
    host = parts.hostname
    if not host:
        raise FetchError("url_not_allowed", "the URL has no host")
    check_host(parts.netloc, host)
    if parts.port == 0:
        raise FetchError("url_not_allowed", "the URL's port must be 1-65535")
    canonical = canonical_host(host)
    if allow_private or host in exempt_hosts or canonical in exempt_hosts:
        return
    if canonical == "localhost" or canonical.endswith(".localhost"):
        raise FetchError("url_not_allowed", "localhost is not allowed" + PRIVATE_HINT)
    literal = parse_host_literal(canonical)
    if literal is not None and (reason := address_block_reason(literal)):
        raise FetchError("url_not_allowed", f"the address {literal} is {reason}{PRIVATE_HINT}")


def canonical_host(host: str) -> str:
    """The host as a resolver will see it: IDNA (NFKC and case folding, and the ideographic
    and fullwidth full stops as dots), lower case, without the root's trailing dot. Circled
    letters spelling localhost, fullwidth digits spelling 127.0.0.1, ``127\u30020\u30020\u30021``
    and ``localhost.`` are localhost and 127.0.0.1 here, so the submission checks refuse them as
    they refuse the plain spellings. (``check_host`` has already checked that it encodes.)"""
    if not host.startswith("["):
        with contextlib.suppress(UnicodeError):
            host = ascii_host(host)
    return host.lower().rstrip(".")


def check_url_form(url: str) -> None:
    """The URL's length and characters, then that Python can split it and read its port
    (``urlsplit`` raises ValueError for ``http://[`` and silently drops tabs and newlines, so
    the characters are checked on the string as sent)."""
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(
            "url_not_allowed", f"the URL is {len(url)} characters; the limit is {MAX_URL_LENGTH}"
        )
    if not (url.isascii() and url.isprintable() and " " not in url):
        for position, char in enumerate(url):
            if char == " " or unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
                raise FetchError(
                    "url_not_allowed",
                    f"the URL contains a control character or space ({char!r} at {position})",
                )
    try:
        parts = urlsplit(url)
        _ = parts.hostname, parts.port
    except ValueError as exc:
        raise FetchError("url_not_allowed", f"the URL is malformed ({exc})") from exc


def check_host(netloc: str, host: str) -> None:
    """A bracketed IPv6 literal (no zone), or a name DNS can carry: no forbidden characters,
    labels of 1-63 characters once IDNA-encoded, at most 253 in all."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        match = _BRACKETED_HOST.match(hostport)
        literal = match.group(1) if match else ""
        if "%" in literal or not isinstance(parse_host_literal(literal), ipaddress.IPv6Address):
            raise FetchError("url_not_allowed", "the URL's host is not a valid IPv6 address")
        return
    if len(host) > MAX_HOST_LENGTH:
        raise FetchError(
            "url_not_allowed",
            f"the URL's host is {len(host)} characters; the limit is {MAX_HOST_LENGTH}",
        )
    if bad := sorted(_FORBIDDEN_HOST_CHARACTERS.intersection(host)):
        raise FetchError("url_not_allowed", f"the URL's host contains {', '.join(map(repr, bad))}")
    try:
        encoded = ascii_host(host)
    except UnicodeError as exc:
        raise FetchError(
            "url_not_allowed", "the URL's host is not a valid name (a label is empty or too long)"
        ) from exc
    if len(encoded.rstrip(".")) > MAX_HOST_LENGTH:
        raise FetchError("url_not_allowed", f"the URL's host is over {MAX_HOST_LENGTH} characters")


def ascii_host(host: str) -> str:
    """The host as DNS, ``Host`` and SNI carry it: IDNA for a name that is not ASCII (as
    ``getaddrinfo`` encodes it), raising UnicodeError for one that cannot be encoded."""
    if host.isascii():
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        if any(not 0 < len(label) <= 63 for label in labels):
            raise UnicodeError("label empty or too long")
        return host
    return host.encode("idna").decode("ascii")


def resolve_checked(host: str, port: int, *, allow_private: bool) -> IPAddress:
    """Resolve once and return the address to pin, refusing if any answer is not public."""
    literal = parse_host_literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            lookup = exc.strerror or "lookup failed"  # without the resolver's errno
            raise FetchError("fetch_failed", f"cannot resolve {host!r}: {lookup}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise FetchError("fetch_failed", f"{host!r} resolves to no address")
    if not allow_private:
        for address in addresses:
            if reason := address_block_reason(address):
                raise FetchError(
                    "url_not_allowed",
                    f"{host} resolves to {address}, which is {reason}{PRIVATE_HINT}",
                )
    return addresses[0]


def fetch(
    url: str,
    policy: FetchPolicy,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> FetchResponse:
    """Perform one request under ``policy``, within its one deadline (``total_timeout``);
    raises ``FetchError``, never leaks httpx errors."""
    with Deadline(policy.total_timeout) as deadline:
        return _follow(url, policy, method, headers or {}, content, deadline)


def _follow(
    url: str,
    policy: FetchPolicy,
    method: str,
    headers: dict[str, str],
    content: bytes | None,
    deadline: Deadline,
) -> FetchResponse:
    started = time.monotonic()
    history: list[str] = []
    current = url
    for _hop in range(policy.max_redirects + 1):
        response = _one_request(current, policy, method, headers, content, deadline)
        response.history = history
        if not (policy.follow_redirects and response.status_code in (301, 302, 303, 307, 308)):
            response.elapsed_ms = (time.monotonic() - started) * 1000
            return response
        location = response.headers.get("location")
        if not location:
            raise FetchError("fetch_failed", "redirect without a Location header")
        history.append(current)
        try:
            current = urljoin(current, location)
        except ValueError as exc:
            raise FetchError("fetch_failed", "redirect to a malformed Location") from exc
        if response.status_code == 303:
            method, content = "GET", None
    raise FetchError("fetch_failed", f"more than {policy.max_redirects} redirects")


def _one_request(
    url: str,
    policy: FetchPolicy,
    method: str,
    headers: dict[str, str],
    content: bytes | None,
    deadline: Deadline,
) -> FetchResponse:
    check_url_form(url)  # before urlsplit, which raises ValueError for some malformed URLs
    parts = urlsplit(url)
    name = parts.hostname or ""
    allow_private = policy.allow_private or name in policy.exempt_hosts
    check_url_syntax(url, allow_private=allow_private)
    host = ascii_host(name)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve_checked(host, port, allow_private=allow_private)
    pinned_host = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlunsplit((parts.scheme, f"{pinned_host}:{port}", parts.path or "/", parts.query, ""))
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if parts.port is None else f"{shown}:{parts.port}"
    request_headers = {"User-Agent": "castframe/0.1", **headers, "Host": host_header}
    if deadline.remaining() <= 0:
        raise _deadline_passed(host, policy)
    timeout = httpx.Timeout(
        deadline.clamp(policy.read_timeout), connect=deadline.clamp(policy.connect_timeout)
    )
    extensions: dict[str, Any] = dict(deadline.extensions)
    if parts.scheme == "https":
        extensions["sni_hostname"] = host
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            request = client.build_request(
                method, pinned, headers=request_headers, content=content, extensions=extensions
            )
            response = client.send(request, stream=True)
            try:
                body = _read_capped(response, policy, deadline) if policy.read_body else b""
            finally:
                response.close()
            return FetchResponse(response.status_code, response.headers, body, url)
    except FetchError:
        raise
    except httpx.HTTPError as exc:
        if deadline.expired or deadline.remaining() <= 0:
            raise _deadline_passed(host, policy) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise FetchError("fetch_failed", f"timed out talking to {host}") from exc
        raise FetchError("fetch_failed", f"request to {host} failed: {type(exc).__name__}") from exc


def _deadline_passed(host: str, policy: FetchPolicy) -> FetchError:
    return FetchError(
        "fetch_failed",
        f"timed out talking to {host}: no full answer within {policy.total_timeout:g} seconds",
    )


def _read_capped(response: httpx.Response, policy: FetchPolicy, deadline: Deadline) -> bytes:
    """At most ``max_bytes`` of the body: more is too_large, or cut off there (and the rest
    left unread: the connection is closed) with ``truncate_body``."""
    declared = response.headers.get("content-length")
    too_long = declared and declared.isdigit() and int(declared) > policy.max_bytes
    if too_long and not policy.truncate_body:
        raise FetchError("too_large", f"the response is {declared} bytes; limit {policy.max_bytes}")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_raw() if policy.truncate_body else response.iter_bytes():
        if policy.truncate_body and size + len(chunk) >= policy.max_bytes:
            chunks.append(chunk[: policy.max_bytes - size])
            break
        size += len(chunk)
        if size > policy.max_bytes:
            raise FetchError("too_large", f"the response exceeds {policy.max_bytes} bytes")
        if deadline.remaining() <= 0:
            raise FetchError(
                "fetch_failed", f"the transfer took over {policy.total_timeout:g} seconds"
            )
        chunks.append(chunk)
    return b"".join(chunks)
