"""Hostile input never makes a 500: deep JSON, broken URLs, huge cursors, odd signatures,
unusual images, large webhook answers and cut-off bodies each get a documented answer.

Each finding is a regular test; the Hypothesis fuzzers at the end throw generated input at
the same endpoints (through the TestClient, which raises on any unhandled error).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from castframe.api.generate import MAX_JSON_DEPTH, json_too_deep
from castframe.jobs.ledger import MAX_ENTRY_ID
from castframe.media.fetch import FetchError, FetchPolicy, check_url_syntax, fetch
from castframe.media.images import decode_image
from castframe.webhooks import sender as sender_mod
from tests.conftest import Api, body_for, open_api
from tests.e2e.conftest import Castframe
from tests.support.http import LoopbackServer, Reply
from tests.support.images import astronaut, data_uri, jpeg_bytes, png_bytes
from tests.support.polling import wait_until

GOOD_URL = "http://127.0.0.1:9/a.png"
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def post_json(api: Api, path: str, raw: bytes | str, key: str) -> Any:
    return api.client.post(
        path, content=raw, headers={"X-API-Key": key, "Content-Type": "application/json"}
    )


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    if field is not None:
        assert field in body["details"], body


# 1. JSON nesting -------------------------------------------------------------------------

ROUTES = ["/v2/images/generate", "/v2/characters"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000,  # unterminated as well
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    ],
    ids=["arrays", "objects", "unterminated", "one-too-deep"],
)
def test_json_nested_too_deep_is_invalid_json(api_sqlite: Api, path: str, raw: bytes) -> None:
    response = post_json(api_sqlite, path, raw, api_sqlite.key())
    assert_error(response, 400, "invalid_json")
    assert f"deeper than {MAX_JSON_DEPTH}" in response.json()["error"]


@pytest.mark.parametrize("path", ROUTES)
def test_json_at_the_depth_limit_is_parsed(api_sqlite: Api, path: str) -> None:
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    raw = f'{{"name": {nested}, "prompt": {nested}}}'
    response = post_json(api_sqlite, path, raw, api_sqlite.key())
    assert_error(response, 400, "validation_error")  # parsed: a field of the wrong type


def test_brackets_inside_strings_do_not_count(api_sqlite: Api) -> None:
    prompt = "[{" * 500 + '\\"[' * 100
    response = api_sqlite.generate(api_sqlite.key(), body_for(GOOD_URL, prompt=prompt[:1900]))
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b"[]" * 1000, False),
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b'["' + b"[" * 1000 + b'"]', False),
        (b'["\\"' + b"[" * 1000 + b'"]', False),
        (b'["\\\\"' + b"[" * 1000, True),  # an escaped backslash ends the string
        (b"[" * 65 + b'"' + b'\\"' * 100_000 + b"\\", True),  # unterminated, trailing \
    ],
)
def test_depth_scan(raw: bytes, deep: bool) -> None:
    started = time.monotonic()
    assert json_too_deep(raw) is deep
    assert time.monotonic() - started < 2


# 2, 3. URLs ------------------------------------------------------------------------------

BAD_URLS = {
    "open-bracket": "http://[",
    "unclosed-ipv6": "http://[::1",
    "junk-after-ipv6": "http://[::1]x/a.png",
    "ipvfuture": "http://[v1.x]/a.png",
    "ipv6-zone": "http://[fe80::1%25eth0]/a.png",
    "control-char": "http://localhost:9/x\u0001.png",
    "tab": "http://local\thost:9/x.png",
    "newline": "http://localhost:9/x\n.png",
    "space": "http://localhost:9/x y.png",
    "del": "http://localhost:9/x\x7f.png",
    "c1-control": "http://localhost:9/x\u0085.png",
    "zero-width-space": "http://exam\u200bple.com/x.png",
    "huge-host": "http://" + "a" * 70_000 + "/x.png",
    "long-url": "http://example.com/" + "a" * 2100,
    "host-over-253": "http://" + ("a" * 50 + ".") * 5 + "com/x.png",
    "label-over-63": "http://" + "a" * 64 + ".com/x.png",
    "empty-label": "http://a..b/x.png",
    "forbidden-host-char": "http://exa<mple.com/x.png",
    "percent-in-host": "http://exa%41mple.com/x.png",
    "port-out-of-range": "http://example.com:99999/x.png",
    "port-zero": "http://example.com:0/x.png",
    "port-not-a-number": "http://example.com:8x/x.png",
    "empty-userinfo": "http://@example.com/x.png",
}
GOOD_URLS = [
    "https://example.com/a.png",
    "http://example.com:8080/a%20b.png?x=1#frag",
    "http://[2001:db8::1]:8080/x.png",
    "http://\u2603.net/x.png",
    "http://ex_ample.com./x.png",
    "http://127.0.0.1:9/\u00e9t\u00e9.png",
]


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_malformed_urls_are_refused_without_dns(url: str) -> None:
    with pytest.raises(FetchError) as info:
        check_url_syntax(url, allow_private=True)
    assert info.value.code == "url_not_allowed"
    with pytest.raises(FetchError) as fetched:
        fetch(url, FetchPolicy(allow_private=True, connect_timeout=1, read_timeout=1))
    assert fetched.value.code == "url_not_allowed"


def test_nul_in_a_url_is_refused_without_dns() -> None:
    with pytest.raises(FetchError) as info:
        check_url_syntax("http://localhost:9/x\u0000.png", allow_private=True)
    assert info.value.code == "url_not_allowed"


@pytest.mark.parametrize("url", GOOD_URLS)
def test_well_formed_urls_pass(url: str) -> None:
    check_url_syntax(url, allow_private=True)


def url_fields(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(route, field path, body) for every place a client can send this URL."""
    return [
        (
            "/v2/images/generate",
            "ideogramParams.character_reference_image",
            body_for(url),
        ),
        (
            "/v2/images/generate",
            "ideogramParams.style_reference_images.1",
            body_for(GOOD_URL, style_reference_images=[GOOD_URL, url]),
        ),
        ("/v2/images/generate", "webhookUrl", body_for(GOOD_URL, top={"webhookUrl": url})),
        ("/v2/characters", "image", {"name": "x", "image": url}),
    ]


