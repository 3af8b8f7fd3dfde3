"""A new user's and operator's first hour (issue 29): offline docs, CORS, /metrics access,
the bind check of `castframe serve`, the `make run` banner, and the CLI's errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from castframe.app import create_app
from castframe.cli import public_bind_problem
from castframe.client import Castframe, CastframeError
from castframe.config import Settings
from castframe.services import Services
from tests.conftest import Api, make_settings, open_api
from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_docs_page_and_its_assets_are_served_locally(api_no_worker: Api) -> None:
    page = api_no_worker.client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets, page.text
    # Nothing from a CDN: every script, style and icon is this server's own.
    assert all(url.startswith("/docs/assets/") for url in assets), assets
    assert "'/openapi.json'" in page.text or '"/openapi.json"' in page.text
    assert '"validatorUrl": null' in page.text  # no badge from validator.swagger.io
    for url in assets:
        response = api_no_worker.client.get(url)
        assert response.status_code == 200, url
    script = api_no_worker.client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in script.text
    assert api_no_worker.client.get("/redoc").status_code == 404  # a CDN page: not offered


def test_cors_is_off_by_default(api_no_worker: Api) -> None:
    preflight = api_no_worker.client.options(
        "/v2/images/generate",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    plain = api_no_worker.client.get("/healthz", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_allows_the_configured_origins_only(tmp_path: Path, sqlite_url: str) -> None:
    with open_api(
        tmp_path,
        sqlite_url,
        run_worker=False,
        cors_origins="https://app.example.com/, https://tools.example.com",
    ) as api:
        key = api.key()
        preflight = api.client.options(
            "/v2/images/generate",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key, content-type, idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert {"x-api-key", "content-type", "idempotency-key"} <= set(allowed.split(", "))
        me = api.client.get(
            "/v2/me", headers={"Origin": "https://tools.example.com", "X-API-Key": key}
        )
        assert me.headers["access-control-allow-origin"] == "https://tools.example.com"
        other = api.client.options(
            "/v2/images/generate",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers


def test_metrics_refuse_remote_clients_without_the_token(api_no_worker: Api) -> None:
    refused = api_no_worker.client.get("/metrics")  # TestClient's address is not loopback
    assert (refused.status_code, refused.json()["code"]) == (403, "metrics_forbidden")
    assert "CASTFRAME_METRICS_TOKEN" in refused.json()["error"]
    api_no_worker.services.settings.metrics_token = "s3cret"
    wrong = api_no_worker.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["code"]) == (403, "metrics_forbidden")
    right = api_no_worker.client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 200
    assert "castframe_queue_depth" in right.text


def test_metrics_answer_loopback_clients(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path / "data", sqlite_url)
    app = create_app(settings, services=Services.build(settings), run_worker=False)
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        with TestClient(app, client=(address, 50000)) as client:
            response = client.get("/metrics")
            assert response.status_code == 200, (address, response.text)
            assert "castframe_queue_depth" in response.text
    with TestClient(app, client=("192.168.1.20", 50000)) as client:
        assert client.get("/metrics").status_code == 403
    settings.metrics_token = "s3cret"  # a token does not lock out the local scraper
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "castframe.internal"])
def test_serve_refuses_a_public_bind_without_a_public_url(host: str) -> None:
    problem = public_bind_problem(Settings(host=host, public_url=""))
    assert problem is not None
    assert "CASTFRAME_PUBLIC_URL" in problem and host in problem
    assert public_bind_problem(Settings(host=host, public_url="https://img.example.com")) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_serve_binds_loopback_without_a_public_url(host: str) -> None:
    assert public_bind_problem(Settings(host=host, public_url="")) is None


def cli(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "castframe.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def clean_env(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTFRAME_")}
    env["CASTFRAME_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_serve_exits_with_the_reason_on_a_public_bind(tmp_path: Path) -> None:
    result = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), env=clean_env(tmp_path))
    assert result.returncode == 2
    assert "CASTFRAME_PUBLIC_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_key_banner_prints_the_accounts_real_balance(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    env["CASTFRAME_DEV_CREDITS"] = "5000"
    first = cli("dev-key", env=env)
    assert first.returncode == 0, first.stderr
    assert "5,000 credits available" in first.stdout
    assert ".venv/bin" in first.stdout  # where `castframe` lives after `make run`
    assert cli("accounts", "topup", "dev", "250", env=env).returncode == 0
    again = cli("dev-key", env=env)
    assert "5,250 credits available" in again.stdout  # the ledger's, not the setting's


def test_cli_names_the_unreachable_server(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli(
        "jobs", "list", "--api-key", "afk_test_x", "--base-url", base, env=clean_env(tmp_path)
    )
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: network_error: cannot reach {base} (")
    assert "--base-url" in result.stderr and "CASTFRAME_BASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    env = clean_env(tmp_path) | {"CASTFRAME_BASE_URL": base, "CASTFRAME_API_KEY": "afk_test_x"}
    generated = cli("generate", "a knight", "--ref", "https://example.com/a.png", env=env)
    assert generated.returncode == 1
    assert generated.stderr.startswith(f"error: network_error: cannot reach {base} (")


def test_cli_asks_for_a_key_by_flag_or_variable(tmp_path: Path) -> None:
    result = cli("jobs", "list", env=clean_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "error: missing_api_key: pass --api-key or set CASTFRAME_API_KEY "
        "(`make run` prints a development key)"
    )


def test_cli_help_names_the_flags_and_their_variables(tmp_path: Path) -> None:
    env = clean_env(tmp_path) | {"COLUMNS": "200"}
    for command in (["generate"], ["jobs", "list"], ["jobs", "show"], ["jobs", "cancel"]):
        text = cli(*command, "--help", env=env).stdout
        for words in ("--api-key", "CASTFRAME_API_KEY", "--base-url", "CASTFRAME_BASE_URL"):
            assert words in text, (command, words)
    assert "--install-completion" in cli("--help", env=env).stdout


def test_sdk_connect_retries_bound_the_attempts_on_a_refused_connection() -> None:
    attempts: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(str(request.url))
        raise httpx.ConnectError("Connection refused", request=request)

    base = "http://127.0.0.1:9"
    with (
        Castframe(
            "afk_test_x", base, connect_retries=0, transport=httpx.MockTransport(refuse)
        ) as cf,
        pytest.raises(CastframeError) as raised,
    ):
        cf.me()
    assert len(attempts) == 1
    assert (raised.value.code, raised.value.message) == (
        "network_error",
        f"cannot reach {base} (Connection refused)",
    )


def test_validation_messages_read_as_plain_words_under_their_field(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    body = {
        "prompt": "   ",
        "model": "ideogram-character",
        "ideogramParams": {"character_reference_image": "https://example.com/a.png"},
    }
    blank = api_no_worker.generate(key, body).json()
    assert blank["code"] == "validation_error"
    assert blank["details"] == {"prompt": ["prompt must not be blank"]}
    assert blank["error"] == "invalid request (prompt must not be blank)"
    assert "Value error" not in str(blank)


def test_a_non_image_upload_says_so_without_library_names(api_no_worker: Api) -> None:
    key = api_no_worker.key()
    response = api_no_worker.client.post(
        "/v2/uploads",
        headers={"X-API-Key": key},
        files={"file": ("notes.txt", b"hello, not a picture", "image/png")},
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_image")
    assert "not a PNG, JPEG or WebP image" in response.json()["error"]
    assert "Error" not in response.text
