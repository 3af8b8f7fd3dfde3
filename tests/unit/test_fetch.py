"""The safe fetcher: address rules (table-driven), redirects, timeouts, byte caps."""

from __future__ import annotations

import ipaddress
import time

import pytest

from castframe.media.fetch import (
    FetchError,
    FetchPolicy,
    address_block_reason,
    check_url_syntax,
    fetch,
    parse_host_literal,
)
from tests.support.http import LoopbackServer, Reply

BLOCKED_URLS = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://127.1/",
    "http://0177.0.0.1/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://198.18.0.1/",
]
REFUSED_SCHEMES = [
    "ftp://example.com/a.png",
    "file:///etc/passwd",
    "gopher://x/",
    "javascript:alert(1)",
    "http://user:pw@example.com/",
    "http:///nohost",
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
def test_private_and_reserved_addresses_are_refused(url: str) -> None:
    with pytest.raises(FetchError) as info:
        fetch(url, FetchPolicy(allow_private=False, connect_timeout=1, read_timeout=1))
    assert info.value.code == "url_not_allowed"
    with pytest.raises(FetchError):
        check_url_syntax(url, allow_private=False)


@pytest.mark.parametrize("url", REFUSED_SCHEMES)
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(FetchError) as info:
        check_url_syntax(url, allow_private=True)
    assert info.value.code == "url_not_allowed"


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("8.8.8.8", False),
        ("1.1.1.1", False),
        ("2606:4700:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("127.0.0.1", True),
        ("169.254.169.254", True),
        ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::", True),
        ("100.100.100.100", True),
    ],
)
def test_address_rules(address: str, blocked: bool) -> None:
    assert (address_block_reason(ipaddress.ip_address(address)) is not None) == blocked


def test_legacy_ipv4_notations_are_understood() -> None:
    assert str(parse_host_literal("0x7f000001")) == "127.0.0.1"
    assert str(parse_host_literal("127.1")) == "127.0.0.1"
    assert parse_host_literal("example.com") is None


@pytest.fixture
def server() -> LoopbackServer:
    instance = LoopbackServer()
    yield instance  # type: ignore[misc]
    instance.close()


def trusted(server: LoopbackServer, **kwargs: object) -> FetchPolicy:
    """Policy that trusts only the literal 127.0.0.1 host (our stand-in for a public host)."""
    return FetchPolicy(
        allow_private=False,
        exempt_hosts=frozenset({"127.0.0.1"}),
        connect_timeout=1,
        read_timeout=1,
        **kwargs,
    )  # type: ignore[arg-type]


def test_redirect_to_a_private_address_is_refused(server: LoopbackServer) -> None:
    server.routes["/to-metadata"] = lambda _r: Reply(
        302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
    )
    server.routes["/to-localhost"] = lambda _r: Reply(
        302, headers={"Location": f"http://localhost:{server.port}/ok"}
    )
    server.routes["/ok"] = lambda _r: Reply(200, b"fine")
    for path in ("/to-metadata", "/to-localhost"):
        with pytest.raises(FetchError) as info:
            fetch(server.url(path), trusted(server))
        assert info.value.code == "url_not_allowed"
    assert server.received("/ok") == []


def test_redirects_are_followed_up_to_three_times(server: LoopbackServer) -> None:
    for hop in range(5):
        server.routes[f"/hop{hop}"] = (
            lambda h: lambda _r: Reply(302, headers={"Location": f"/hop{h + 1}"})
        )(hop)
    server.routes["/hop5"] = lambda _r: Reply(200, b"end")
    server.routes["/short"] = lambda _r: Reply(302, headers={"Location": "/hop3"})
    assert fetch(server.url("/short"), trusted(server)).body == b"end"
    with pytest.raises(FetchError) as info:
        fetch(server.url("/hop0"), trusted(server))
    assert "redirects" in info.value.message


def test_no_redirect_following_when_disabled(server: LoopbackServer) -> None:
    server.routes["/r"] = lambda _r: Reply(302, headers={"Location": "/x"})
    response = fetch(server.url("/r"), trusted(server, follow_redirects=False))
    assert response.status_code == 302


def test_slow_server_times_out(server: LoopbackServer) -> None:
    server.routes["/slow"] = lambda _r: Reply(200, b"late", delay=3)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch(server.url("/slow"), trusted(server))
    assert info.value.code == "fetch_failed"
    assert time.monotonic() - started < 2.5


def test_byte_cap_stops_large_bodies(server: LoopbackServer) -> None:
    server.routes["/big"] = lambda _r: Reply(200, b"x" * 5000)
    with pytest.raises(FetchError) as info:
        fetch(server.url("/big"), trusted(server, max_bytes=1000))
    assert info.value.code == "too_large"


def test_connection_is_pinned_and_host_header_kept(server: LoopbackServer) -> None:
    server.routes["/echo"] = lambda r: Reply(200, r.headers.get("host", "").encode())
    response = fetch(server.url("/echo"), trusted(server))
    assert response.body.decode() == f"127.0.0.1:{server.port}"


def test_unresolvable_host_is_a_fetch_failure() -> None:
    with pytest.raises(FetchError) as info:
        fetch("http://no-such-host.invalid/a.png", FetchPolicy(connect_timeout=1))
    assert info.value.code == "fetch_failed"