@pytest.mark.parametrize("name", BAD_URLS)
def test_malformed_urls_are_a_400_naming_the_field(api_sqlite: Api, name: str) -> None:
    key = api_sqlite.key()
    for path, field, body in url_fields(BAD_URLS[name]):
        response = api_sqlite.client.post(path, json=body, headers={"X-API-Key": key})
        if field == "webhookUrl" and len(BAD_URLS[name]) > 2048:
            assert_error(response, 400, "validation_error", field)  # the schema's max length
        else:
            assert_error(response, 400, "url_not_allowed", field)


def test_nul_in_a_url_is_a_400_naming_the_field(api: Api) -> None:
    key = api.key()
    for path, field, body in url_fields("http://localhost:9/x\u0000.png"):
        response = api.client.post(path, json=body, headers={"X-API-Key": key})
        assert_error(response, 400, "validation_error", field)


# Found by the fuzzers below: text PostgreSQL cannot store ----------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(body_for(GOOD_URL, prompt="a\u0000b")),
        json.dumps(body_for(GOOD_URL, prompt="a\ud800b")),  # dumped as a lone \ud800 escape
        json.dumps(body_for(GOOD_URL, prompt="a\udc00b")),
    ],
    ids=["nul", "lone-high-surrogate", "lone-low-surrogate"],
)
def test_unstorable_text_is_a_400_naming_the_field(api: Api, raw: str) -> None:
    response = post_json(api, "/v2/images/generate", raw, api.key())
    assert_error(response, 400, "validation_error", "prompt")
    character = post_json(api, "/v2/characters", raw.replace('"prompt"', '"name"'), api.key())
    assert_error(character, 400, "validation_error", "name")


def test_a_lone_surrogate_in_a_key_is_named_escaped(api_sqlite: Api) -> None:
    body = body_for(GOOD_URL)
    body["prompt"] = [{"\ud800": None}]  # found by test_fuzz_json_shapes: a 500 rendering it
    response = post_json(api_sqlite, "/v2/images/generate", json.dumps(body), api_sqlite.key())
    assert_error(response, 400, "validation_error", "prompt.0.\\ud800")


def test_paired_surrogates_and_unicode_prompts_are_accepted(api: Api) -> None:
    raw = json.dumps(body_for(GOOD_URL, prompt="smile \U0001f600 \u00e9\u4e2d"))
    assert "\\ud83d\\ude00" in raw
    key = api.key()
    response = post_json(api, "/v2/images/generate", raw, key)
    assert response.status_code == 202, response.text
    job = api.get_job(key, response.json()["jobId"])
    assert job["input"]["prompt"] == "smile \U0001f600 \u00e9\u4e2d"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/jobs?model=%00",
        "/v2/jobs?status=%00",
        "/v2/characters/%00",
        "/v2/characters/a%00b",
        "/v2/jobs/%00",
        "/v2/account/usage?from=%00",
    ],
)
def test_nul_in_path_or_query_is_invalid_request(api: Api, path: str) -> None:
    assert_error(api.client.get(path, headers={"X-API-Key": api.key()}), 400, "invalid_request")


# 4. Cursors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    ["99999999999999999999999", "9223372036854775808", str(MAX_ENTRY_ID + 1), "0", "-1", "x"],
)
def test_ledger_cursor_out_of_range_is_invalid_request(api: Api, cursor: str) -> None:
    response = api.client.get(
        "/v2/account/ledger", params={"cursor": cursor}, headers={"X-API-Key": api.key()}
    )
    assert_error(response, 400, "invalid_request", "cursor")


def test_ledger_cursor_at_the_top_of_the_range_lists_everything(api: Api) -> None:
    response = api.client.get(
        "/v2/account/ledger", params={"cursor": MAX_ENTRY_ID}, headers={"X-API-Key": api.key()}
    )
    assert response.status_code == 200, response.text
    assert [entry["kind"] for entry in response.json()["entries"]] == ["topup"]


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        b64("1.0|\u0000"),
        b64("nan|0b7a5a4e-0d6c-4a43-9d5f-1c3f2b8c9e10"),
        b64("inf|0b7a5a4e-0d6c-4a43-9d5f-1c3f2b8c9e10"),
        b64("1.0|not-a-job"),
        b64("1e999|x"),
        "%%%",
        "\u00e9",
    ],
)
def test_malformed_job_cursor_is_invalid_request(api: Api, cursor: str) -> None:
    response = api.client.get(
        "/v2/jobs", params={"cursor": cursor}, headers={"X-API-Key": api.key()}
    )
    assert_error(response, 400, "invalid_request", "cursor")


# 5. Signed file URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires", "signature", "status", "code"),
    [
        ("1", "\u00e9" * 64, 403, "invalid_signature"),
        ("1", "\u2603", 403, "invalid_signature"),
        ("1", "ab\u0000cd", 400, "invalid_request"),  # a NUL: refused before any route
        ("1", "", 403, "invalid_signature"),
        ("99999999999999999999999999999", "ab", 403, "invalid_signature"),
        ("-5", "ab", 403, "invalid_signature"),
        ("9" * 5000, "ab", 400, "invalid_request"),
        ("abc", "ab", 400, "invalid_request"),
        ("1.5", "ab", 400, "invalid_request"),
        ("", "ab", 400, "invalid_request"),
    ],
)
def test_bad_file_signatures_and_expiries_are_4xx(
    api_sqlite: Api, expires: str, signature: str, status: int, code: str
) -> None:
    response = api_sqlite.client.get(
        "/v2/files/outputs/x.png", params={"expires": expires, "signature": signature}
    )
    assert_error(response, status, code)


# 6. Images -------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decoded(raw: bytes) -> np.ndarray:
    return decode_image(raw, max_bytes=50_000_000, max_pixels=50_000_000).pixels


def oriented_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(astronaut()[:, :300]), "JPEG", quality=90, exif=exif)


@pytest.mark.parametrize(
    ("orientation", "shape"), [(1, (512, 300)), (3, (512, 300)), (6, (300, 512)), (8, (300, 512))]
)
def test_exif_orientation_is_applied(orientation: int, shape: tuple[int, int]) -> None:
    pixels = decoded(oriented_jpeg(orientation))
    assert pixels.shape == (*shape, 3)
    upright = decoded(jpeg_bytes(astronaut()[:, :300]))
    turned = {
        1: upright,
        3: np.rot90(upright, 2),
        6: np.rot90(upright, -1),
        8: np.rot90(upright, 1),
    }
    assert np.abs(pixels.astype(int) - turned[orientation].astype(int)).mean() < 3


def test_exif_rotated_upload_reports_its_upright_size(api_sqlite: Api) -> None:
    response = api_sqlite.client.post(
        "/v2/uploads",
        files={"file": ("me.jpg", oriented_jpeg(6), "image/jpeg")},
        headers={"X-API-Key": api_sqlite.key()},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["width"], response.json()["height"]) == (512, 300)


def test_broken_exif_is_ignored_not_fatal() -> None:
    raw = encode(Image.fromarray(astronaut()[:64, :64]), "JPEG", exif=b"Exif\x00\x00garbage")
    assert decoded(raw).shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (32768, 128), (65535, 255), (257 * 40, 40)]
)
def test_sixteen_bit_greyscale_is_scaled_not_clipped(value: int, expected: int) -> None:
    image = Image.fromarray(np.full((32, 32), value, np.uint16))
    raw = encode(image)
    assert Image.open(io.BytesIO(raw)).mode == "I;16"
    pixels = decoded(raw)
    assert np.abs(pixels.astype(int) - expected).max() <= 1


def palette_with_transparent_red() -> Image.Image:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 16, 32))
    image.info["transparency"] = 0
    return image


@pytest.mark.parametrize(
    ("raw", "left", "right"),
    [
        (encode(palette_with_transparent_red()), (0, 0, 255), (255, 255, 255)),
        (encode(Image.new("LA", (32, 32), (0, 0))), (255, 255, 255), (255, 255, 255)),
        (encode(Image.new("LA", (32, 32), (0, 255))), (0, 0, 0), (0, 0, 0)),
        (encode(Image.new("RGBA", (32, 32), (255, 0, 0, 0))), (255, 255, 255), (255, 255, 255)),
        (encode(Image.new("RGBA", (32, 32), (0, 0, 0, 128))), (127, 127, 127), (127, 127, 127)),
        (encode(Image.new("L", (32, 32), 7), transparency=7), (255, 255, 255), (255, 255, 255)),
        (
            encode(Image.new("RGBA", (32, 32), (0, 255, 0, 0)), "WEBP", lossless=True),
            (255, 255, 255),
            (255, 255, 255),
        ),
        (encode(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG"), (0, 255, 255), (0, 255, 255)),
        (encode(Image.new("CMYK", (32, 32), (0, 0, 0, 255)), "JPEG"), (0, 0, 0), (0, 0, 0)),
        (encode(Image.new("1", (32, 32), 1)), (255, 255, 255), (255, 255, 255)),
    ],
    ids=[
        "palette-trns",
        "la-clear",
        "la-opaque",
        "rgba-clear",
        "rgba-half",
        "l-trns",
        "webp",
        "cmyk-cyan",
        "cmyk-black",
        "bilevel",
    ],
)
def test_modes_become_rgb_with_alpha_on_white(
    raw: bytes, left: tuple[int, int, int], right: tuple[int, int, int]
) -> None:
    pixels = decoded(raw)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels[16, 4].astype(int) - left).max() <= 2
    assert np.abs(pixels[16, 28].astype(int) - right).max() <= 2


# 7. Webhook answers ----------------------------------------------------------------------


def test_large_answer_is_cut_off_only_when_asked(http_server: LoopbackServer) -> None:
    url = http_server.serve_bytes("/big", b"x" * 1_000_000, "text/plain")
    with pytest.raises(FetchError) as info:
        fetch(url, FetchPolicy(allow_private=True, max_bytes=64 * 1024))
    assert info.value.code == "too_large"
    response = fetch(url, FetchPolicy(allow_private=True, max_bytes=4096, truncate_body=True))
    assert response.status_code == 200
    assert response.body == b"x" * 4096


def deliveries(api: Api, key: str, job_id: str) -> list[dict[str, Any]]:
    response = api.client.get(f"/v2/jobs/{job_id}/webhooks", headers={"X-API-Key": key})
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def test_a_2xx_with_a_megabyte_body_is_delivered(
    api_sqlite: Api, http_server: LoopbackServer, ref: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[int] = []

    def recording_fetch(*args: Any, **kwargs: Any) -> Any:
        response = fetch(*args, **kwargs)
        read.append(len(response.body))
        return response

    monkeypatch.setattr(sender_mod, "fetch", recording_fetch)
    http_server.routes["/hook"] = lambda _r: Reply(200, b"{" + b" " * 1_000_000 + b"}")
    key = api_sqlite.key()
    response = api_sqlite.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/hook")}))
    job_id = response.json()["jobId"]
    wait_until(lambda: api_sqlite.get_job(key, job_id)["webhookStatus"] == "delivered", 30)
    attempts = deliveries(api_sqlite, key, job_id)[0]["attempts"]
    assert [(a["statusCode"], a["error"]) for a in attempts] == [(200, None)]
    assert read == [0]  # the status line is the outcome: the body is not even read


def test_a_slow_answer_is_still_a_timeout(
    api_sqlite: Api, http_server: LoopbackServer, ref: str
) -> None:
    api_sqlite.services.settings.webhook_timeout = 0.5
    http_server.routes["/slow"] = lambda _r: Reply(200, b"late", delay=2.0)
    key = api_sqlite.key()
    response = api_sqlite.generate(key, body_for(ref, top={"webhookUrl": http_server.url("/slow")}))
    job_id = response.json()["jobId"]
    wait_until(
        lambda: (
            deliveries(api_sqlite, key, job_id)
            and deliveries(api_sqlite, key, job_id)[0]["attempts"]
        ),
        30,
    )
    first = deliveries(api_sqlite, key, job_id)[0]["attempts"][0]
    assert first["statusCode"] is None
    assert "timed out" in first["error"]


# 8. Bodies that never arrive -------------------------------------------------------------


@pytest.fixture
def slow_body_server(tmp_path: Path) -> Iterator[tuple[Castframe, str, str]]:
    """A real `castframe serve` with a one-second body-read timeout: (deployment, base, key)."""
    deployment = Castframe(
        tmp_path, f"sqlite:///{tmp_path / 'e2e.db'}", body_read_timeout="1", log_format="json"
    )
    try:
        key = deployment.key()
        _process, base = deployment.server("--no-worker")
        yield deployment, base, key
    finally:
        deployment.close()


def raw_request(base: str, path: str, key: str, length: int, sent: bytes) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
        + sent
    )
    return sock


def read_until_closed(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/v2/images/generate", "/v2/characters"])
def test_a_body_that_stops_coming_times_out_and_closes(
    slow_body_server: tuple[Castframe, str, str], path: str
) -> None:
    _deployment, base, key = slow_body_server
    body = json.dumps(body_for(GOOD_URL)).encode()
    started = time.monotonic()
    with raw_request(base, path, key, len(body), body[: len(body) // 2]) as sock:
        answer = read_until_closed(sock, 10)  # recv returns b"" once the server closes
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"code":"body_timeout"' in answer
    assert b"connection: close" in answer.lower()
    assert 0.8 < elapsed < 5


@pytest.mark.e2e
def test_an_upload_that_stops_coming_times_out(
    slow_body_server: tuple[Castframe, str, str],
) -> None:
    _deployment, base, key = slow_body_server
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /v2/uploads HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
                '--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            ).encode()
            + png_bytes(astronaut()[:32, :32])[:200]
        )
        answer = read_until_closed(sock, 10)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"code":"body_timeout"' in answer


@pytest.mark.e2e
def test_a_client_that_hangs_up_mid_body_is_an_info_line(
    slow_body_server: tuple[Castframe, str, str],
) -> None:
    deployment, base, key = slow_body_server
    body = json.dumps(body_for(data_uri(png_bytes(astronaut())))).encode()
    with raw_request(base, "/v2/images/generate", key, len(body), body[:4096]):
        time.sleep(0.2)  # closed here, long before the one-second timeout
    log_path = deployment.processes[-1].log
    wait_until(lambda: "client disconnected" in log_path.read_text(), 10)
    time.sleep(0.3)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    disconnected = [line for line in lines if "client disconnected" in line["message"]]
    assert [line["level"] for line in disconnected] == ["info"]
    assert not [line for line in lines if line["level"] in ("error", "critical")]
    assert not [line for line in lines if " 500" in line["message"]]


# Fuzzing ---------------------------------------------------------------------------------


@pytest.fixture
def fuzz_api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    """No worker, and room for every accepted job: a fuzzer sees validation, not admission."""
    with open_api(tmp_path, database_url, run_worker=False, max_active_jobs=100_000) as api:
        yield api


def no_500(response: Any) -> int:
    assert response.status_code < 500, response.text
    status: int = response.status_code
    return status


SPECIALS = st.sampled_from('\x00\t\n []{}"\\:/@%?#.')
"""Characters that mean something to URL, JSON and SQL parsers, drawn more often."""
ANY_TEXT = st.lists(
    st.characters(exclude_categories=()) | st.characters(categories=["Cs"]) | SPECIALS,
    max_size=80,
).map("".join)
"""Any code point, lone surrogates and controls included (JSON carries them as escapes)."""
QUERY_TEXT = st.lists(st.characters(codec="utf-8") | SPECIALS, max_size=80).map("".join)
"""Any code point a query string can carry (UTF-8: no lone surrogates)."""


@FUZZ
@given(host=ANY_TEXT, path=ANY_TEXT, scheme=st.sampled_from(["http://", "https://", "", "ftp://"]))
def test_fuzz_urls(fuzz_api: Api, host: str, path: str, scheme: str) -> None:
    key = fuzz_api.key()
    url = f"{scheme}{host}/{path}"
    # The generate fields only: the character route would fetch a valid URL (DNS) at once.
    for route, _field, body in url_fields(url)[:3]:
        raw = json.dumps(body)
        status = no_500(post_json(fuzz_api, route, raw, key))
        assert status in (202, 400), status


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(
    depth=st.integers(1, 3000),
    opener=st.sampled_from(["[", '{"k":']),
    value=JSON_VALUES,
    where=st.sampled_from(["prompt", "ideogramParams", "extra", "whole"]),
)
def test_fuzz_json_shapes(fuzz_api: Api, depth: int, opener: str, value: Any, where: str) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + json.dumps(value) + closer * depth
    body = body_for(GOOD_URL)
    if where == "whole":
        raw = nested
    else:
        target = body if where != "ideogramParams" else body["ideogramParams"]
        target[where if where != "ideogramParams" else "seed"] = "__NESTED__"
        raw = json.dumps(body).replace('"__NESTED__"', nested)
    key = fuzz_api.key()
    offset = {"whole": 0, "prompt": 1, "extra": 1, "ideogramParams": 2}[where]
    for route in ROUTES:
        response = post_json(fuzz_api, route, raw, key)
        assert no_500(response) == 400
        if depth + offset > MAX_JSON_DEPTH:
            assert response.json()["code"] == "invalid_json"


@FUZZ
@given(prompt=ANY_TEXT.filter(bool), negative=st.none() | ANY_TEXT)
def test_fuzz_unicode_prompts(fuzz_api: Api, prompt: str, negative: str | None) -> None:
    extra = {} if negative is None else {"negative_prompt": negative}
    raw = json.dumps(body_for(GOOD_URL, prompt=prompt, **extra))
    key = fuzz_api.key()
    response = post_json(fuzz_api, "/v2/images/generate", raw, key)
    assert no_500(response) in (202, 400)
    if response.status_code == 202:
        sent = json.loads(raw)["prompt"]  # "\\ud800\\udc00" is read as one character
        assert fuzz_api.get_job(key, response.json()["jobId"])["input"]["prompt"] == sent


@FUZZ
@given(cursor=ANY_TEXT, encoded=st.booleans(), model=st.none() | QUERY_TEXT)
def test_fuzz_cursors(fuzz_api: Api, cursor: str, encoded: bool, model: str | None) -> None:
    headers = {"X-API-Key": fuzz_api.key()}
    value = b64(cursor) if encoded else cursor.encode("utf-8", "replace").decode()
    no_500(fuzz_api.client.get("/v2/account/ledger", params={"cursor": value}, headers=headers))
    params = {"cursor": value, **({"model": model} if model is not None else {})}
    no_500(fuzz_api.client.get("/v2/jobs", params=params, headers=headers))


@FUZZ
@given(key=QUERY_TEXT, expires=QUERY_TEXT | st.integers().map(str), signature=QUERY_TEXT)
def test_fuzz_signatures(api_sqlite: Api, key: str, expires: str, signature: str) -> None:
    response = api_sqlite.client.get(
        f"/v2/files/{quote(key)}", params={"expires": expires, "signature": signature}
    )
    assert no_500(response) in (400, 403, 404, 405, 410)
